"""``worldboot rollout``: several actions in a row from one image, each prediction the next input."""

from __future__ import annotations

import argparse

from worldboot.commands import HELP_FORMATTER, check_verifier_flags, seed_int

EXAMPLE = """examples:
  worldboot rollout kitchen.jpg --world runs/cwm --action "pick up the knife" --action "cut the onion" \\
      --out runs/rollout
  worldboot rollout kitchen.jpg --world runs/cwm --verifier runs/cdm --best-of 4 \\
      --action "open the fridge" --action "take out the milk" --out runs/rollout-bo4 sampling.top_k=512

outputs (DIR): source.png, step-1.png ... step-k.png, strip.png (the frames side by side with each
action underneath), candidates/step-i/<k>.png, codes.safetensors, rollout.json, config.yaml, meta.json.
Each step is written when it is done: rerun the same command after a kill (or with more --action
at the end) and it goes on from the last step. Steps it would not keep (other settings, another
action at a step, fewer actions) are refused; --fresh replaces them.
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``rollout`` subcommand."""
    p = sub.add_parser(
        "rollout",
        help="predict several steps from one image, each prediction the next input",
        description="Roll the world model forward: predict the observation after each action in turn, "
        "conditioning each step on the codes of the previous prediction; with --best-of N and a verifier, "
        "each step keeps the candidate the dynamics model finds most likely.",
        epilog=EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    p.add_argument("image", metavar="IMAGE", help="the first observation")
    p.add_argument("--world", metavar="MODEL_DIR", help="the world model (CWM)")
    p.add_argument("--action", dest="actions", action="append", default=[], metavar="TEXT",
                   help="one step's action (repeat for more steps)")
    p.add_argument("--out", metavar="DIR", required=True, help="the output folder")
    p.add_argument("--config", metavar="YAML", help="preset (configs/generate/*.yaml)")
    p.add_argument("--fresh", action="store_true",
                   help="replace the steps of an earlier rollout in DIR that this one would not keep")
    p.add_argument("--best-of", type=int, metavar="N", help="candidates per step")
    p.add_argument("--verifier", metavar="MODEL_DIR", help="the dynamics model (CDM) that picks each step's best")
    p.add_argument("--verifier-score", choices=("total", "mean"), help="rank by total (default) or mean log p")
    p.add_argument("--seed", type=seed_int, help="the rollout's seed")
    p.add_argument("--frame-size", type=int, metavar="PX", help="side of each frame in strip.png (default 256)")
    p.add_argument("--dtype", help="model dtype, e.g. bfloat16")
    p.add_argument("--device", help="cpu, cuda, cuda:1...")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. sampling.top_k=512")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the rollout and print where it went."""
    from worldboot.config import load_config
    from worldboot.infer.rollout import RolloutConfig, run_rollout

    flags = {
        "image": args.image,
        "out": args.out,
        "actions": list(args.actions) if args.actions else None,
        "world": args.world,
        "best_of": args.best_of,
        "seed": args.seed,
        "frame_size": args.frame_size,
        "dtype": args.dtype,
        "device": args.device,
        "verifier.path": args.verifier,
        "verifier.score": args.verifier_score,
    }
    cfg = load_config(RolloutConfig, args.config, args.overrides or [], flags=flags)
    check_verifier_flags(args, cfg.verifier.path)
    steps = run_rollout(cfg, fresh=args.fresh)
    total = len(cfg.actions)  # the steps returned are this run's; a resumed run kept the others
    earlier = f" ({total - len(steps)} from an earlier run)" if len(steps) < total else ""
    print(f"{total} steps{earlier} -> {cfg.out}/step-1.png ... step-{total}.png and {cfg.out}/strip.png")
    return 0
