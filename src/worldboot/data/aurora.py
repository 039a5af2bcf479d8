"""Loaders for AURORA's JSON files: the benchmark (``test.json``) and the training sets
(``data/TASK/train.json``).

Both are a JSON list of entries whose image paths are relative to the AURORA repository root:

* bench: ``{input, output?, instruction|prompt, task}`` plus ``id`` (something), ``caption``
  (whatsup), ``mask`` (magicbrush), ``pos``/``neg`` (alternative instructions). Only
  magicbrush, ag, something, whatsup and kubric have an ``output``; clevr, emu and epic have
  none (they are generation-only).
* train: ``{instruction|prompt, input, output}``; magicbrush adds ``mask`` and ``img_id``.

Problems (a missing field, an empty action, a path escaping the root, a missing or unreadable
image) are recorded with the file and the line the entry starts on; a triplet's id and its
``meta["entry"]`` hold the 1-based index of the entry in the list.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worldboot.data.schema import (
    Problems,
    Triplet,
    action_text_problem,
    image_problem,
    resolve_under,
    wrong_types,
)
from worldboot.errors import DataError, resolve_path, unless_loop

#: Subsets of AURORA-BENCH whose entries have a target image.
BENCH_WITH_TARGET = ("magicbrush", "ag", "something", "whatsup", "kubric")
#: Subsets of AURORA-BENCH without a target (generation only).
BENCH_WITHOUT_TARGET = ("clevr", "emu", "epic")

#: Entry keys that become Triplet fields; every other key is kept in ``meta``.
_CORE_KEYS = {"input", "output", "instruction", "prompt", "task"}


def read_json_list(path: str | os.PathLike[str]) -> list[Any]:
    """Parse a JSON file that must hold a list.

    Raises:
        DataError: Missing file, malformed JSON (with its line), or a top level that is not a list.
    """
    return read_json_entries(path)[0]


def read_json_entries(path: str | os.PathLike[str]) -> tuple[list[Any], list[int]]:
    """Parse a JSON file that must hold a list: its entries, and the 1-based line each starts on.

    The lines are what a problem names, as it does in a JSONL file: an AURORA file is indented,
    so its 36th entry starts on about line 251.

    Raises:
        DataError: Missing file, malformed JSON (with its line), or a top level that is not a list.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder: give the JSON file")
    if not path.is_file():
        raise unless_loop(path, DataError(f"file not found: {path}"))
    try:
        # utf-8-sig: a byte-order mark, as some Windows editors write, is not part of the JSON.
        # Text mode reads \r\n and a lone \r as \n, so lines are counted alike in every file.
        text = path.read_text(encoding="utf-8-sig")
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: malformed JSON: {err.msg}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except (ValueError, RecursionError) as err:  # an integer too long to convert, nesting too deep
        raise DataError(f"{path}: unreadable JSON: {str(err).splitlines()[0] or type(err).__name__}") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of entries, got {type(data).__name__}")
    return data, _entry_lines(text, len(data))


def _entry_lines(text: str, count: int) -> list[int]:
    """The line each of the ``count`` entries of the JSON list ``text`` starts on. The json
    module gives no positions for a parsed value, so the list is walked again with
    ``raw_decode``, which returns where each entry ends (the text is known to parse)."""
    decoder = json.JSONDecoder()
    space = re.compile(r"[ \t\n\r]*")
    lines: list[int] = []
    pos = space.match(text, 0).end() + 1  # past "["
    line, counted = 1, 0
    for _ in range(count):
        pos = space.match(text, pos).end()
        line += text.count("\n", counted, pos)
        counted = pos
        lines.append(line)
        _, pos = decoder.raw_decode(text, pos)
        pos = space.match(text, pos).end() + 1  # past "," (or the closing "]")
    return lines


#: An entry's own fields: paths, the action and the task are text (null counts as absent).
_FIELD_TYPES = {key: ((str, type(None)), "text") for key in ("task", "input", "output", "instruction", "prompt")}


def parse_tasks(tasks: str | Iterable[str] | None) -> set[str] | None:
    """Subset names from a list or a comma-separated string; None (all) when empty."""
    if tasks is None:
        return None
    if isinstance(tasks, str):
        tasks = tasks.split(",")
    out = {t.strip() for t in tasks if t and t.strip()}
    return out or None


@dataclass
class _EntryReader:
    """What every entry of one JSON file is read with: the file (named in its problems), the
    folder its image paths are relative to, whether the images are opened, and the problems."""

    file: Path
    root: Path
    check_images: bool
    problems: Problems

    def triplet(
        self,
        entry: Any,
        index: int,
        line: int,
        subset: str | None = None,
        require_target: bool = False,
        skipped: Counter | None = None,
    ) -> Triplet | None:
        """Entry ``index`` (1-based), which starts on line ``line``, as a triplet of ``subset``
        (default: its ``task``), or None after recording why not; without a target it is
        counted in ``skipped`` and left out when ``require_target``, else kept with
        ``target=None``."""
        file, problems = self.file, self.problems
        if not isinstance(entry, dict):
            problems.add(file, line, f"not an object: {type(entry).__name__}")
            return None
        wrong = wrong_types(entry, _FIELD_TYPES)
        if wrong:
            problems.add(file, line, wrong)
            return None
        task = subset if subset is not None else entry.get("task")
        if not task:
            problems.add(file, line, "missing field: task")
            return None
        task = str(task)
        if not entry.get("input"):
            problems.add(file, line, "missing field: input")
            return None
        # A null instruction next to a prompt is a file that names its action by ``prompt``.
        action = entry.get("instruction") if entry.get("instruction") is not None else entry.get("prompt")
        if action is None:
            problems.add(file, line, "missing field: instruction (or prompt)")
            return None
        action = action.strip()
        bad_action = action_text_problem(action)
        if bad_action:
            problems.add(file, line, bad_action)
            return None
        has_target = bool(entry.get("output"))
        if not has_target and require_target:
            # Not a problem: clevr/emu/epic have no targets by design. Counted, not reported.
            if skipped is not None:
                skipped[task] += 1
            return None
        try:
            source = resolve_under(self.root, str(entry["input"]))
            target = resolve_under(self.root, str(entry["output"])) if has_target else None
        except DataError as err:
            problems.add(file, line, str(err))
            return None
        if self.check_images:
            for role, key, p in (("source", "input", source), ("target", "output", target)):
                bad = image_problem(p, role, str(entry[key])) if p is not None else None
                if bad:
                    problems.add(file, line, bad)
                    return None
        meta = {k: v for k, v in entry.items() if k not in _CORE_KEYS}
        meta["entry"], meta["line"] = index, line  # a later stage's problem names the line
        return Triplet(
            id=f"{task}-{index}",
            subset=task,
            source=str(source),
            action=action,
            target=str(target) if target is not None else None,
            meta=meta,
        )


def load_aurora_bench(
    path: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    tasks: str | Iterable[str] | None = None,
    problems: Problems | None = None,
    require_target: bool = True,
    check_images: bool = True,
    skipped: Counter | None = None,
) -> list[Triplet]:
    """Load AURORA-BENCH ``test.json``.

    Args:
        path: The ``test.json`` file.
        root: The AURORA repository root the image paths are relative to (default: the
            folder of ``test.json``, where the original repository keeps it).
        tasks: Keep only these subsets (a list or a comma-separated string).
        problems: Filled with bad entries (file, the line the entry starts on, reason).
        require_target: Skip entries without ``output`` (counted in ``skipped``, not a
            problem). False keeps them with ``target=None`` (enough for generation).
        check_images: Check that every image exists and parses.
        skipped: Filled with the number of entries without a target, per subset.

    Returns:
        Triplets with ids ``TASK-ENTRY`` (the 1-based entry index), original extra fields
        (``id``, ``caption``, ``mask``...) in ``meta``.

    Raises:
        DataError: A missing or malformed file, or a requested task absent from the file.
    """
    path = Path(path)
    entries, lines = read_json_entries(path)
    root = Path(root) if root is not None else path.parent
    wanted = parse_tasks(tasks)
    problems = problems if problems is not None else Problems()
    if wanted is not None:
        present = {str(e.get("task")) for e in entries if isinstance(e, dict) and e.get("task")}
        absent = sorted(wanted - present)
        if absent:
            raise DataError(
                f"{path}: no entries for task {', '.join(absent)} (tasks in the file: {', '.join(sorted(present))})"
            )
    reader = _EntryReader(path, root, check_images, problems)
    out: list[Triplet] = []
    for index, (entry, line) in enumerate(zip(entries, lines, strict=True), start=1):
        if wanted is not None and isinstance(entry, dict) and str(entry.get("task")) not in wanted:
            continue
        t = reader.triplet(entry, index, line, require_target=require_target, skipped=skipped)
        if t is not None:
            out.append(t)
    return out


def default_train_root(path: str | os.PathLike[str]) -> Path:
    """The repository root of an AURORA ``data/TASK/train.json`` (paths in it start with
    ``data/``); the file's own folder for a file kept elsewhere."""
    path = resolve_path(path)
    if path.parent.parent.name == "data":
        return path.parents[2]
    return path.parent


def load_aurora_train(
    path: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    subset: str | None = None,
    problems: Problems | None = None,
    check_images: bool = True,
) -> list[Triplet]:
    """Load an AURORA training file ``data/TASK/train.json``.

    Args:
        path: The ``train.json`` file.
        root: The AURORA repository root (default: see :func:`default_train_root`).
        subset: The subset name (default: an entry's ``task`` field, else the folder name,
            e.g. ``ag`` for ``data/ag/train.json``).
        problems: Filled with bad entries (file, the line the entry starts on, reason).
        check_images: Check that every image exists and parses.

    Returns:
        Triplets with ids ``SUBSET-ENTRY``; ``mask``, ``img_id`` and other fields in ``meta``.
    """
    path = Path(path)
    entries, lines = read_json_entries(path)
    root = Path(root) if root is not None else default_train_root(path)
    default_subset = subset or resolve_path(path).parent.name
    problems = problems if problems is not None else Problems()
    reader = _EntryReader(path, root, check_images, problems)
    out: list[Triplet] = []
    for index, (entry, line) in enumerate(zip(entries, lines, strict=True), start=1):
        entry_subset = subset
        if entry_subset is None:
            entry_subset = (
                str(entry.get("task") or default_subset) if isinstance(entry, dict) else default_subset
            )
        t = reader.triplet(entry, index, line, subset=entry_subset)
        if t is None:
            continue
        if t.target is None:
            problems.add(path, line, "missing field: output")
            continue
        out.append(t)
    return out
