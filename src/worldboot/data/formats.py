"""Any supported data file to triplets: AURORA-BENCH, AURORA train, EPIC-style CSV, JSONL manifest."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from worldboot.data.schema import Problems, Triplet
from worldboot.errors import DataError, unless_loop

FORMATS = ("aurora-bench", "aurora-train", "epic", "jsonl")


def detect_format(path: str | os.PathLike[str]) -> str:
    """Guess the format of a data file from its name and, for JSON, its first entry.

    Raises:
        DataError: The file is missing or of no known kind.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder: give the data file")
    if not path.is_file():
        raise unless_loop(path, DataError(f"file not found: {path}"))
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return "jsonl"
    if suffix in (".csv", ".tsv"):  # a .tsv is read with tabs (epic._read_rows)
        return "epic"
    if suffix == ".json":
        from worldboot.data.aurora import read_json_list

        entries = read_json_list(path)
        # The benchmark names each entry's task; a train.json (one subset) names none. The
        # majority decides, so that one entry of either kind that is wrong is reported as such
        # (an entry lacking its task, or one naming a task), not the whole file misread.
        dicts = [e for e in entries[:1000] if isinstance(e, dict)]
        naming = sum("task" in e for e in dicts)
        return "aurora-bench" if naming and 2 * naming >= len(dicts) else "aurora-train"
    raise DataError(f"{path}: cannot tell its format from the name; pass --format ({', '.join(FORMATS)})")


def load_any(
    path: str | os.PathLike[str],
    fmt: str | None = None,
    root: str | os.PathLike[str] | None = None,
    tasks: str | list[str] | None = None,
    problems: Problems | None = None,
    frames_dir: str | os.PathLike[str] | None = None,
    check_images: bool = True,
    require_target: bool = True,
    skipped: Counter | None = None,
) -> list[Triplet]:
    """Load triplets from any supported format (see :data:`FORMATS`).

    Args:
        path: The data file.
        fmt: Its format; guessed by :func:`detect_format` when None.
        root: Folder its image/video paths are relative to (each loader has its default).
        tasks: Keep only these subsets (a list or a comma-separated string).
        problems: Filled with bad entries.
        frames_dir: Where EPIC frames are extracted.
        check_images: Check that images exist and parse (EPIC: frames an earlier run extracted).
        require_target: Skip triplets without a target (counted in ``skipped``).
        skipped: Filled with the number of triplets without a target, per subset.
    """
    from worldboot.data.aurora import load_aurora_bench, load_aurora_train, parse_tasks
    from worldboot.data.epic import load_epic_csv
    from worldboot.data.schema import read_manifest

    if root is not None and not Path(root).is_dir():
        # Else every entry would be reported as a missing image, for one mistyped flag.
        raise DataError(f"--root {root} is not a folder" + ("" if Path(root).exists() else " (it does not exist)"))
    fmt = fmt or detect_format(path)
    problems = problems if problems is not None else Problems()
    skipped = skipped if skipped is not None else Counter()
    if fmt == "aurora-bench":
        return load_aurora_bench(
            path,
            root,
            tasks,
            problems,
            require_target=require_target,
            check_images=check_images,
            skipped=skipped,
        )
    if fmt == "aurora-train":
        triplets = load_aurora_train(path, root, problems=problems, check_images=check_images)
    elif fmt == "epic":
        triplets = load_epic_csv(path, root, frames_dir, problems, check_images=check_images)
    elif fmt == "jsonl":
        triplets = read_manifest(path, problems, root, check_images=check_images)
    else:
        raise DataError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    if require_target:
        for t in triplets:
            if t.target is None:
                skipped[t.subset] += 1
        triplets = [t for t in triplets if t.target is not None]
    wanted = parse_tasks(tasks)
    if wanted is not None:
        present = {t.subset for t in triplets} | set(skipped)
        absent = sorted(wanted - present)
        if absent:
            raise DataError(
                f"{path}: no entries for task {', '.join(absent)} (tasks in the file: {', '.join(sorted(present))})"
            )
        triplets = [t for t in triplets if t.subset in wanted]
        for subset in [s for s in skipped if s not in wanted]:  # not asked for: not counted either
            del skipped[subset]
    return triplets
