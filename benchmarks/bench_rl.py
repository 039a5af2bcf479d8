"""Time per reward-optimisation step against a plain training step at the same batch.

On the tiny Chameleon and 40 tokenised square triplets (the training tests' data), with the
same prompts per step and LoRA r16 on the attention projections:

* **world**: one step of ``worldboot train world`` (teacher-forced loss on the target tokens);
* **grpo** / **dpo**: one step of ``worldboot train world-rl``: sample G candidates per prompt,
  reward them with the CDM (here the same tiny model), update.
* **offline**: DPO on pairs read from a ``worldboot generate --best-of G --verifier`` folder of
  the same triplets (``rl.candidates``): nothing sampled or scored while training;
* **dynamics** and **cdm-grpo**: the reverse direction, one plain CDM step against one step of
  ``worldboot train dynamics-rl`` (G action texts of at most 16 tokens per prompt, rewarded by
  the world model, here the same tiny model).

It prints the seconds per step of each, the ratio to its plain step (world, or dynamics for
cdm-grpo), and the share of an RL
step spent sampling, scoring and updating (the recipe's ``sample_s``, ``score_s``,
``update_s``). Best of several interleaved repeats (the machine is shared).

    python benchmarks/bench_rl.py [--group-size 4] [--batch 8] [--steps 4] [--repeats 3] [--verbose]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from worldboot.progress import VERBOSE_HELP, quiet_libraries

#: Each timed kind's training task, and the plain step an RL step is compared with.
TASKS = {"world": "world", "grpo": "world-rl", "dpo": "world-rl", "offline": "world-rl", "dynamics": "dynamics",
         "cdm-grpo": "dynamics-rl"}
PLAIN = {"grpo": "world", "dpo": "world", "offline": "world", "cdm-grpo": "dynamics", "world": "world",
         "dynamics": "dynamics"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8, help="prompts per step")
    ap.add_argument("--steps", type=int, default=4, help="steps per timed run (the first is not timed)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    args = ap.parse_args()
    if not args.verbose:  # the worldboot command's quiet console
        quiet_libraries()
    os.environ.setdefault("WORLDBOOT_NO_PROGRESS", "1")
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers import square_triplets
    from worldboot.data.tokenize import build_cache
    from worldboot.models import load_backbone
    from worldboot.models.tiny import save_tiny_chameleon
    from worldboot.train.config import DataSettings, LoraSettings, OptimSettings, SourceSettings
    from worldboot.train.rl_config import DPOConfig, GRPOConfig
    from worldboot.train.run import run_training

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tiny = save_tiny_chameleon(root / "model")
        build_cache(square_triplets(root / "images", 40, seed=1), load_backbone(tiny), root / "cache", progress=False)
        from worldboot.infer.generate import GenerateConfig, run_generate

        gen = GenerateConfig(manifest=str(root / "images" / "manifest.jsonl"), out=str(root / "pred"),
                             world=str(tiny), batch_size=8, best_of=args.group_size)
        gen.verifier.path = str(tiny)
        run_generate(gen, progress=False)

        def run(kind: str, rep: int) -> list[dict]:
            out = root / f"{kind}-{rep}"
            grpo = kind in ("grpo", "cdm-grpo")
            offline = {} if grpo else {"candidates": str(root / "pred") if kind == "offline" else ""}
            cfg = (GRPOConfig if grpo else DPOConfig)(
                task=TASKS[kind], base_model=str(tiny), out=str(out),
                max_steps=args.steps + 1, batch_size=args.batch, micro_batch_size=args.batch, save_every=0,
                eval_every=0, log_every=1, lora=LoraSettings(dropout=0.0),
                data=DataSettings(sources=[SourceSettings(cache=str(root / "cache"))], eval_fraction=0.0),
                optim=OptimSettings(lr=1e-3, warmup_steps=0, scheduler="constant"),
                verifier="" if kind == "offline" else str(tiny), group_size=args.group_size, max_new_tokens=16,
                **offline,
            )
            run_training(cfg)
            rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            return [r for r in rows if "tokens_per_s" in r][1:]  # the first step warms up

        kinds = tuple(TASKS)
        best: dict[str, float] = {k: float("inf") for k in kinds}
        shares: dict[str, dict[str, float]] = {}
        for rep in range(args.repeats):
            for kind in kinds:
                rows = run(kind, rep)
                # Seconds per step from the logged throughput (tokens / seconds of the step).
                secs = sum(r["tokens"] / r["tokens_per_s"] for r in rows) / len(rows)
                if secs < best[kind]:
                    best[kind] = secs
                    if kind not in PLAIN.values():
                        parts = {p: sum(r[f"{p}_s"] for r in rows) for p in ("sample", "score", "update")}
                        total = sum(parts.values())
                        shares[kind] = {p: v / total for p, v in parts.items()}
    print(f"tiny Chameleon, {args.batch} prompts a step, G = {args.group_size}, best of {args.repeats}")
    print(f"{'step':<10}{'s/step':>9}{'x plain':>9}{'sample':>9}{'score':>9}{'update':>9}")
    for kind in kinds:
        s = shares.get(kind, {})
        cols = "".join(f"{s[p]:>9.0%}" for p in ("sample", "score", "update")) if s else ""
        print(f"{kind:<10}{best[kind]:>9.3f}{best[kind] / best[PLAIN.get(kind, 'world')]:>9.2f}{cols}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
