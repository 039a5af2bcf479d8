"""Reading a study YAML: a loader that records lines, and the types of its keys.

Keys are checked as strictly as every worldboot config (:func:`worldboot.config.from_dict`):
``shuffle_items: "no"`` is refused, not read as true, and a path given as a list says it must
be a path string instead of reporting the folder ``['a']`` as not found.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from worldboot.config import UniqueKeyLoader, from_dict
from worldboot.errors import ConfigError

#: Keys the loader adds to every mapping: the line it starts on, and each key's line.
LINE = "__line__"
KEY_LINES = "__key_lines__"


class LineLoader(UniqueKeyLoader):
    """A YAML loader that records the line of every mapping and of each of its keys, for
    one-line errors, and refuses a key given twice (two ``items:`` would silently drop the first)."""


def _construct_mapping(loader: LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    mapping[LINE] = node.start_mark.line + 1
    lines: dict[Any, int] = {}
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode):
            lines[str(key.value)] = key.start_mark.line + 1
            # And by the key as read, so that a key that is no text (`null:`, `3:`) has its line.
            lines.setdefault(loader.construct_object(key), key.start_mark.line + 1)
    mapping[KEY_LINES] = lines
    return mapping


LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def clean(mapping: dict[str, Any]) -> dict[str, Any]:
    """``mapping`` without the loader's line entries."""
    return {k: v for k, v in mapping.items() if k not in (LINE, KEY_LINES)}


#: ``where``'s key when none is given (None is a key: ``null: x``).
_NO_KEY = object()


def where(file: Path, mapping: Any, key: Any = _NO_KEY) -> str:
    """``FILE:LINE`` of ``key`` in ``mapping`` (of the mapping without a key), or ``FILE``."""
    line = 0
    if isinstance(mapping, dict):
        line = (mapping.get(KEY_LINES) or {}).get(key, 0) if key is not _NO_KEY else 0
        line = line or mapping.get(LINE, 0)
    return f"{file}:{line}" if line else str(file)


@dataclass
class StudyText:
    """The study's keys that hold text or a flag (null for text means: the default)."""

    name: str | None = None
    title: str | None = None
    instructions: str | None = None
    reference: str | None = None
    shuffle_items: bool = False


#: Keys whose value is a path under the study's ``root`` (``root`` itself: under the YAML's folder).
PATH_KEYS = ("root", "manifest")


def path_text(value: Any, place: str, key: str) -> str:
    """``value`` when it is a path string.

    Raises:
        ConfigError: Naming ``place`` (``FILE:LINE``) and ``key``, when it is a list, a
            mapping, a number, a flag or null.
    """
    if isinstance(value, str):
        return value
    shown = clean(value) if isinstance(value, dict) else value
    raise ConfigError(f"{place}: `{key}` must be a path string, got {shown!r}")


def check_study_keys(data: dict[str, Any], file: Path) -> None:
    """Check the types of the study's top-level text, flag and path keys.

    Raises:
        ConfigError: Naming the file, the key's line and the key, for the first wrong type.
    """
    for key in StudyText.__dataclass_fields__:
        if key in data:
            try:
                from_dict(StudyText, {key: clean(data[key]) if isinstance(data[key], dict) else data[key]})
            except ConfigError as err:
                raise ConfigError(f"{where(file, data, key)}: {err}") from None
    for key in PATH_KEYS:
        if key in data:
            path_text(data[key], where(file, data, key), key)
