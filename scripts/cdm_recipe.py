"""Measure a demo preset's dynamics model (CDM) on validation triplets, never the test ones.

Runs a demo preset's ``base``, ``data`` and CDM training (the demo's own stages, with any dotted
overrides), then judges the CDM and its base on ``--val`` triplets per family drawn with seed
5000 (the test triplets use the preset's seed + 1000): exact action, slot accuracy, transition
success and the choice among five. The figures that chose the presets' CDM recipes in
docs/log.md come from this script.

    python scripts/cdm_recipe.py --preset smoke --out runs/cdm-recipe recognition_per_subset=2000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="smoke")
    p.add_argument("--out", required=True, help="a scratch folder (its data and caches are reused when present; the CDM trains again)")
    p.add_argument("--val", type=int, default=40, help="validation triplets per family (seed 5000)")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("overrides", nargs="*", help="demo overrides, e.g. cdm.max_steps=1000")
    args = p.parse_args()

    from worldboot.progress import quiet_libraries

    if not args.verbose:
        quiet_libraries()
    from worldboot.demo import Demo, load_demo_config
    from worldboot.demo.actions import measure_actions
    from worldboot.demo.finetune import finetune
    from worldboot.models import load_backbone
    from worldboot.world.gen import generate_triplets

    cfg = load_demo_config(args.preset, overrides=args.overrides)
    out = Path(args.out)
    demo = Demo(cfg, out, say=lambda _line: None)
    demo.use_threads()
    t0 = time.perf_counter()
    for stage in ("base", "data"):
        if stage not in demo.state:
            demo._done(stage, getattr(demo, f"stage_{stage}")(), 0.0)
    demo._cache(demo.triplets("train"), "labelled")
    if cfg.recognition_per_subset:
        demo._cache(demo.triplets("recognition"), "recognition")
    t1 = time.perf_counter()
    train = demo.train_config("CDM")
    finetune(train)
    t2 = time.perf_counter()
    val = generate_triplets(out / "validation", args.val, seed=5000)
    rows = {}
    for name, path in (("base", demo.base_dir), ("CDM", out / "cdm")):
        m = measure_actions(load_backbone(path), val, cfg.seed, out / f"val_{name}.jsonl")
        rows[name] = {k: round(m[k], 3) for k in ("action_accuracy", "slot_accuracy", "transition_success",
                                                  "choice_accuracy")}
    result = {"preset": args.preset, "overrides": args.overrides, "steps": train.max_steps,
              "batch_size": train.batch_size, "data_s": round(t1 - t0), "train_s": round(t2 - t1), **rows}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
