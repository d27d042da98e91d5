"""Resend and reprocess from the message log: the one implementation behind the HTTP API
(``POST /sandboxes/{id}/hl7v2/messages/{message}/resend`` and ``.../reprocess``) and the vendor console's buttons.

Refusals are ``FhirError``: 404 for a message not in this sandbox's log, 409 for the wrong direction.
"""

from __future__ import annotations

from sqlalchemy import Connection

from sandbox.fhir.outcome import FhirError
from sandbox.hl7v2 import log
from sandbox.hl7v2.inbound import Inbound, Result


def logged(conn: Connection, layer_id: str, message_id: str) -> log.LogEntry:
    """The log entry, or 404."""
    entry = log.get(conn, layer_id, message_id)
    if entry is None:
        raise FhirError.of(404, "not-found", f"No HL7 v2 message '{message_id}' in this sandbox's log")
    return entry


def resend(conn: Connection, layer_id: str, message_id: str) -> log.LogEntry:
    """Queue an outbound message to be sent again now; the entry as it is afterwards."""
    entry = logged(conn, layer_id, message_id)
    if entry.direction != "outbound":
        raise FhirError.of(409, "business-rule", "Only outbound messages are resent; reprocess an inbound one")
    from sandbox.hl7v2.delivery import requeue  # imports the outbound builders: only when resending

    requeue(conn, layer_id, message_id)
    return logged(conn, layer_id, message_id)


def reprocess(inbound: Inbound, sandbox_id: str, layer_id: str, message_id: str) -> Result:
    """Apply a logged inbound message again (even a duplicate control id); its outcome is a new log entry.
    Synchronous, as ``Inbound.handle`` is: call it off the event loop."""
    with inbound.db.read() as conn:
        entry = logged(conn, layer_id, message_id)
    if entry.direction != "inbound":
        raise FhirError.of(409, "business-rule", "Only inbound messages are reprocessed; resend an outbound one")
    return inbound.handle(entry.content, sandbox_id=sandbox_id, force=True)
