"""The resource types the server accepts: every concrete resource fhir.resources' R4B package defines."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import fhir.resources.R4B as r4b
from fhir.resources.R4B import get_fhir_model_class
from fhir_core.fhirabstractmodel import FHIRAbstractModel

_CLASS = re.compile(r"^class (\w+)\((?:domainresource\.DomainResource|resource\.Resource)\):", re.M)


@cache
def resource_types() -> frozenset[str]:
    """Read from the package's sources rather than importing its 150 modules (two seconds) at start-up."""
    found: set[str] = set()
    for source in Path(r4b.__path__[0]).glob("*.py"):
        found.update(_CLASS.findall(source.read_text()))
    return frozenset(found - {"Resource", "DomainResource"})


def is_resource_type(name: str) -> bool:
    return name in resource_types()


@cache
def model_class(resource_type: str) -> type[FHIRAbstractModel]:
    return get_fhir_model_class(resource_type)
