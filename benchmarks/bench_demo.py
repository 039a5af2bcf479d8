"""Wall time and peak memory of each stage of ``worldboot demo``, printed so regressions show.

Runs the demo of a preset (default ``smoke``) in a temporary folder with the world's base model
from the cache (built first if missing: its build is the ``base`` stage), then prints each
stage's seconds and peak resident memory, as ``stages.json`` records them (the demo samples
the process's RSS with psutil while each stage runs), and the total against the preset's
budget (smoke: 5 minutes on 2 cores; paper: 45).

    python benchmarks/bench_demo.py [--preset smoke] [--threads 2] [--keep DIR] [--verbose]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from worldboot.progress import VERBOSE_HELP, quiet_libraries

BUDGET_S = {"smoke": 300, "paper": 45 * 60}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="smoke", choices=sorted(BUDGET_S))  # the keys of demo.PRESETS
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--keep", metavar="DIR", help="run there and keep the run (default: a temporary folder)")
    ap.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    args = ap.parse_args()
    if not args.verbose:  # the worldboot command's quiet console
        quiet_libraries()
    os.environ.setdefault("WORLDBOOT_NO_PROGRESS", "1")
    from worldboot.demo import STAGES, Demo, load_demo_config

    overrides = [f"torch_threads={args.threads}"] if args.threads else []
    cfg = load_demo_config(args.preset, overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.keep or tmp)
        Demo(cfg, out, say=lambda line: print(line, flush=True)).run()
        state = json.loads((out / "stages.json").read_text())
    print(f"\n{'stage':<10}{'seconds':>10}{'peak MB':>10}")
    total = 0.0
    for name in STAGES:
        if name in state:
            total += state[name]["seconds"]
            print(f"{name:<10}{state[name]['seconds']:>10.1f}{state[name].get('peak_mb') or 0:>10}")
    budget = BUDGET_S[args.preset]
    print(f"{'total':<10}{total:>10.1f}   (budget {budget} s: {'met' if total <= budget else 'NOT met'})")
    print(json.dumps({"total_s": round(total, 1), "budget_s": budget}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
