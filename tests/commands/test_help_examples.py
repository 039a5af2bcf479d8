"""Every example in a ``--help`` text parses as written, and every ``train`` example names the
model it starts from and its output folder (the presets leave both to the command line, so an
example without them stops at once: the anole7b examples did)."""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator

import pytest

from worldboot.cli import build_parser


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def _examples(text: str | None) -> list[str]:
    """The worldboot command lines of an epilog, continuation lines joined, comments and a
    trailing ``&`` dropped; ``--help`` lines and placeholders like ``<command>`` left out."""
    found, current = [], ""
    for raw in (text or "").splitlines():
        current += " " + raw.split(" #")[0].strip()
        if current.endswith("\\"):
            current = current[:-1]
            continue
        line, current = current.strip().rstrip("&").strip(), ""
        match = re.search(r"(?:^|\s)(?:worldboot|-m worldboot\.cli)\s+(.*)$", line)
        if match and not line.startswith("#") and "--help" not in line and "<" not in line:
            found.append(match.group(1))
    return found


EXAMPLES = sorted({ex for p in _parsers(build_parser()) for ex in _examples(p.epilog)})


def test_the_help_texts_have_examples():
    assert len(EXAMPLES) > 50
    assert any(ex.startswith("train world ") and "anole7b" in ex for ex in EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES)
def test_a_help_example_parses_as_written(example):
    # A path computed by the shell ("$(worldboot base path)") is one argument.
    argv = shlex.split(re.sub(r'"\$\([^)]*\)"', "DIR", example))
    args, extra = build_parser().parse_known_args(argv)
    assert all("=" in e and not e.startswith("-") for e in extra), extra
    assert not extra or hasattr(args, "overrides"), f"{argv[0]} takes no KEY=VALUE overrides: {extra}"
    if argv[0] == "train":
        assert args.base and args.out, "a train example must name --base and --out: no preset sets them"
