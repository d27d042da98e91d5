"""The packs a server knows: the built-in ones and any a trainer adds, and finding a task in them."""

from __future__ import annotations

from pathlib import Path

from tasks.loader import builtin_pack_paths, load_pack_file
from tasks.model import Pack, Task


class UnknownTask(LookupError):
    pass


class Library:
    def __init__(self, packs: list[Pack]) -> None:
        self.packs = {p.id: p for p in packs}
        if len(self.packs) != len(packs):
            raise ValueError("two packs share an id")

    @classmethod
    def builtin(cls, extra: list[Path] | None = None) -> Library:
        return cls([load_pack_file(p) for p in [*builtin_pack_paths(), *(extra or [])]])

    def find(self, ref: str) -> tuple[Pack, Task]:
        """``pack/task``, or a task id that only one pack has."""
        pack_id, _, task_id = ref.rpartition("/")
        candidates = [self.packs[pack_id]] if pack_id in self.packs else [] if pack_id else list(self.packs.values())
        found = [(p, t) for p in candidates if (t := p.task(task_id)) is not None]
        if len(found) == 1:
            return found[0]
        if not found:
            raise UnknownTask(f"There is no task '{ref}' (known packs: {', '.join(sorted(self.packs)) or 'none'})")
        raise UnknownTask(
            f"'{task_id}' is in several packs; say which: {', '.join(p.id + '/' + task_id for p, _ in found)}"
        )

    def tasks(self) -> list[tuple[Pack, Task]]:
        return [(p, t) for p in self.packs.values() for t in p.tasks]
