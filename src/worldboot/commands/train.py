"""``worldboot train dynamics|world|world-rl|dynamics-rl``: fine-tune the CDM or the CWM with
LoRA on accelerate, or train one against the other's reward (GRPO or DPO)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from worldboot.commands import HELP_FORMATTER

EXAMPLES = {
    "dynamics": """examples:
  worldboot train dynamics --config configs/demo/cdm.yaml --base runs/base --cache runs/cache/labelled --out runs/cdm
  worldboot train dynamics --config configs/demo/cdm.yaml --base runs/base --cache runs/cache/labelled \\
      --out runs/cdm optim.lr=1e-4 --resume     # the same run, resumed from its last checkpoint
  accelerate launch --config_file configs/accelerate/zero2.yaml -m worldboot.cli train dynamics \\
      --config configs/anole7b/cdm.yaml --base /models/anole-7b-hf --cache aurora=runs/cache/aurora-train \\
      --cache epic=runs/cache/epic --out runs/anole7b/cdm
""",
    "world": """examples:
  worldboot train world --config configs/demo/cwm.yaml --base runs/base \\
      --cache runs/cache/labelled --cache runs/cache/synthetic --out runs/cwm loss.weighting=l2
  worldboot train world --config configs/anole7b/cwm.yaml --base /models/anole-7b-hf \\
      --cache aurora=runs/cache/aurora-train --cache moments=runs/cache/moments --out runs/anole7b/cwm --merge
""",
    "world-rl": """examples:
  worldboot train world-rl --config configs/demo/world_rl.yaml --base runs/cwm/merged \\
      --verifier runs/cdm/merged --cache runs/cache/labelled --out runs/cwm-grpo
  worldboot train world-rl --config configs/demo/world_dpo.yaml --base runs/cwm/merged \\
      --verifier runs/cdm/merged --cache runs/cache/labelled --out runs/cwm-dpo
  worldboot generate runs/data/train/manifest.jsonl --world runs/cwm/merged --verifier runs/cdm/merged \\
      --best-of 8 --out runs/pred-train-bo8    # then DPO on those candidates, nothing sampled while training:
  worldboot train world-rl --config configs/demo/world_dpo.yaml --base runs/cwm/merged \\
      --cache runs/cache/labelled --candidates runs/pred-train-bo8 --out runs/cwm-dpo-offline
  accelerate launch --config_file configs/accelerate/zero2.yaml --num_processes 4 -m worldboot.cli \\
      train world-rl --config configs/anole7b/world_rl.yaml --base runs/anole7b/cwm/merged \\
      --verifier runs/anole7b/cdm/merged --cache runs/cache/aurora-train --out runs/anole7b/cwm-grpo --merge
""",
    "dynamics-rl": """examples:
  worldboot train dynamics-rl --config configs/demo/dynamics_rl.yaml --base runs/cdm/merged \\
      --verifier runs/cwm/merged --cache runs/cache/labelled --out runs/cdm-grpo
  accelerate launch --config_file configs/accelerate/zero2.yaml --num_processes 4 -m worldboot.cli \\
      train dynamics-rl --config configs/anole7b/dynamics_rl.yaml --base runs/anole7b/cdm/merged \\
      --verifier runs/anole7b/cwm/merged --cache runs/cache/aurora-train --out runs/anole7b/cdm-grpo --merge
""",
}

DESCRIPTIONS = {
    "dynamics": "Fine-tune the dynamics model (CDM), p(action | source, target), loss on the action text only.",
    "world": "Fine-tune the world model (CWM), p(target | source, action), loss on the target image tokens "
    "(recognition-weighted with loss.weighting=l2).",
    "world-rl": "Train the world model (CWM) against a frozen dynamics model's reward, log p_CDM(action | "
    "source, candidate) per token: GRPO (a group of candidates per prompt, group-normalised advantages, KL "
    "to the starting model) or DPO (the group's best and worst candidate as a pair; or, offline, the pairs of a "
    "'worldboot generate --best-of N --verifier' folder, --candidates). Trains a LoRA adapter; "
    "the reference is the starting model without it. The preset's objective picks its settings: GRPOConfig or "
    "DPOConfig (worldboot.train.rl_config; --print-config shows them).",
    "dynamics-rl": "Train the dynamics model (CDM) against a frozen world model's reward, log p_CWM(target | "
    "source, action text) per target token (the reverse direction, as SWIRL): GRPO or DPO on a group of "
    "sampled action texts per (source, target). Trains a LoRA adapter; the reference is the starting model "
    "without it. The preset's objective picks its settings: GRPOConfig or DPOConfig (worldboot.train.rl_config).",
}


class _Resume(argparse.Action):
    """``--resume [CKPT]``: a ``KEY=VALUE`` word after it that is no existing path is an override
    (``--resume optim.lr=1e-4`` resumes from the latest checkpoint), kept in its place among the
    overrides as ``resume_override`` (index, word) for :func:`run`."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if isinstance(values, str) and "=" in values and not Path(values).exists():
            namespace.resume_override = (len(getattr(namespace, "overrides", None) or []), values)
            values = True
        setattr(namespace, self.dest, values)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train`` with its four tasks."""
    p = sub.add_parser(
        "train",
        help="fine-tune the dynamics model (CDM) or the world model (CWM)",
        description="Fine-tune a backbone with LoRA as a dynamics model or a world model, or train either "
        "against the other's reward.",
        epilog="examples:\n  worldboot train dynamics --help\n  worldboot train world --help\n"
        "  worldboot train world-rl --help\n  worldboot train dynamics-rl --help\n",
        formatter_class=HELP_FORMATTER,
    )
    tasks = p.add_subparsers(dest="task", metavar="TASK", required=True)
    for task in ("dynamics", "world", "world-rl", "dynamics-rl"):
        t = tasks.add_parser(
            task,
            help=DESCRIPTIONS[task].split(",")[0],
            description=DESCRIPTIONS[task],
            epilog=EXAMPLES[task],
            formatter_class=HELP_FORMATTER,
        )
        t.add_argument("--config", metavar="YAML", help="training preset: configs/demo/, configs/anole7b/ or configs/emu3/ "
                       "cdm, cft, cwm, world_rl, world_dpo or dynamics_rl .yaml (as each folder has them)")
        t.add_argument("--base", metavar="DIR", help="model directory to start from (config: base_model)")
        t.add_argument("--cache", metavar="[NAME=]DIR", action="append", default=[],
                       help="a token cache to train on (repeatable). NAME=DIR fills the config's source "
                       "NAME, keeping its caps and repeats; a plain DIR fills the source whose cache or name "
                       "it matches. A cache that fits no source of the config is refused; a config that "
                       "lists no source (data.sources) trains on the caches given")
        t.add_argument("--out", metavar="DIR", help="run directory (config: out)")
        t.add_argument("--resume", nargs="?", const=True, default=False, metavar="CKPT", action=_Resume,
                       help="continue from the latest checkpoint in the run directory, or from CKPT (a "
                       "KEY=VALUE word after --resume is an override, not a CKPT, unless such a folder exists)")
        t.add_argument("--merge", action="store_true", help="also write base + adapter merged into OUT/merged")
        t.add_argument("--print-config", action="store_true",
                       help="print the resolved config as YAML and exit (nothing is trained)")
        if task == "world-rl":
            t.add_argument("--verifier", metavar="DIR", help="the dynamics model that rewards (config: verifier; optional with --candidates)")
            t.add_argument("--objective", choices=("grpo", "dpo"), help="grpo (GRPOConfig) or dpo (DPOConfig): the preset's own objective by default, and it may not be contradicted (config: objective)")
            t.add_argument("--group-size", type=int, metavar="G", help="candidates per prompt (config: group_size)")
            t.add_argument("--candidates", metavar="PRED",
                           help="offline DPO on the scored candidates of a 'worldboot generate --best-of N "
                           "--verifier CDM' folder (config: candidates; with --objective dpo)")
        if task == "dynamics-rl":
            t.add_argument("--verifier", metavar="DIR", help="the world model that rewards (config: verifier)")
            t.add_argument("--objective", choices=("grpo", "dpo"), help="grpo (GRPOConfig) or dpo (DPOConfig): the preset's own objective by default, and it may not be contradicted (config: objective)")
            t.add_argument("--group-size", type=int, metavar="G", help="action texts per prompt (config: group_size)")
        t.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides, e.g. optim.lr=1e-4")
        t.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Resolve the config and run the recipe."""
    import os
    import sys

    from worldboot.config import dump_yaml
    from worldboot.train.config import dedupe_caches
    from worldboot.train.resolve import resolve_train_config

    overrides = list(args.overrides)
    if getattr(args, "resume_override", None):  # the word --resume took: back among the overrides
        at, word = args.resume_override
        overrides.insert(at, word)
    caches, notes = dedupe_caches(args.cache)  # one folder given twice is read once
    if os.environ.get("RANK", "0") == "0":
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    rl = {}
    if args.task in ("world-rl", "dynamics-rl"):
        rl = {"verifier": args.verifier, "objective": args.objective, "group_size": args.group_size,
              "candidates": getattr(args, "candidates", None)}
    cfg = resolve_train_config(args.config, overrides, task=args.task, base=args.base, out=args.out,
                               caches=caches, **rl)
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    from worldboot.train.run import run_training

    result = run_training(cfg, resume=args.resume, merge=args.merge)
    if os.environ.get("RANK", "0") != "0":  # one summary line, from the main process
        return 0
    print(f"trained {cfg.task} model in {cfg.out}: " + ", ".join(f"{k} {v:.4g}" for k, v in result.items()
                                                                  if isinstance(v, float)))
    return 0
