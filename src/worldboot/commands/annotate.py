"""``worldboot annotate``: the dynamics model writes and scores an action for each key-frame pair."""

from __future__ import annotations

import argparse

from worldboot.commands import HELP_FORMATTER, add_ray_arguments, check_ray_flags, ray_flags, seed_int

EXAMPLE = """example:
  worldboot annotate runs/ucf101/keyframes/pairs.jsonl --cdm runs/cdm --out runs/ucf101/annotated

  Several processes, each on its share of the pairs (same --out):
  worldboot annotate PAIRS --cdm MODEL_DIR --out ANNOTATED --shard 0/2 &
  worldboot annotate PAIRS --cdm MODEL_DIR --out ANNOTATED --shard 1/2
  or: accelerate launch --num_processes 2 -m worldboot.cli annotate PAIRS --cdm MODEL_DIR --out ANNOTATED

  On a Ray cluster (one CDM per actor, one GPU each; the same output as one local run):
  worldboot annotate PAIRS --cdm MODEL_DIR --out ANNOTATED --engine ray --ray-address HEAD:6379 \\
      --actors 8 --gpus-per-actor 1

  Output: ANNOTATED/annotated[.shard-i-of-n].jsonl, one row per pair with action, score_sum
  (log p of the action), score_mean (per token) and n_tokens. A rerun continues where a
  killed run stopped.
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``annotate`` subcommand."""
    p = sub.add_parser(
        "annotate",
        help="annotate key-frame pairs with actions from a dynamics model (CDM)",
        description=(
            "For each (source, target) pair the CDM generates an action (greedy, or sampled) and scores "
            "it with its log-likelihood log p(action | source, target)."
        ),
        epilog=EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    p.add_argument("pairs", metavar="PAIRS", help="pairs.jsonl from worldboot keyframes")
    p.add_argument("--cdm", required=True, metavar="MODEL_DIR", help="the dynamics model's directory")
    p.add_argument("--out", required=True, metavar="ANNOTATED", help="output folder (reused to resume)")
    p.add_argument("--batch-size", type=int, default=8, help="pairs per batch (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=24, help="longest action in tokens (default 24)")
    p.add_argument("--sample", action="store_true", help="sample actions instead of greedy decoding")
    p.add_argument(
        "--temperature", type=float, default=None, help="sampling temperature (with --sample; default 1)"
    )
    p.add_argument("--seed", type=seed_int, default=0, help="base seed for --sample (default 0)")
    p.add_argument("--shard", metavar="I/N", help="annotate only shard I of N (0-based)")
    p.add_argument(
        "--strict", action="store_true", help="stop at the first malformed line or unreadable image"
    )
    add_ray_arguments(p, "pairs")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the CDM, annotate, print a summary."""
    from worldboot.config import load_config, to_dict
    from worldboot.errors import ConfigError
    from worldboot.mining.annotate import AnnotateConfig, annotate_pairs
    from worldboot.models import load_backbone
    from worldboot.progress import console as make_console
    from worldboot.runs import distributed_shard, parse_shard

    if args.temperature is not None and not args.sample:
        raise ConfigError("--temperature applies to sampling: add --sample")
    cfg = AnnotateConfig(
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        sample=args.sample,
        temperature=1.0 if args.temperature is None else args.temperature,
        seed=args.seed,
        shard=args.shard,
        strict=args.strict,
    )
    cfg = load_config(AnnotateConfig, base=to_dict(cfg), flags=ray_flags(args))
    cfg.validate()
    check_ray_flags(args, cfg.engine)
    dist_info = None if args.shard or cfg.engine == "ray" else distributed_shard()
    shard = parse_shard(args.shard) if args.shard else (dist_info[:2] if dist_info else None)
    backbone = None
    if cfg.engine == "local":  # Ray actors load their own copies
        backbone = load_backbone(args.cdm)
    if backbone is not None and dist_info is not None and dist_info[2].type != "cpu":
        backbone.model.to(dist_info[2])  # one GPU per process
    try:
        summary = annotate_pairs(
            args.pairs, backbone, args.out, cfg, shard=shard, progress=args.progress, model_dir=args.cdm
        )
    finally:
        if dist_info is not None:
            import torch.distributed as dist

            # Without this, the other ranks abort at exit under accelerate launch.
            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
    console = make_console(stderr=True)
    where = f" (shard {shard[0]}/{shard[1]}: {summary.shard_pairs} pairs)" if shard else ""
    console.print(
        f"{summary.pairs} pairs{where}: {summary.annotated} annotated now, {summary.done_before} earlier, "
        f"{summary.problems} problems, {summary.empty_actions} empty actions -> {summary.output}"
    )
    return 0
