"""``worldboot train dynamics|world``: fine-tune the CDM or the CWM with LoRA on accelerate."""

from __future__ import annotations

import argparse

from worldboot.commands import HELP_FORMATTER

EXAMPLES = {
    "dynamics": """examples:
  worldboot train dynamics --config configs/demo/cdm.yaml --base runs/base --cache runs/cache/labelled --out runs/cdm
  worldboot train dynamics --config configs/anole7b/cdm.yaml optim.lr=1e-4 --resume
  accelerate launch --config_file configs/accelerate/zero2.yaml -m worldboot.cli train dynamics \\
      --config configs/anole7b/cdm.yaml
""",
    "world": """examples:
  worldboot train world --config configs/demo/cwm.yaml --base runs/base \\
      --cache runs/cache/labelled --cache runs/cache/synthetic --out runs/cwm loss.weighting=l2
  worldboot train world --config configs/anole7b/cwm.yaml --merge
""",
}

DESCRIPTIONS = {
    "dynamics": "Fine-tune the dynamics model (CDM), p(action | source, target), loss on the action text only.",
    "world": "Fine-tune the world model (CWM), p(target | source, action), loss on the target image tokens "
    "(recognition-weighted with loss.weighting=l2).",
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train`` with its two tasks."""
    p = sub.add_parser(
        "train",
        help="fine-tune the dynamics model (CDM) or the world model (CWM)",
        description="Fine-tune a backbone with LoRA as a dynamics model or a world model.",
        epilog="examples:\n  worldboot train dynamics --help\n  worldboot train world --help\n",
        formatter_class=HELP_FORMATTER,
    )
    tasks = p.add_subparsers(dest="task", metavar="TASK", required=True)
    for task in ("dynamics", "world"):
        t = tasks.add_parser(
            task,
            help=DESCRIPTIONS[task].split(",")[0],
            description=DESCRIPTIONS[task],
            epilog=EXAMPLES[task],
            formatter_class=HELP_FORMATTER,
        )
        t.add_argument("--config", metavar="YAML", help="preset (configs/demo/*.yaml, configs/anole7b/*.yaml)")
        t.add_argument("--base", metavar="DIR", help="model directory to start from (config: base_model)")
        t.add_argument("--cache", metavar="DIR", action="append", default=[],
                       help="a token cache to train on (repeatable; replaces data.sources)")
        t.add_argument("--out", metavar="DIR", help="run directory (config: out)")
        t.add_argument("--resume", nargs="?", const=True, default=False, metavar="CKPT",
                       help="continue from the latest checkpoint in the run directory, or from CKPT")
        t.add_argument("--merge", action="store_true", help="also write base + adapter merged into OUT/merged")
        t.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides, e.g. optim.lr=1e-4")
        t.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Resolve the config and run the recipe."""
    from worldboot.config import load_config
    from worldboot.train.config import TrainConfig
    from worldboot.train.recipes import run_training

    flags = {
        "task": args.task,
        "base_model": args.base or None,
        "out": args.out or None,
        "data.sources": [{"cache": c} for c in args.cache] if args.cache else None,
    }
    cfg = load_config(TrainConfig, args.config, args.overrides, flags=flags)
    result = run_training(cfg, resume=args.resume, merge=args.merge)
    import os

    if os.environ.get("RANK", "0") != "0":  # one summary line, from the main process
        return 0
    print(f"trained {cfg.task} model in {cfg.out}: " + ", ".join(f"{k} {v:.4g}" for k, v in result.items()
                                                                  if isinstance(v, float)))
    return 0
