"""LoRA or every weight: the table "LoRA or every weight" of docs/results.md (the report's
fine-tuning line, and why the demo presets train every weight).

Runs a demo preset (smoke by default) as it is (every weight) and with the paper's LoRA (r16,
alpha 32, dropout 0.05: ``lora.enabled=true`` on the CDM's and the world models' recipes), on
the same data, seeds and steps, each a whole ``worldboot demo`` into its own folder; and the CDM
alone through LoRA at a higher learning rate. Then prints, from each run's own results (Table 1's
slot accuracy of the CDM; Table 2's ES and ME of C-FT at temperature 1, its first sample, and
greedy), on the preset's test triplets:

    python scripts/lora_vs_full.py --out runs/lora-vs-full            # the smoke preset, ~4 min
    # the same, by hand:
    worldboot demo --preset smoke --out runs/lora-vs-full/every-weight
    worldboot demo --preset smoke --out runs/lora-vs-full/lora cdm.lora.enabled=true cwm.lora.enabled=true
    # and the stages base, data and cdm of
    worldboot demo --preset smoke --out runs/lora-vs-full/lora-cdm-lr-5e-3 cdm.lora.enabled=true cdm.optim.lr=5.0e-3

Words after the options change every run (``seed=1``, or tiny sizes for a check:
``train_per_subset=4 test_per_subset=2 clips=2 synthetic_k=4 cdm.max_steps=2 cwm.max_steps=2``).
The figures in docs/results.md were measured on 2026-11-29 with the smoke base of that day
(before image codes started from their words).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

LORA = ["cdm.lora.enabled=true", "cwm.lora.enabled=true"]
#: name: (the words of the run, whether the whole demo runs or only the CDM's stages)
RUNS = {
    "every weight": ([], True),
    "LoRA": (LORA, True),
    "LoRA, CDM lr 5e-3": (["cdm.lora.enabled=true", "cdm.optim.lr=5.0e-3"], False),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="smoke")
    p.add_argument("--out", required=True, help="a scratch folder; a run already finished in it is reused")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("overrides", nargs="*", help="demo words for every run, e.g. seed=1")
    args = p.parse_args()

    from worldboot.progress import quiet_libraries

    if not args.verbose:
        quiet_libraries()
    from worldboot.demo import GREEDY, Demo, load_demo_config
    from worldboot.demo.report import slug, table2

    out = Path(args.out)
    rows: dict[str, dict[str, float | None]] = {}
    for name, (words, whole) in RUNS.items():
        cfg = load_demo_config(args.preset, overrides=[*args.overrides, *words])
        demo = Demo(cfg, out / slug(name), say=(print if args.verbose else lambda _line: None))
        demo.use_threads()
        if whole:
            demo.run()
        else:
            demo.check_resume()
            for stage in ("base", "data", "cdm"):
                if stage not in demo.state:
                    demo._done(stage, getattr(demo, f"stage_{stage}")(), 0.0)
        train = {key: demo.train_config(key) for key in (("CDM", "C-FT") if whole else ("CDM",))}
        row: dict[str, float | None] = {"CDM slot accuracy": demo.state["cdm"]["result"]["CDM"]["slot_accuracy"],
                                        "CDM steps": train["CDM"].max_steps, "CDM lr": train["CDM"].optim.lr,
                                        "CDM LoRA": train["CDM"].lora.enabled}
        if whole:
            judged = json.loads((demo.out / "predictions" / "judged.json").read_text())
            t2 = table2(judged, sorted(cfg.best_of))
            row.update({"C-FT steps": train["C-FT"].max_steps, "C-FT lr": train["C-FT"].optim.lr,
                        "C-FT LoRA": train["C-FT"].lora.enabled,
                        "C-FT ES, temperature 1": t2["C-FT"]["all"]["es"],
                        "C-FT ME, temperature 1": t2["C-FT"]["all"]["me"],
                        "C-FT ES, greedy": t2["C-FT" + GREEDY]["all"]["es"],
                        "C-FT ME, greedy": t2["C-FT" + GREEDY]["all"]["me"]})
        rows[name] = row

    print(f"{args.preset} preset{' ' + ' '.join(args.overrides) if args.overrides else ''}, "
          f"{len(demo.triplets('test'))} test triplets")
    keys = list(dict.fromkeys(k for r in rows.values() for k in r))
    print("| | " + " | ".join(rows) + " |")
    print("|---" * (len(rows) + 1) + "|")
    for k in keys:
        cells = [rows[n].get(k) for n in rows]
        spec = "g" if k.endswith(" lr") else ".2f"
        print(f"| {k} | " + " | ".join("" if c is None else format(c, spec) if isinstance(c, float) else str(c)
                                      for c in cells) + " |")
    (out / "lora_vs_full.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
