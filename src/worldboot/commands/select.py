"""``worldboot select``: stratified top-K selection of CDM-annotated pairs (Algorithm 1)."""

from __future__ import annotations

import argparse

from worldboot.commands import HELP_FORMATTER

EXAMPLE = """example:
  worldboot select runs/ucf101/annotated --k 7000 --name ucf101 --out data/synthetic/ucf101

  Pairs are sorted by score; classes (the videos' labels) take turns taking their best pair
  until K are taken or all classes ran out (the paper's Appendix G). Output: SYNTH_DIR/
  synthetic.jsonl (triplets, subset synthetic/NAME, images under SYNTH_DIR/images), stats.md
  and stats.json (as the paper's Table 5), scores_by_class.png (as its Figure 11).
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``select`` subcommand."""
    p = sub.add_parser(
        "select",
        help="select K annotated pairs, class by class, best score first (synthetic triplets)",
        description="Stratified top-K selection of CDM-annotated key-frame pairs into a triplet manifest.",
        epilog=EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    p.add_argument("annotated", metavar="ANNOTATED", help="output folder (or a file) of worldboot annotate")
    p.add_argument("--out", required=True, metavar="SYNTH_DIR", help="output folder")
    p.add_argument("--k", type=int, default=7000, help="triplets to select (default 7000, as in the paper)")
    p.add_argument(
        "--score",
        choices=["mean", "sum"],
        default="mean",
        help=(
            "rank by the action's mean log-likelihood per token (default) or its sum; the sum adds "
            "one negative term per token, so it prefers short, generic actions"
        ),
    )
    p.add_argument("--name", default="videos", help="dataset name: triplets get subset synthetic/NAME (default videos)")
    p.add_argument("--plot-classes", type=int, default=30, help="most classes in the score plot (default 30)")
    p.add_argument(
        "--root",
        default=None,
        help=(
            "folder every image of the annotations must lie under (default: the one worldboot "
            "annotate checked them against, from ANNOTATED/meta.json)"
        ),
    )
    p.add_argument("--strict", action="store_true", help="stop at the first malformed row")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Select and print a summary."""
    from worldboot.mining.select import SelectConfig, select_synthetic
    from worldboot.progress import console as make_console

    cfg = SelectConfig(
        k=args.k, score=args.score, name=args.name, plot_classes=args.plot_classes, strict=args.strict,
        root=args.root,
    )
    summary = select_synthetic(args.annotated, args.out, cfg)
    console = make_console(stderr=True)
    console.print(
        f"selected {summary.selected} of {summary.rows} rows from {summary.classes} classes "
        f"({summary.exhausted} classes taken whole); {summary.problems} rows skipped"
    )
    console.print(f"-> {summary.manifest}, {args.out}/stats.md, {args.out}/scores_by_class.png")
    return 0
