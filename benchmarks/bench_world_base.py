"""Does the world's base model make fine-tuning work? LoRA CDM and CWM on world triplets.

Builds (or reuses) the base model of a preset, fine-tunes a dynamics model (CDM) and a world
model (CWM) on it with ``train/recipes.py`` (LoRA r16) on a token cache of
``generate_triplets``, and measures on held-out triplets:

* CDM: the share of greedy action texts that ``world_text.parse_action`` maps to the true
  action, for the base model (never trained on two images: about 0) and the fine-tuned one;
  the ratio is printed (target: clearly above 1, i.e. the base learns dynamics from little data);
* CWM: the world judge's score (0-10) of generated targets, against the Copy baseline (a copy
  of the source scores 0 by construction), and the share of generated images that parse.

    python benchmarks/bench_world_base.py [--preset smoke] [--triplets 64] [--steps 150] [--verbose]

This is a quality check rather than a timing: it takes minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from worldboot.progress import VERBOSE_HELP, quiet_libraries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--triplets", type=int, default=64, help="training triplets per subset")
    ap.add_argument("--test", type=int, default=12, help="held-out triplets per subset")
    ap.add_argument("--steps", type=int, default=150, help="LoRA steps per model")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--skip-cwm", action="store_true")
    ap.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    args = ap.parse_args()
    if not args.verbose:  # the worldboot command's quiet console
        quiet_libraries()
    os.environ.setdefault("WORLDBOOT_NO_PROGRESS", "1")

    from worldboot import world
    from worldboot.base import get_world_base, read_info
    from worldboot.data.tokenize import build_cache
    from worldboot.models import load_backbone
    from worldboot.models.backbone import SamplingConfig
    from worldboot.train.config import DataSettings, LoraSettings, OptimSettings, SourceSettings
    from worldboot.train.run import run_training
    from worldboot.train.sft_config import LossSettings, SFTConfig
    from worldboot.world.gen import generate_triplets
    from worldboot.world.judge import judge
    from worldboot.world.render import parse_scene
    from worldboot.world.text import parse_action

    t0 = time.perf_counter()
    base = get_world_base(args.preset, progress=True, log=print)
    info = read_info(base)
    print(f"base {base}: vq parse {info['vq']['parse_rate']:.1%}, lm {info['lm']}  ({time.perf_counter() - t0:.0f} s)")
    work = Path(args.work or tempfile.mkdtemp(prefix="wb-base-"))
    train = generate_triplets(work / "train", args.triplets, seed=0)
    test = generate_triplets(work / "test", args.test, seed=1, paraphrase=False)
    bb = load_backbone(base)
    build_cache(train, bb, work / "cache", progress=False)  # resumes (or reuses) a cache in --work

    from worldboot.images import open_image

    src_codes = bb.encode_images([open_image(t.source) for t in test]).codes
    tgt_codes = bb.encode_images([open_image(t.target) for t in test]).codes
    truth = [world.Action.from_json(t.meta["action"]) for t in test]

    def cdm_accuracy(backbone) -> tuple[float, list[str]]:
        prompts = [backbone.dynamics_example(s, g) for s, g in zip(src_codes, tgt_codes, strict=True)]
        texts = []
        for i in range(0, len(prompts), 16):
            texts += backbone.generate_text(prompts[i : i + 16], max_new_tokens=24)
        ok = [parse_action(t) == a for t, a in zip(texts, truth, strict=True)]
        return float(np.mean(ok)), texts

    def settings(task: str, out: Path) -> SFTConfig:
        return SFTConfig(
            task=task,
            base_model=str(base),
            out=str(out),
            max_steps=args.steps,
            batch_size=16,
            micro_batch_size=8,
            save_every=0,
            eval_every=0,
            log_every=25,
            lora=LoraSettings(r=16, alpha=32, dropout=0.05),
            optim=OptimSettings(lr=args.lr, warmup_steps=10),
            data=DataSettings(sources=[SourceSettings(cache=str(work / "cache"))], eval_fraction=0.0),
            loss=LossSettings(weighting="l2" if task == "world" else "none", uniform_mix=0.1),
        )

    base_acc, _ = cdm_accuracy(bb)
    t1 = time.perf_counter()
    run_training(settings("dynamics", work / "cdm"))
    cdm = load_backbone(work / "cdm")
    acc, texts = cdm_accuracy(cdm)
    print(f"CDM ({args.steps} LoRA steps, {time.perf_counter() - t1:.0f} s): action accuracy {acc:.1%} "
          f"vs base {base_acc:.1%} (ratio {acc / max(base_acc, 1e-9):.1f}x); e.g. {texts[:3]}")
    by_family: dict[str, list[bool]] = {}
    for t, a, txt in zip(test, truth, texts, strict=True):
        by_family.setdefault(t.subset, []).append(parse_action(txt) == a)
    print("  per subset: " + ", ".join(f"{k} {np.mean(v):.0%}" for k, v in sorted(by_family.items())))
    if args.skip_cwm:
        return
    t2 = time.perf_counter()
    run_training(settings("world", work / "cwm"))
    cwm = load_backbone(work / "cwm")
    prompts = [cwm.world_example(s, t.action) for s, t in zip(src_codes, test, strict=True)]
    gen = torch.Generator().manual_seed(0)
    codes = []
    for i in range(0, len(prompts), 16):
        codes.append(cwm.generate_images(prompts[i : i + 16], 1, SamplingConfig(temperature=0.0), gen)[:, 0])
    images = cwm.decode_codes(torch.cat(codes))
    scores, parseable, copies = [], 0, 0
    for t, img in zip(test, images, strict=True):
        src_scene = world.Scene.from_json(t.meta["source_scene"])
        tgt_scene = world.Scene.from_json(t.meta["target_scene"])
        parsed = parse_scene(img)
        parseable += not parsed.problems()
        copies += parsed == src_scene
        scores.append(judge(t.source, t.meta["action"], img, tgt_scene, src_scene).score)
    n = len(test)
    print(f"CWM ({args.steps} LoRA steps, {time.perf_counter() - t2:.0f} s): judge score {np.mean(scores):.2f}/10 "
          f"vs Copy 0.00; success (score >= 8) {np.mean([s >= 8 for s in scores]):.1%}; "
          f"parseable {parseable / n:.1%}; copies of the source {copies / n:.1%}")
    print(f"total {time.perf_counter() - t0:.0f} s; work folder {work}")


if __name__ == "__main__":
    main()
