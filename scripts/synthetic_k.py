"""How many mined pairs the CWM should train on (a demo preset's ``synthetic_k``), measured on
validation triplets from a kept demo run's mining.

A demo run (``worldboot demo --out DIR``, or ``benchmarks/bench_demo.py --keep DIR``) leaves its
CDM-annotated key-frame pairs in ``DIR/mining/annotated`` and its labelled token cache in
``DIR/cache/labelled``. For each ``--k`` this script selects that many pairs again with Algorithm
1 (:func:`~worldboot.mining.select.select_synthetic`, stratified top-K by the CDM's likelihood,
as the demo's mine stage does), tokenizes them, trains the CWM (the run's own ``cwm`` recipe and
loss) on the labelled plus the selected pairs, draws one sample per validation triplet at
temperature 1 and judges it with the world judge (ES, ME, score). The run's own CWM (its
``synthetic_k``) is judged too, unless ``--k`` repeats it, and the selected pairs' label
precision (the clip generator knows each clip's action) is printed beside each row. Validation
triplets: ``--val`` per family drawn with seed 5000 (the demo's test triplets use the run's
seed + 1000), never the run's test triplets. The kept run is only read.

    python scripts/synthetic_k.py --run runs/demo-paper --out runs/synthetic-k --k 3000 6000

``--mix`` trains each K with other uniform shares of the weighted loss (``loss.uniform_mix``;
``plain`` is the loss without weights): the share chosen with the mined pairs in the mix. The
run's own "CWM w/o weighted loss" row, when it has one, is judged beside them.

    python scripts/synthetic_k.py --run runs/demo-paper --out runs/mix --k 3000 --mix 0.3 plain
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any


def _train_rows(args: argparse.Namespace, cfg: Any, run: Path, out: Path, base: str
                ) -> tuple[dict[str, Path], dict[str, float], dict[str, int]]:
    """The CWMs to judge (the run's own, then one per K and share, trained unless finished), the
    label precision of each one's mined pairs, and the seconds of those trained now."""
    from worldboot.data.schema import read_manifest
    from worldboot.data.tokenize import build_cache
    from worldboot.demo.actions import selected_label_precision
    from worldboot.demo.finetune import finetune, train_config
    from worldboot.demo.report import slug
    from worldboot.mining.select import SelectConfig, select_synthetic
    from worldboot.models import load_backbone

    truth = run / "data" / "clips"
    models: dict[str, Path] = {}
    precision: dict[str, float] = {}
    seconds: dict[str, int] = {}
    run_precision = selected_label_precision(run / "mining" / "synthetic", truth)["all"]["precision"]
    if cfg.synthetic_k not in args.k or args.mix:
        name = f"CWM, k {cfg.synthetic_k} (the run's)"
        models[name], precision[name] = run / "cwm" / slug("CWM"), run_precision
    plain = run / "cwm" / slug("CWM w/o weighted loss")
    if args.mix and (plain / "meta.json").is_file():
        name = f"CWM w/o weighted loss, k {cfg.synthetic_k} (the run's)"
        models[name], precision[name] = plain, run_precision
    for k in args.k:
        mining = out / f"k{k}" / "mining"
        select_synthetic(run / "mining" / "annotated", mining / "synthetic", SelectConfig(k=k, name="world-clips"))
        cache = out / f"k{k}" / "cache" / "synthetic"
        build_cache(read_manifest(mining / "synthetic" / "synthetic.jsonl"), load_backbone(base), cache,
                    batch_size=64, progress=False)
        k_precision = selected_label_precision(mining / "synthetic", truth)["all"]["precision"]
        for mix in args.mix or [None]:
            loss = ["loss.weighting=none"] if mix == "plain" else ["loss.weighting=l2"]
            loss += [f"loss.uniform_mix={float(mix)}"] if mix not in (None, "plain") else []
            name = f"CWM, k {k}" + (f", {'plain loss' if mix == 'plain' else f'mix {mix}'}" if mix else "")
            precision[name] = k_precision
            folder = out / f"k{k}" / ("cwm" if mix is None else f"cwm-{mix}")
            tc = train_config(cfg.cwm, task="world", base=base, out=folder, caches=[run / "cache" / "labelled", cache],
                              seed=cfg.seed, extra=loss)
            meta = Path(tc.out) / "meta.json"
            if not meta.is_file() or json.loads(meta.read_text()).get("status") != "ok":
                t0 = time.perf_counter()
                finetune(tc)
                seconds[name] = round(time.perf_counter() - t0)
            models[name] = Path(tc.out)
    return models, precision, seconds


def _mix(word: str) -> str:
    """``--mix``'s words: a share in [0, 1] or ``plain``."""
    if word != "plain":
        try:
            share = float(word)
        except ValueError:
            share = -1.0
        if not 0.0 <= share <= 1.0:
            raise argparse.ArgumentTypeError(f"{word!r} is neither a share in [0, 1] nor 'plain'")
    return word


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a finished demo run (its mining, caches and CWM are read)")
    p.add_argument("--out", required=True, help="a scratch folder (finished models in it are reused)")
    p.add_argument("--k", type=int, nargs="+", required=True, help="mined pairs to select, one CWM each")
    p.add_argument("--mix", nargs="+", default=None, type=_mix,
                   help="uniform shares of the weighted loss to train each K with, or 'plain' (default: the run's)")
    p.add_argument("--val", type=int, default=40, help="validation triplets per family (seed 5000)")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()

    from worldboot.progress import quiet_libraries

    if not args.verbose:
        quiet_libraries()
    from worldboot.base import get_world_base
    from worldboot.config import load_config, preset_file
    from worldboot.data.schema import read_manifest
    from worldboot.demo import load_demo_config
    from worldboot.demo.report import judged_rows, slug
    from worldboot.evaluate.run import EvaluateConfig, run_evaluation
    from worldboot.infer.generate import GenerateConfig, run_generate
    from worldboot.models import load_backbone
    from worldboot.models.backbone import SamplingConfig
    from worldboot.runs import read_jsonl
    from worldboot.world.gen import generate_triplets
    from worldboot.world.recognition import triplet_keys

    run, out = Path(args.run), Path(args.out)
    cfg = load_demo_config("default", config=run / "config.yaml")
    base = json.loads((run / "stages.json").read_text())["base"]["result"]["path"]
    if not Path(base).is_dir():  # the run's base was moved: the shipped one of its preset, by recipe hash
        base = str(get_world_base(cfg.base_preset, progress=False))
    val = generate_triplets(out / "validation", args.val, seed=5000)
    train = read_manifest(run / "data" / "train" / "manifest.jsonl")
    repeats = len(triplet_keys(val) & triplet_keys(train))
    manifest = out / "validation" / "manifest.jsonl"

    models, precision, seconds = _train_rows(args, cfg, run, out, base)

    preds = {}
    for name, model in models.items():
        gen = GenerateConfig(manifest=str(manifest), out=str(out / "predictions" / slug(name)), world=str(model),
                             best_of=1, sampling=SamplingConfig(temperature=1.0), seed=cfg.seed)
        run_generate(gen, shard=(0, 1), world=load_backbone(model), progress=False)
        preds[name] = gen.out
    evaluation = load_config(EvaluateConfig, preset_file("evaluate", "world"),
                             flags={"bench": str(manifest), "out": str(out / "evaluate"), "preds": preds})
    judged = judged_rows(read_jsonl(run_evaluation(evaluation, show_progress=False)["results"]), list(preds))

    print(f"run {run} (seed {cfg.seed}, {len(train)} labelled triplets, the CWM's recipe with its overrides "
          f"{cfg.cwm.overrides}); one sample at temperature 1 on {len(val)} validation triplets (seed 5000; "
          f"{repeats} repeat a training transition)")
    print("| CWM trained on | selected label precision | ES | ME | score | training s |")
    print("|---|---|---|---|---|---|")
    rows = {}
    for name, model_rows in judged.items():
        rows[name] = {k: statistics.fmean(r[k][0] for r in model_rows) for k in ("es", "me", "score")}
        rows[name]["precision"] = precision[name]
        print(f"| {name} | {precision[name]:.2f} | {rows[name]['es']:.2f} | {rows[name]['me']:.2f} | "
              f"{rows[name]['score']:.2f} | {seconds.get(name, '')} |")
    (out / "synthetic_k.json").write_text(json.dumps({"run": str(run), "validation": len(val), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
