"""The uniform share in the CWM's recognition weights (``loss.uniform_mix`` in
configs/demo/cwm.yaml, once the demo's ``weight_mix``), measured on validation triplets.

The world's tokenizer leaves the features of untouched positions unchanged, so their pure
recognition weight is about 0, and a world model trained on it alone barely learns to keep them;
a share of uniform weight puts them back into the loss. This script measures that trade on
validation triplets, never the test ones: it runs a demo preset's own ``base`` and ``data``
stages (with any dotted overrides), tokenizes the labelled triplets, trains one world model per
setting through the CWM's recipe with the preset's overrides (``loss.weighting=l2
loss.uniform_mix=M`` for each ``--mix``, and ``loss.weighting=none``, the plain loss), on the
labelled triplets (``--synthetic`` is not offered: the mined set needs the CDM), draws one sample
per validation triplet at temperature 1 and judges it with the world judge (ES, ME, score).
Validation triplets: ``--val`` per family drawn with seed 5000 (the demo's test triplets use the
preset's seed + 1000); how many of them repeat a training transition is printed.

    python scripts/uniform_mix.py --preset paper --out runs/uniform-mix --mix 0.1 0.3 0.6
    python scripts/uniform_mix.py --preset paper --out runs/uniform-mix-400 cwm.max_steps=400

The figures once given for 0.3 (mix 0.1: ES 1.69 / ME 0.19; 0.3: 1.68 / 0.72; 0.6: 1.32 / 1.13;
the plain loss 1.37 / 2.60; 2026-11-22, base version 3, the paper preset of that day: 1000
labelled triplets, 400 steps) came from that day's paper-preset runs, judged on its test
triplets, not from this script (docs/log.md, "Where uniform_mix 0.3 came from"); this script is
how a value is to be chosen now.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="paper")
    p.add_argument("--out", required=True, help="a scratch folder (its data is reused when present)")
    p.add_argument("--mix", type=float, nargs="+", default=[0.1, 0.3, 0.6], help="uniform shares to train")
    p.add_argument("--val", type=int, default=40, help="validation triplets per family (seed 5000)")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("overrides", nargs="*", help="demo overrides, e.g. cwm.max_steps=400")
    args = p.parse_args()

    from worldboot.progress import quiet_libraries

    if not args.verbose:
        quiet_libraries()
    from worldboot.config import load_config, preset_file
    from worldboot.demo import Demo, load_demo_config
    from worldboot.demo.finetune import finetune, train_config
    from worldboot.demo.report import judged_rows, slug
    from worldboot.evaluate.run import EvaluateConfig, run_evaluation
    from worldboot.infer.generate import GenerateConfig, run_generate
    from worldboot.models import load_backbone
    from worldboot.models.backbone import SamplingConfig
    from worldboot.runs import read_jsonl
    from worldboot.world.gen import generate_triplets
    from worldboot.world.recognition import triplet_keys

    cfg = load_demo_config(args.preset, overrides=args.overrides)
    out = Path(args.out)
    demo = Demo(cfg, out, say=lambda _line: None)
    demo.use_threads()
    demo.check_resume()
    for stage in ("base", "data"):
        if stage not in demo.state:
            demo._done(stage, getattr(demo, f"stage_{stage}")(), 0.0)
    labelled = demo._cache(demo.triplets("train"), "labelled")  # resumes a cache already there
    val = generate_triplets(out / "validation", args.val, seed=5000)
    repeats = len(triplet_keys(val) & triplet_keys(demo.triplets("train")))
    manifest = out / "validation" / "manifest.jsonl"

    settings = {f"uniform_mix {m:g}": ["loss.weighting=l2", f"loss.uniform_mix={m}"] for m in args.mix}
    settings["plain loss"] = ["loss.weighting=none"]
    preds, seconds = {}, {}
    for name, extra in settings.items():
        train = train_config(cfg.cwm, task="world", base=demo.base_dir, out=out / "models" / slug(name),
                             caches=[labelled], seed=cfg.seed, extra=extra)
        t0 = time.perf_counter()
        finetune(train)
        seconds[name] = round(time.perf_counter() - t0)
        gen = GenerateConfig(manifest=str(manifest), out=str(out / "predictions" / slug(name)), world=str(train.out),
                             best_of=1, sampling=SamplingConfig(temperature=1.0), seed=cfg.seed)
        run_generate(gen, shard=(0, 1), world=load_backbone(train.out), progress=False)
        preds[name] = gen.out
    evaluation = load_config(EvaluateConfig, preset_file("evaluate", "world"),
                             flags={"bench": str(manifest), "out": str(out / "evaluate"), "preds": preds})
    judged = judged_rows(read_jsonl(run_evaluation(evaluation, show_progress=False)["results"]), list(preds))

    steps = train.max_steps
    print(f"{args.preset} preset{' ' + ' '.join(args.overrides) if args.overrides else ''}: world models trained "
          f"{steps} steps of {train.batch_size} on {len(demo.triplets('train'))} labelled triplets; one sample "
          f"at temperature 1 on {len(val)} validation triplets (seed 5000; {repeats} repeat a training transition)")
    print("| setting | ES | ME | score | training s |")
    print("|---|---|---|---|---|")
    rows = {}
    for name, model_rows in judged.items():
        rows[name] = {k: statistics.fmean(r[k][0] for r in model_rows) for k in ("es", "me", "score")}
        print(f"| {name} | {rows[name]['es']:.2f} | {rows[name]['me']:.2f} | {rows[name]['score']:.2f} | "
              f"{seconds[name]} |")
    (out / "uniform_mix.json").write_text(json.dumps({"overrides": args.overrides, "steps": steps,
                                                      "validation": len(val), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
