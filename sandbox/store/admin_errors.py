"""Errors of the admin operations (sandboxes, baselines, users, cohorts).

Each carries a message meant for a person and the HTTP status the admin API
answers with; the CLI prints the message as its one line.
"""

from __future__ import annotations


class AdminError(Exception):
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Invalid(AdminError):
    status = 400


class NotFound(AdminError):
    status = 404


class Conflict(AdminError):
    status = 409
