"""The trainer console (cohorts, progress, exports, certificates) and the vendor console (sandboxes, request log).

``router`` holds every console page; ``web/routes.py`` includes it.
"""

from __future__ import annotations

from fastapi import APIRouter

from web.console import assets, cohorts, progress, vendor

router = APIRouter()
for part in (assets, cohorts, progress, vendor):
    router.include_router(part.router)
