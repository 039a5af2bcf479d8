"""``worldboot demo``: the whole method on the procedural world, with a paper-style report."""

from __future__ import annotations

import argparse

from worldboot.commands import HELP_FORMATTER
from worldboot.demo import PRESETS  # light: the demo module imports torch only inside its stages
from worldboot.errors import UsageError

EXAMPLE = """examples:
  worldboot demo --out runs/demo                      # the default preset (make demo): 12-17 min cold on 2 cores (budget 15)
  worldboot demo --preset smoke --out runs/smoke      # the CI's: two minutes, too short for the world models to learn much
  worldboot demo --preset paper --out runs/demo-paper # the paper's regime, tests its claims (under an hour cold on 2 cores)
  worldboot demo --out runs/demo cwm.max_steps=120    # a word on a training run's config (configs/demo/cwm.yaml)
"""

def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    p = sub.add_parser(
        "demo",
        help="the whole method on the embedded procedural world, with report.md / report.html",
        description=(
            "Build (or reuse) the tiny world foundation model, probe it, train the dynamics model, mine the "
            "world's unlabelled clips, train C-FT, the CWM and its ablations (ablations: false leaves them out, as "
            "the default preset does; and, in the paper preset, the CWM "
            "with GRPO and with DPO against the CDM: rl.enabled, dpo.enabled), generate with best-of-N, evaluate "
            "with the world judge and write report.md and report.html. A rerun runs the stages not yet "
            "finished and those after them; a run made with other settings is refused (--fresh starts it over)."
        ),
        epilog=EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    p.add_argument("--preset", choices=list(PRESETS), default="default",
                   help="named sizes (configs/demo/<preset>.yaml in the package)")
    p.add_argument("--config", metavar="YAML", help="a demo config changing the preset (any subset of its keys)")
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="run directory (default: runs/demo)")
    p.add_argument("--fresh", action="store_true", help="delete OUT first (only a demo run) instead of resuming")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. seed=1, or cdm.max_steps=100 on the CDM's training config")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Resolve the preset and run the demo."""
    import shutil
    from pathlib import Path

    from worldboot.demo import Demo, load_demo_config

    cfg = load_demo_config(args.preset, args.config, args.overrides)
    out = Path(args.out)
    if args.fresh and out.exists():
        # Only a demo run (or nothing) is deleted: --out may name a folder by mistake.
        if not out.is_dir() or (any(out.iterdir()) and not (out / "stages.json").is_file()):
            raise UsageError(f"--fresh deletes --out, and {out} is not a demo run (no stages.json): choose another --out")
        # Its contents, not the folder: --out may be a link (runs/demo -> /scratch/demo), kept.
        for child in out.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    report = Demo(cfg, args.out).run()
    print(f"report: {report} and {report.with_suffix('.html')}")
    return 0
