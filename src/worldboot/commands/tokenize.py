"""``worldboot tokenize``: encode triplets once into a pre-tokenised cache for training."""

from __future__ import annotations

import argparse

from worldboot.commands import HELP_FORMATTER, positive_int
from worldboot.data.formats import FORMATS

EXAMPLE = """examples:
  worldboot tokenize manifest.jsonl --backbone models/anole-7b --out cache/aurora
  worldboot tokenize aurora/test.json --task kubric --backbone models/tiny --out cache/kubric --batch-size 32

A killed run resumes: rerun the same command; finished shards are kept.
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``tokenize`` subcommand."""
    p = sub.add_parser(
        "tokenize",
        help="encode triplets into a pre-tokenised cache (VQ codes + recognition weights)",
        description=(
            "Encode every distinct image of the triplets once with the backbone's VQ tokenizer and "
            "store the codes and each triplet's recognition weights (Eq. 2) in safetensors shards. "
            "Triplets without a target image are skipped and counted."
        ),
        epilog=EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    p.add_argument(
        "manifest", metavar="MANIFEST", help="JSONL manifest (or any format `worldboot data` reads)"
    )
    p.add_argument(
        "--backbone", required=True, metavar="MODEL_DIR", help="model directory whose tokenizer to use"
    )
    p.add_argument("--out", required=True, metavar="CACHE", help="the cache folder (resumed if unfinished)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per encoder call (default: 16)")
    p.add_argument("--shard-size", type=positive_int, default=None,
                   help="triplets per shard (default: 1024; a resumed cache keeps its own)")
    p.add_argument("--format", choices=FORMATS, default=None, help="format of MANIFEST (default: guessed)")
    p.add_argument("--root", default=None, help="folder the paths in MANIFEST are relative to")
    p.add_argument("--task", default=None, help="keep only these subsets, comma-separated")
    p.add_argument("--strict", action="store_true", help="stop at the first problem")
    p.add_argument("--dtype", default=None, help="model dtype, e.g. bfloat16 (default: float32)")
    p.add_argument("--device-map", default=None, help="e.g. auto on GPUs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the triplets, build (or resume) the cache, report what was skipped."""
    from collections import Counter

    from worldboot.data.cache import DEFAULT_SHARD_SIZE, PROBLEMS_FILE
    from worldboot.data.formats import load_any
    from worldboot.data.schema import Problems
    from worldboot.data.tokenize import build_cache
    from worldboot.errors import UserError
    from worldboot.models import load_backbone
    from worldboot.progress import console as make_console

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    console = make_console(stderr=True, soft_wrap=True)
    problems, skipped = Problems(strict=args.strict), Counter()
    # Checking images here names the bad entry's line; the cache then only meets readable files.
    triplets = load_any(args.manifest, args.format, args.root, args.task, problems, require_target=False)
    kwargs = {k: v for k, v in (("dtype", args.dtype), ("device_map", args.device_map)) if v is not None}
    backbone = load_backbone(args.backbone, **kwargs)
    cache = build_cache(
        triplets,
        backbone,
        args.out,
        batch_size=args.batch_size,
        shard_size=args.shard_size or DEFAULT_SHARD_SIZE,
        problems=problems,
        skipped=skipped,
    )
    images = sum(int(s["images"]) for s in cache.index["shards"])
    console.print(
        f"cache {args.out}: {len(cache)} triplets, {images} distinct images, L={cache.image_seq_len}"
    )
    if skipped:
        console.print("skipped: " + ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items())))
    if len(problems):
        console.print(f"{len(problems)} problem(s), listed in {args.out}/{PROBLEMS_FILE}:")
        for p in list(problems)[:20]:
            console.print(f"  {p}", markup=False, highlight=False)
        if len(problems) > 20:
            console.print(f"  ... and {len(problems) - 20} more")
    return 0
