"""``worldboot figures``: paper figures drawn from run artefacts."""

from __future__ import annotations

import argparse

from worldboot.commands import HELP_FORMATTER, positive_int, seed_int

#: What matplotlib writes, by the file's suffix.
IMAGE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".eps", ".tif", ".tiff", ".webp")

WEIGHTS_EXAMPLE = """examples:
  worldboot figures weights runs/cache/world --out runs/figure3.png
  worldboot figures weights runs/cache/aurora --ids kubric-3 something-12 --out fig3.png
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``figures weights``."""
    p = sub.add_parser(
        "figures",
        help="draw paper figures from run artefacts",
        description="Draw the paper's figures from caches and run directories.",
        epilog="examples:\n  worldboot figures weights --help\n",
        formatter_class=HELP_FORMATTER,
    )
    kinds = p.add_subparsers(dest="figure", metavar="FIGURE", required=True)
    w = kinds.add_parser(
        "weights",
        help="recognition-weight heatmaps over image pairs (Figure 3)",
        description="Source, target and the Eq. 2 recognition weights of pairs from a token cache (Figure 3).",
        epilog=WEIGHTS_EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    w.add_argument("cache", help="token cache directory (worldboot tokenize)")
    w.add_argument("--out", default="figure3_weights.png",
                   help="image to write (default figure3_weights.png); its suffix names the format (PNG when it has none)")
    w.add_argument("--n", type=positive_int, default=6, help="number of pairs, drawn at random with --seed (default 6)")
    w.add_argument("--ids", nargs="+", help="these triplet ids instead")
    w.add_argument("--seed", type=seed_int, default=0, help="seed of the random draw of --n pairs (default 0)")
    w.set_defaults(func=run_weights)


def run_weights(args: argparse.Namespace) -> int:
    """Draw Figure 3."""
    from pathlib import Path

    from worldboot.errors import UsageError
    from worldboot.evaluate.plots import plot_recognition_weights

    out = Path(args.out)
    if not out.suffix:
        out = out.with_suffix(".png")
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise UsageError(f"--out {out}: cannot write {out.suffix} images (use {', '.join(IMAGE_SUFFIXES)})")
    ids = plot_recognition_weights(args.cache, out, n=args.n, ids=args.ids, seed=args.seed)
    print(f"wrote {out} ({len(ids)} pairs)")
    return 0
