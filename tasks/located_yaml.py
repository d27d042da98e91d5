"""YAML read through PyYAML's node API, so that every mapping and list remembers the line it came from.

A pack author who mistypes a field should be told the file and line, not a
Python traceback: the loader reports errors against these lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class LocatedDict(dict):
    """A YAML mapping; ``line`` is where it starts, ``key_lines`` where each key is (1-based)."""

    line: int
    key_lines: dict[str, int]


class LocatedList(list):
    """A YAML sequence; ``line`` is where it starts, ``item_lines`` where each item is (1-based)."""

    line: int
    item_lines: list[int]


class YamlSyntaxError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


def load_located(text: str) -> Any:
    """The document's data, with mappings and lists carrying their lines; scalars as YAML's safe types."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise YamlSyntaxError(line, f"{exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(1, str(exc)) from None
    if node is None:
        return None
    return _convert(node, yaml.SafeLoader(""))


def load_located_file(path: Path) -> Any:
    return load_located(path.read_text(encoding="utf-8"))


def _convert(node: yaml.Node, constructor: yaml.SafeLoader) -> Any:
    if isinstance(node, yaml.MappingNode):
        mapping = LocatedDict()
        mapping.line = node.start_mark.line + 1
        mapping.key_lines = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise YamlSyntaxError(key_node.start_mark.line + 1, "merge keys (<<) are not supported in packs")
            key = _convert(key_node, constructor)
            if not isinstance(key, str):
                key = str(key)
            if key in mapping:
                raise YamlSyntaxError(key_node.start_mark.line + 1, f"the key '{key}' appears twice")
            mapping[key] = _convert(value_node, constructor)
            mapping.key_lines[key] = key_node.start_mark.line + 1
        return mapping
    if isinstance(node, yaml.SequenceNode):
        items = LocatedList(_convert(item, constructor) for item in node.value)
        items.line = node.start_mark.line + 1
        items.item_lines = [item.start_mark.line + 1 for item in node.value]
        return items
    return constructor.construct_object(node, deep=True)
