"""Benchmark: a world-model training step with the recognition-weighted loss vs the plain loss.

Target: weighted / plain step time <= 1.05 (the weights are a multiply on the completion
positions only). Also prints training tokens/s of the tiny model. Both recipes run in one
process, their steps interleaved, so machine load hits both alike.

    .venv/bin/python benchmarks/bench_train.py [--verbose]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from worldboot.progress import VERBOSE_HELP, quiet_libraries

STEPS = 12


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    args = ap.parse_args()
    if not args.verbose:  # the worldboot command's quiet console, before DeepSpeed's import warns
        quiet_libraries()
    os.environ.setdefault("WORLDBOOT_NO_PROGRESS", "1")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers import square_triplets
    from worldboot.data.tokenize import build_cache
    from worldboot.models import load_backbone
    from worldboot.models.tiny import save_tiny_chameleon
    from worldboot.train.config import DataSettings, OptimSettings, SourceSettings
    from worldboot.train.recipes import Trainer
    from worldboot.train.sft_config import SFTConfig

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = save_tiny_chameleon(tmp / "base")
        triplets = square_triplets(tmp / "data", 64, seed=0)
        build_cache(triplets, load_backbone(base), tmp / "cache", progress=False)
        recipes = {}
        for weighting in ("none", "l2"):
            cfg = SFTConfig(
                task="world", base_model=str(base), out=str(tmp / weighting), max_steps=STEPS * 2,
                batch_size=16, micro_batch_size=16, save_every=0, eval_every=0,
                data=DataSettings(sources=[SourceSettings(cache=str(tmp / "cache"))], eval_fraction=0.0),
                optim=OptimSettings(lr=1e-3, warmup_steps=0),
            )
            cfg.loss.weighting = weighting
            r = Trainer(cfg)
            r.setup()
            r.train_step(0)  # warm-up
            recipes[weighting] = r
        times: dict[str, list[float]] = {"none": [], "l2": []}
        tokens = 0.0
        for step in range(1, STEPS + 1):
            for weighting, r in recipes.items():
                t0 = time.perf_counter()
                m = r.train_step(step)
                times[weighting].append(time.perf_counter() - t0)
                tokens += m["tokens"] if weighting == "none" else 0
        plain, weighted = statistics.median(times["none"]), statistics.median(times["l2"])
        print(f"world step, batch 16 x 64 target tokens: plain {plain * 1000:.1f} ms, weighted {weighted * 1000:.1f} ms")
        print(f"ratio weighted/plain = {weighted / plain:.3f} (target <= 1.05)")
        print(f"training throughput (plain): {tokens / sum(times['none']):.0f} target tokens/s")
        for r in recipes.values():
            r.cleanup()


if __name__ == "__main__":
    main()
