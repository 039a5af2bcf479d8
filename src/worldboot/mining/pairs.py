"""Reading ``pairs.jsonl`` (from ``worldboot keyframes``) for annotation: every row checked,
its images found and kept under the data root, and each problem named at its line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from worldboot.data.schema import Problems, iter_jsonl, resolve_under
from worldboot.errors import DataError, resolve_path, unless_loop

#: Fields every pairs row must have.
REQUIRED = ("id", "source", "target")


def read_pairs(
    path: str | os.PathLike[str], problems: Problems, root: str | os.PathLike[str] | None = None
) -> list[dict[str, Any]]:
    """Read ``pairs.jsonl``; image paths become absolute (relative ones: to the file's folder),
    and must stay under ``root`` (default: the file's folder).

    Malformed lines, missing fields, repeated ids and missing images go to ``problems``.
    Each row gets ``_line``, its 1-based line number, for later reports (not written out).

    Raises:
        DataError: When the file does not exist.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder: give its pairs.jsonl")
    if not path.is_file():
        raise unless_loop(path, DataError(f"pairs file not found: {path}"))
    base = resolve_path(path).parent
    root_path = resolve_path(root) if root is not None else base
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for lineno, row in iter_jsonl(path, problems):
        missing = [k for k in REQUIRED if not row.get(k)]
        if missing:
            problems.add(path, lineno, f"missing field: {', '.join(missing)}")
            continue
        row["id"] = str(row["id"])
        if row["id"] in seen:
            problems.add(path, lineno, f"duplicate id: {row['id']}")
            continue
        bad = False
        for key in ("source", "target"):
            try:
                image = resolve_under(root_path, str(base / str(row[key])), shown=str(row[key]))
            except DataError as err:  # it escapes the data root, or runs into a symbolic link loop
                problems.add(path, lineno, f"{key} image {err}")
                bad = True
                break
            if not image.is_file():
                problems.add(path, lineno, f"image not found: {image}")
                bad = True
                break
            row[key] = str(image)
        if bad:
            continue
        seen.add(row["id"])
        row["_line"] = lineno
        rows.append(row)
    return rows
