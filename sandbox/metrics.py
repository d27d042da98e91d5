"""Prometheus metrics: HTTP requests, their latency, the outbox's depth, HL7 v2 messages over MLLP, expired
rows swept.

Requests are labelled by route template (``/fhir/{rtype}/{rid}``), never by
the raw path, so the number of series stays fixed whatever clients send.
Counting costs a few microseconds per request; the outbox depth is measured
only when ``/metrics`` is scraped (three indexed counts).

Several server processes on one host (``serve --workers N``) share
``PROMETHEUS_MULTIPROC_DIR``, set before any of them imports this module, and
``/metrics`` then adds up every process's figures (prometheus_client's
multiprocess mode).  Separate hosts are scraped one by one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from sqlalchemy import func, select

from sandbox.hl7v2 import TRANSLATOR
from sandbox.store.database import Database
from sandbox.store.outbox import lags as outbox_cursor_lags
from sandbox.store.schema import hl7v2_messages

REQUESTS = Counter(
    "ehr_sandbox_http_requests_total",
    "HTTP requests answered, by route template and status",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "ehr_sandbox_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template",
    ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0),
)
MLLP_MESSAGES = Counter(
    "ehr_sandbox_mllp_messages_total",
    "HL7 v2 messages over MLLP, by direction, message type (MSH-9) and acknowledgment code (MSA-1)",
    ["direction", "message_type", "ack_code"],
)
# Counted by the process whose background loop swept: ``serve`` (its /metrics), or ``worker`` (--metrics-port).
SWEPT_ROWS = Counter(
    "ehr_sandbox_swept_rows_total",
    "Expired rows deleted by the background sweep, by table",
    ["table"],
)

_MESSAGE_TYPE = re.compile(r"^[A-Z0-9]{3}(\^[A-Z0-9]{3})?$")
_ACK_CODES = {"AA", "AE", "AR", "CA", "CE", "CR"}


def message_type_label(message: bytes | str) -> str:
    """MSH-9's type and event (``ADT^A01``) for a label; anything that is not one is ``unknown`` (a fuzzer's
    bytes must not mint a new series per message)."""
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    first = text.lstrip("\r\n").split("\r", 1)[0].split("\n", 1)[0]
    if not first.startswith("MSH") or len(first) < 4:
        return "unknown"
    fields = first.split(first[3])
    if len(fields) < 9:
        return "unknown"
    parts = fields[8].split("^")[:2]
    label = "^".join(p for p in parts if p)
    return label if _MESSAGE_TYPE.match(label) else "unknown"


def count_mllp(direction: str, message: bytes | str, ack_code: str | None) -> None:
    code = ack_code if ack_code in _ACK_CODES else ("none" if not ack_code else "other")
    MLLP_MESSAGES.labels(direction, message_type_label(message), code).inc()


class OutboxDepth(Collector):
    """Work waiting after commits, measured at scrape time: the events past each consumer's cursor (the HL7 v2
    translator's, the task re-checks', the subscriptions'), outbound messages not yet delivered."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "ehr_sandbox_outbox_depth", "Outbox work not yet done, by consumer", labels=["consumer"]
        )
        with self.db.read() as conn:
            for consumer, lag in outbox_cursor_lags(conn, [TRANSLATOR]).items():
                gauge.add_metric([consumer], lag)
            pending = conn.execute(
                select(func.count())
                .select_from(hl7v2_messages)
                .where(hl7v2_messages.c.direction == "outbound", hl7v2_messages.c.status == "pending")
            ).scalar_one()
        gauge.add_metric(["hl7v2-deliver"], pending)
        yield gauge


def exposition(db: Database) -> tuple[bytes, str]:
    """The text ``/metrics`` answers with: this process's (or, in multiprocess mode, every process's) counters
    and the outbox depth."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    depth = CollectorRegistry()
    depth.register(OutboxDepth(db))
    return body + generate_latest(depth), CONTENT_TYPE_LATEST
