"""The ``worldboot`` command: one subcommand per stage.

Each subcommand lives in its own module under :mod:`worldboot.commands` and exposes
``register(subparsers)``, which adds its parser and sets ``func``. Modules are found by
name, so adding a stage touches no shared file. Heavy imports (torch, transformers) happen
inside the handlers, so ``worldboot --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from worldboot import __version__, commands
from worldboot.errors import UserError
from worldboot.progress import VERBOSE_HELP, quiet_libraries

EPILOG = """examples:
  worldboot demo --out runs/demo                       # the whole method on the embedded world
  worldboot data inspect aurora-bench/test.json        # what a dataset holds, bad entries by line
  worldboot tokenize train.jsonl --backbone MODEL --out runs/cache
  worldboot train dynamics --base MODEL --cache runs/cache --out runs/cdm
  worldboot generate test.jsonl --world runs/cwm --best-of 8 --verifier runs/cdm --out runs/pred
  worldboot evaluate runs/pred --bench test.jsonl --out reports/cwm --judge world
  worldboot info                                       # versions, device, the backbone families
  worldboot base path --preset paper                   # where the embedded world's base model is
  worldboot <command> --help                           # every command has its own examples
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="worldboot",
        description="Bootstrap world models from dynamics models in token-based multimodal models.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"worldboot {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors too")
    parser.add_argument(
        "--verbose", action="store_true", help=f"{VERBOSE_HELP} (anywhere on the line)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=commands.CommandParser)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def subcommand_names(parser: argparse.ArgumentParser | None = None) -> list[list[str]]:
    """Every subcommand path (e.g. ``["data", "inspect"]``), for tests of ``--help``."""
    parser = parser or build_parser()
    paths: list[list[str]] = []

    def walk(p: argparse.ArgumentParser, prefix: list[str]) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    paths.append(prefix + [name])
                    walk(child, prefix + [name])

    walk(parser, [])
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``worldboot`` command.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns:
        The exit code: 0 on success, 2 on a user error.
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # --verbose and --debug may come anywhere (worldboot demo --verbose ...), not only before the command.
    verbose = "--verbose" in argv
    argv = [a for a in argv if a != "--verbose"]
    if "--debug" in argv[1:]:
        argv = ["--debug", *(a for a in argv if a != "--debug")]
    if not verbose:
        quiet_libraries()
    # Dotted overrides (key.sub=value) may follow options even after another positional, which
    # argparse alone cannot parse with subcommands; collect them for commands that take them.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*(args.overrides or []), *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        code = args.func(args)
    except UserError as err:
        if args.debug:
            raise
        print(f"worldboot {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        # A file system refusal on a path the user named (permission denied, a file where a
        # folder is needed, disk full): one line naming the path. --debug shows where.
        if args.debug or not (err.filename or err.strerror):
            raise
        where = f": {err.filename}" + (f" -> {err.filename2}" if err.filename2 else "") if err.filename else ""
        print(f"worldboot {args.command}: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # train refuses to write into a run without --resume (so a typo cannot mix two runs).
        rerun = "the same command with --resume goes on" if args.command == "train" else "a rerun resumes"
        print(f"interrupted; finished outputs are kept and {rerun}", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
