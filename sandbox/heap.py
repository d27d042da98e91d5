"""The server process's long-lived heap, kept out of the cyclic garbage collector's way.

What a web process holds once it has started (the imported libraries, the FHIR models, the app and its routes:
some 150,000 objects) lives as long as the process.  Every full collection walked all of it: a page that
allocates much (the trainer's progress matrix, 1,900 cells) sets one off every few requests, and that request
took 60 to 100 ms longer, which was most of the page's 95th percentile.  ``gc.freeze`` moves those objects to
the permanent generation, which collections skip; reference counting still frees what is no longer used.
"""

from __future__ import annotations

import gc

_frozen = False


def freeze_startup_heap() -> None:
    """Collect the startup's garbage, then freeze what is left; once per process.

    Once: frozen objects are never collected as cycles, so a process that makes many apps (a test run) freezes
    only what the first one found, the imports above all, instead of keeping every later app's cycles forever.
    """
    global _frozen
    if _frozen:
        return
    gc.collect()
    gc.freeze()
    _frozen = True
