"""``worldboot evaluate human STUDY``: the paper's Table 6 from a blind study's votes
(the analysis is :mod:`worldboot.study.analysis`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from worldboot.errors import UsageError
from worldboot.runs import write_atomic
from worldboot.study.analysis import analyse_votes, format_markdown

EXAMPLE = """examples:
  worldboot evaluate human configs/web/example_study.yaml
  worldboot evaluate human study.yaml --db votes.sqlite --reference CWM --out reports/human
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``worldboot evaluate human``."""
    p.add_argument("study", metavar="STUDY", help="the study YAML the votes belong to")
    p.add_argument(
        "--db", metavar="SQLITE", help="votes database (default: STUDY.votes.sqlite beside the YAML)"
    )
    p.add_argument(
        "--reference",
        metavar="MODEL",
        help="model the others are tested against (default: the study's `reference`, else its last model)",
    )
    p.add_argument("--alpha", type=float, default=0.05, help="significance level, between 0 and 1 (default: %(default)s)")
    p.add_argument("--out", metavar="DIR", help="also write human_eval.md and human_eval.json there")


def main(args: argparse.Namespace) -> int:
    """Print the table (and write it with ``--out``)."""
    if not 0 < args.alpha < 1:  # also refuses nan
        raise UsageError(f"--alpha must lie between 0 and 1, got {args.alpha}")
    table = analyse_votes(args.db, args.study, args.reference, alpha=args.alpha)
    text = format_markdown(table)
    print(text, end="")
    if args.out:
        out = Path(args.out)
        write_atomic(out / "human_eval.md", text)
        write_atomic(out / "human_eval.json", json.dumps(table.to_json(), indent=2) + "\n")
        print(f"wrote {out / 'human_eval.md'} and {out / 'human_eval.json'}")
    return 0
