"""``worldboot data``: inspect trajectory data and convert it to a JSONL manifest.

``worldboot data inspect FILE`` loads any supported format, prints the number of triplets per
subset and every problem with its file and line. ``worldboot data convert FILE --out M.jsonl``
writes the loaded triplets as a manifest that every later stage reads.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from worldboot.commands import HELP_FORMATTER
from worldboot.data.formats import FORMATS, load_any
from worldboot.data.schema import Problems, Triplet
from worldboot.errors import UsageError, resolve_path
from worldboot.run_guards import refuse_overwriting

#: Format names accepted by ``--format``.
INSPECT_EXAMPLE = """examples:
  worldboot data inspect aurora/test.json --task kubric,something
  worldboot data inspect aurora/data/ag/train.json --format aurora-train --root aurora
  worldboot data inspect EPIC_100_train.csv --root videos/ --frames-dir frames/ --strict
  worldboot data inspect manifest.jsonl

exit code: 0 (problems, if any, were skipped and listed), 2 with --strict when there were problems.
"""

CONVERT_EXAMPLE = """examples:
  worldboot data convert aurora/test.json --out aurora/bench.jsonl
  worldboot data convert EPIC_100_train.csv --root videos/ --out epic.jsonl --problems epic-problems.jsonl
"""


def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "path", metavar="FILE", help="AURORA test.json / train.json, EPIC-style CSV or JSONL manifest"
    )
    p.add_argument("--format", choices=FORMATS, default=None, help="the file's format (default: guessed)")
    p.add_argument(
        "--root", default=None, help="folder the paths in FILE are relative to (default: per format)"
    )
    p.add_argument("--task", default=None, help="keep only these subsets, comma-separated")
    p.add_argument("--frames-dir", default=None, help="EPIC: where first/last frames are extracted")
    p.add_argument("--no-image-check", action="store_true", help="do not open every image to check it")
    p.add_argument("--keep-no-target", action="store_true", help="keep triplets without a target image")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``data inspect`` and ``data convert``."""
    p = sub.add_parser(
        "data",
        help="inspect trajectory data and convert it to a JSONL manifest",
        description="Load trajectory triplets from AURORA, EPIC-style CSVs or manifests.",
        epilog=INSPECT_EXAMPLE + "\n" + CONVERT_EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    inspect = dsub.add_parser(
        "inspect",
        help="count triplets per subset and list every problem",
        description="Load a data file, print the triplets per subset and every problem with its line.",
        epilog=INSPECT_EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    _add_source_args(inspect)
    inspect.add_argument("--strict", action="store_true", help="exit 2 when there is any problem")
    inspect.add_argument("--problems", default=None, help="also write the problems as JSONL here")
    inspect.set_defaults(func=run_inspect)
    convert = dsub.add_parser(
        "convert",
        help="write the triplets of a data file as a JSONL manifest",
        description="Load a data file and write its triplets as a JSONL manifest (paths relative to the "
        "manifest's folder when they lie under it, absolute otherwise).",
        epilog=CONVERT_EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    _add_source_args(convert)
    convert.add_argument("--out", required=True, help="the manifest to write (.jsonl)")
    convert.add_argument("--strict", action="store_true", help="stop at the first problem, write nothing")
    convert.add_argument("--problems", default=None, help="write the skipped entries as JSONL here")
    convert.set_defaults(func=run_convert)

    def show_help(args: argparse.Namespace) -> int:
        p.print_help()
        return 0

    p.set_defaults(func=show_help)


def _load(args: argparse.Namespace, problems: Problems, skipped: Counter) -> list[Triplet]:
    return load_any(
        args.path,
        args.format,
        args.root,
        args.task,
        problems,
        frames_dir=args.frames_dir,
        check_images=not args.no_image_check,
        require_target=not args.keep_no_target,
        skipped=skipped,
    )


def _check_output_file(path: str | None, flag: str) -> None:
    """Refuse an output file that cannot be written, before the data is read: found after a
    long load, the problems it was to hold would be lost."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{flag} {path} is a folder: name a file to write")
    above = target.parent
    while not above.exists() and above != above.parent:  # the nearest folder that exists
        above = above.parent
    if not above.is_dir():
        raise UsageError(f"{flag} {path}: {above} is a file, not a folder")


def _print_problems(console, problems: Problems, limit: int | None = None) -> None:
    """Each problem on its line (the first ``limit``, and how many more)."""
    from rich.markup import escape

    console.print(f"[bold]{len(problems)} problem(s), skipped:[/bold]")
    shown = list(problems)[:limit] if limit else list(problems)
    for p in shown:
        console.print(escape(str(p)), soft_wrap=True)
    if len(problems) > len(shown):
        console.print(f"... and {len(problems) - len(shown)} more")


def _table(triplets: list[Triplet], skipped: Counter, title: str):
    from rich.markup import escape
    from rich.table import Table

    loaded = Counter(t.subset for t in triplets)
    with_target = Counter(t.subset for t in triplets if t.target is not None)
    table = Table(title=escape(title))  # a path may hold [brackets], which rich reads as markup
    table.add_column("subset")
    table.add_column("triplets", justify="right")
    table.add_column("with target", justify="right")
    table.add_column("skipped: no target", justify="right")
    for subset in sorted(set(loaded) | set(skipped)):
        table.add_row(escape(subset), str(loaded[subset]), str(with_target[subset]), str(skipped[subset]))
    table.add_row(
        "[bold]total", str(sum(loaded.values())), str(sum(with_target.values())), str(sum(skipped.values()))
    )
    return table


def run_inspect(args: argparse.Namespace) -> int:
    """Print counts and problems; 2 with --strict when there are problems."""

    from worldboot.progress import console as make_console

    refuse_overwriting({args.path: f"the data file {args.path}"}, problems=args.problems)
    _check_output_file(args.problems, "--problems")
    problems, skipped = Problems(), Counter()
    triplets = _load(args, problems, skipped)
    console = make_console(soft_wrap=True)
    console.print(_table(triplets, skipped, str(args.path)))
    if len(problems):
        _print_problems(console, problems)
    else:
        console.print("no problems")
    if args.problems:
        problems.write(args.problems)
    return 2 if args.strict and len(problems) else 0


def run_convert(args: argparse.Namespace) -> int:
    """Write the manifest (and the problems report)."""
    from worldboot.data.schema import write_manifest
    from worldboot.progress import console as make_console

    refuse_overwriting(
        {args.path: f"the data file {args.path}"}, out=args.out, problems=args.problems
    )
    _check_output_file(args.out, "--out")
    _check_output_file(args.problems, "--problems")
    problems, skipped = Problems(strict=args.strict), Counter()
    triplets = _load(args, problems, skipped)
    out = Path(args.out)
    write_manifest(out, triplets)
    if args.problems:
        problems.write(args.problems)
    console = make_console(soft_wrap=True)
    console.print(_table(triplets, skipped, f"{args.path} -> {out}"))
    base = resolve_path(out.parent)
    outside = sum(
        1 for t in triplets for p in (t.source, t.target) if p and base not in resolve_path(p).parents
    )
    if outside:
        console.print(
            f"{outside} image path(s) lie outside {base} and are written absolute: "
            f"read the manifest with --root / (or write it inside the data folder)"
        )
    if len(problems):
        _print_problems(console, problems, limit=20)
        if args.problems:
            console.print(f"all of them in {args.problems}")
    console.print(f"wrote {len(triplets)} triplets to {out}; {len(problems)} problem(s) skipped")
    return 0
