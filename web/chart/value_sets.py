"""The coded pickers' value sets (``value_sets.yaml``): look a code up, or search a set by words."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml


@dataclass(frozen=True)
class Concept:
    system: str
    code: str
    display: str

    def coding(self) -> dict[str, str]:
        return {"system": self.system, "code": self.code, "display": self.display}

    def concept(self) -> dict[str, object]:
        return {"coding": [self.coding()], "text": self.display}


@dataclass(frozen=True)
class ValueSet:
    id: str
    system: str
    concepts: tuple[Concept, ...]

    def find(self, code: str) -> Concept | None:
        return next((c for c in self.concepts if c.code == code), None)

    def search(self, text: str, limit: int = 20) -> list[Concept]:
        """Concepts whose code starts with ``text`` or whose display holds every word of it."""
        words = text.lower().split()
        found = [
            c
            for c in self.concepts
            if not words or c.code.startswith(text.strip()) or all(w in c.display.lower() for w in words)
        ]
        return found[:limit]


@cache
def value_sets() -> dict[str, ValueSet]:
    raw = yaml.safe_load(resources.files("web.chart").joinpath("value_sets.yaml").read_text(encoding="utf-8"))
    return {
        name: ValueSet(name, spec["system"], tuple(Concept(spec["system"], str(c), str(d)) for c, d in spec["codes"]))
        for name, spec in raw.items()
    }


def value_set(name: str) -> ValueSet:
    return value_sets()[name]
