"""The one error type of the FHIR API, and the OperationOutcome it becomes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Issue:
    code: str  # IssueType: invalid, structure, required, value, not-found, conflict, not-supported, ...
    diagnostics: str
    severity: str = "error"
    expression: str | None = None  # FHIRPath of the offending element

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = [self.expression]
        return out


@dataclass
class FhirError(Exception):
    """Raised anywhere below the routes; the app turns it into an OperationOutcome response."""

    status: int
    issues: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, status: int, code: str, diagnostics: str, expression: str | None = None) -> FhirError:
        return cls(status, [Issue(code, diagnostics, expression=expression)])

    def __str__(self) -> str:
        return f"{self.status}: " + "; ".join(i.diagnostics for i in self.issues)

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


def not_found(resource_type: str, resource_id: str) -> FhirError:
    return FhirError.of(404, "not-found", f"{resource_type}/{resource_id} is not known")


def gone(resource_type: str, resource_id: str) -> FhirError:
    return FhirError.of(410, "deleted", f"{resource_type}/{resource_id} has been deleted")
