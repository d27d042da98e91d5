"""Logging: plain text for a terminal, or JSON lines (``--log-format json``) for a log pipeline.

Every line logged while a request is being answered carries that request's
id (``X-Request-ID``: the client's if it sent a sane one, else a new one),
so the access line, an error's traceback and the client's report can be
matched up.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
FORMATS = ("text", "json")


def request_id_from(header: str | None) -> str:
    """The client's request id if it is short and plain (it goes into logs), else a new one."""
    if header and _SANE_ID.match(header):
        return header
    return f"{_id_prefix}{next(_id_counter):016x}"


# New request ids: 64 random bits drawn once per process and a counter, as unique as uuid4s were, without the
# system call for 16 random bytes on every request (5% of a read by id's CPU).  Not secrets: they go into logs.
def _new_id_prefix() -> None:
    global _id_prefix, _id_counter
    _id_prefix, _id_counter = os.urandom(8).hex(), itertools.count()


_id_prefix, _id_counter = "", itertools.count()
_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)  # a forked worker must not repeat its parent's ids


class JsonLines(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, any ``extra={...}`` fields."""

    _STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (request_id := REQUEST_ID.get()) is not None:
            line["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in self._STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class _RequestIdText(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id = REQUEST_ID.get()
        return f"{text} [request {request_id}]" if request_id else text


def configure(log_format: str, level: str = "info") -> dict[str, Any]:
    """Set up the root logger and return the matching uvicorn ``log_config`` (its loggers write through ours)."""
    if log_format not in FORMATS:
        raise ValueError(f"the log format must be one of {', '.join(FORMATS)}, not '{log_format}'")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonLines() if log_format == "json" else _RequestIdText("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Alembic's INFO lines describe its own setup (plugins, "non-transactional DDL" on SQLite, where our
    # transaction holds the DDL anyway); sandbox.store.migrations logs what it changed.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))
    # uvicorn's own loggers propagate to the root logger, so they come out in the same format.
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {
            "uvicorn": {"level": level.upper(), "handlers": [], "propagate": True},
            "uvicorn.error": {"level": level.upper(), "handlers": [], "propagate": True},
            "uvicorn.access": {"level": level.upper(), "handlers": [], "propagate": True},
        },
    }
