"""``worldboot demo``: the paper's whole method in miniature, on the procedural world, on a CPU.

Stages, each a call into the same code the CLI stages run, each finished stage recorded in
``stages.json`` so that a rerun after a kill skips what is done:

1. ``base``: the tiny foundation model of the world (pictures and words, no dynamics),
   built once and cached (:mod:`worldboot.world.base`).
2. ``data``: labelled train and test triplets of the five world subsets, and unlabelled clips.
3. ``probe``: does the base prefer real trajectories? (Figure 2 in miniature.)
4. ``cdm``: tokenize, fine-tune the dynamics model (LoRA or every weight, per preset), and measure its actions (Table 1).
5. ``mine``: key-frames by optical flow, CDM annotation, stratified top-K (Table 5).
6. ``cwm``: C-FT (labelled only, plain loss), CWM (labelled + synthetic, weighted loss) and the
   two ablations (without synthetic data; without the weighted loss), equal steps each.
7. ``predict``: N candidates per test sample from each world model, scored by the CDM and
   judged by the world's judge; best-of-K for K in ``best_of`` (Figure 7).
8. ``report``: ``report.md`` and ``report.html`` with Tables 1, 2, 3, 5, Figures 2, 3, 7,
   example images, and which of the paper's claims held on this run: each claim's comparison is
   a paired Wilcoxon signed-rank test over the test triplets, so a verdict is ``held``,
   ``did not hold`` or ``not significant`` (:func:`_claims`).
"""

from __future__ import annotations

import html
import json
import os
import shutil
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from worldboot.runs import RunDir, read_jsonl, write_atomic

STAGES = ("base", "data", "probe", "cdm", "mine", "cwm", "predict", "report")
#: Options of the multiple-choice action test of Table 1 (the true action and CHOICES - 1 others).
CHOICES = 5
#: Rows of Table 2 that are not world models: the source image as the prediction, and the true
#: target through the tokenizer (what a world model that wrote exactly the target's tokens scores).
CEILING = "Target through the tokenizer (ceiling)"
BASELINES = ("Copy", CEILING)
#: Suffix of the rows that decode each world model greedily (one candidate, temperature 0).
GREEDY = " (greedy)"
#: Significance level of the claims' tests.
ALPHA = 0.05


@dataclass
class TrainSettings:
    """One fine-tuning run of the demo.

    Attributes:
        steps: Optimiser steps.
        batch_size: Global batch.
        micro_batch_size: Samples per forward pass.
        lr: Peak learning rate (cosine decay, short warm-up).
        lora: Train a LoRA adapter (the paper's way); False trains every weight, which a
            tiny base with little capacity in its attention projections may need.
        lora_r: LoRA rank (alpha = 2r, dropout 0.05, as in the paper).
    """

    steps: int = 60
    batch_size: int = 16
    micro_batch_size: int = 16
    lr: float = 2e-3
    lora: bool = True
    lora_r: int = 16


@dataclass
class DemoConfig:
    """The demo's sizes; :data:`PRESETS` names two (``smoke`` and ``paper``, also shipped as
    ``configs/demo/<name>.yaml``) and :func:`load_demo_config` resolves one.

    Attributes:
        base_preset: Preset of the world foundation model (``smoke`` or ``paper``).
        seed: Seeds data, training and sampling.
        train_per_subset: Labelled training triplets per world subset.
        test_per_subset: Test triplets per subset.
        clips: Unlabelled video clips to mine.
        clip_size: Clip frame side in pixels.
        synthetic_k: Synthetic triplets kept by Algorithm 1.
        keyframes: Key-frames per clip (paper K_f = 6).
        interval: Least distance between key-frames in frames (paper I_f = 20).
        probe_per_subset: Test triplets per subset in the probe.
        paraphrase: Label training triplets with a random paraphrase template (False: the
            canonical text only, an easier target for a small model); test triplets always
            use paraphrases, as human-written references would.
        best_of: The K of best-of-K; the largest is the number of candidates drawn.
        weight_mix: Uniform share in the recognition weights of the CWM's loss. The world's
            tokenizer keeps untouched positions' features unchanged, so their pure recognition
            weight is ~0 and a world model trained on it barely learns to keep them; measured on
            the paper base with 1000 labelled triplets (400 steps, temperature 1): mix 0.1 gave editing
            success 1.69 and minimal editing 0.19, 0.3 gave 1.68 and 0.72, 0.6 gave 1.32 and
            1.13, the plain loss 1.37 and 2.60.
        cdm: The dynamics model's training.
        cwm: Each world model's training (the same for all four, for a fair comparison).
        torch_threads: Threads for torch (0 = torch's default).
    """

    base_preset: str = "smoke"
    seed: int = 0
    train_per_subset: int = 40
    test_per_subset: int = 6
    clips: int = 10
    clip_size: int = 96
    synthetic_k: int = 60
    keyframes: int = 6
    interval: int = 20
    probe_per_subset: int = 6
    paraphrase: bool = True
    best_of: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    weight_mix: float = 0.3
    cdm: TrainSettings = field(default_factory=TrainSettings)
    cwm: TrainSettings = field(default_factory=TrainSettings)
    torch_threads: int = 0


def _smoke() -> DemoConfig:
    # The tiny base has little capacity in its attention projections, so the demo trains every
    # weight (lora False); Anole-7B runs use the paper's LoRA (configs/anole7b/). Measured on
    # base version 4: CDM slot accuracy 0.04 (base 0), see docs/results.md.
    return DemoConfig(
        base_preset="smoke", train_per_subset=100, test_per_subset=6, clips=10, synthetic_k=60, probe_per_subset=6,
        cdm=TrainSettings(steps=200, lr=1e-3, lora=False), cwm=TrainSettings(steps=60, lr=1e-3, lora=False),
    )


def _paper() -> DemoConfig:
    # Measured on the paper base (version 3): 1000 labelled triplets gave CDM slot accuracy 0.23
    # after 400 steps and 0.23 after 1000, choice 0.25 and 0.21 (against 0.20 chance): more
    # steps on the same data do not help; 5000 triplets and 1000 steps give 0.28 and 0.31 (base
    # 0.23, p = 0.016). On 100 test triplets three of the four world-model claims were at
    # p > 0.1; on 200 (with the larger training set) one of them was settled (the weighted
    # loss's editing success, p = 0.001), the other two stayed at p = 0.14 and 0.4.
    return DemoConfig(
        base_preset="paper", train_per_subset=1000, test_per_subset=40, clips=200, synthetic_k=1000,
        probe_per_subset=20,
        cdm=TrainSettings(steps=1000, lr=1e-3, lora=False), cwm=TrainSettings(steps=400, lr=1e-3, lora=False),
    )


#: Named sizes; ``configs/demo/<name>.yaml`` hold the same values (a test checks), so that an
#: installed package without the ``configs/`` folder runs the same presets.
PRESETS: dict[str, Callable[[], DemoConfig]] = {"smoke": _smoke, "paper": _paper}


def load_demo_config(
    preset: str = "smoke", config: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()
) -> DemoConfig:
    """A preset, optionally changed by a YAML file and dotted overrides (``cdm.steps=100``).

    Raises:
        ConfigError: For an unknown preset or a bad key.
    """
    from worldboot.config import load_preset

    return load_preset(PRESETS, preset, config, overrides, kind="demo")


WORLD_MODELS = {
    # name: (use synthetic data, loss weighting)
    "C-FT": (False, "none"),
    "CWM": (True, "l2"),
    "CWM w/o synthetic": (False, "l2"),
    "CWM w/o weighted loss": (True, "none"),
}


class PeakMemory:
    """Peak resident memory (MB) of this process while a block runs.

    ``resource``'s ``ru_maxrss`` only knows the peak since the process started, so a thread
    samples psutil's RSS every ``interval`` seconds instead (a peak shorter than that can be
    missed; the demo's stages hold their memory for seconds).
    """

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        import psutil

        proc = psutil.Process()
        while True:
            self.peak_mb = max(self.peak_mb, proc.memory_info().rss / 2**20)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class Demo:
    """Runs the stages into ``out``, resuming finished ones.

    Args:
        cfg: Sizes.
        out: Run directory.
        say: Where progress lines go.
    """

    def __init__(self, cfg: DemoConfig, out: str | os.PathLike[str], say: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.out = Path(out)
        self.say = say
        self.state_path = self.out / "stages.json"
        self.state: dict[str, Any] = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}

    # -- bookkeeping ------------------------------------------------------------------------

    def _done(self, name: str, result: dict[str, Any], seconds: float, peak_mb: float | None = None) -> None:
        self.state[name] = {"result": result, "seconds": round(seconds, 1), "peak_mb": peak_mb}
        write_atomic(self.state_path, json.dumps(self.state, indent=2))

    def run(self) -> Path:
        """Run every stage not yet done; returns the path of ``report.md``."""
        import torch

        if self.cfg.torch_threads:
            torch.set_num_threads(self.cfg.torch_threads)
        with RunDir(self.out, self.cfg, "demo") as run:
            for name in STAGES:
                if name in self.state and name != "report":
                    self.say(f"[{name}] done before ({self.state[name]['seconds']} s), skipped")
                    continue
                self.say(f"[{name}] ...")
                t0 = time.perf_counter()
                with PeakMemory() as mem:
                    result = getattr(self, f"stage_{name}")()
                dt = time.perf_counter() - t0
                self._done(name, result, dt, round(mem.peak_mb))
                run.log(f"{name}: {dt:.1f} s, peak {mem.peak_mb:.0f} MB")
                self.say(f"[{name}] {dt:.1f} s, peak memory {mem.peak_mb:.0f} MB")
        return self.out / "report.md"

    # -- stages -----------------------------------------------------------------------------

    def stage_base(self) -> dict[str, Any]:
        from worldboot.world.base import get_world_base

        path = get_world_base(self.cfg.base_preset, progress=False)
        return {"path": str(path)}

    @property
    def base_dir(self) -> str:
        return self.state["base"]["result"]["path"]

    def stage_data(self) -> dict[str, Any]:
        from worldboot.world.gen import generate_clips, generate_triplets

        c = self.cfg
        data = self.out / "data"
        train = generate_triplets(data / "train", c.train_per_subset, seed=c.seed, paraphrase=c.paraphrase)
        test = generate_triplets(data / "test", c.test_per_subset, seed=c.seed + 1000)
        clips = generate_clips(data / "clips", c.clips, seed=c.seed + 2000, size=c.clip_size)
        return {"train": len(train), "test": len(test), "clips": len(clips)}

    def _triplets(self, split: str):
        from worldboot.data.schema import read_manifest

        return read_manifest(self.out / "data" / split / "manifest.jsonl")

    def stage_probe(self) -> dict[str, Any]:
        from worldboot.evaluate.probe import ProbeConfig, probe, write_report
        from worldboot.models import load_backbone

        cfg = ProbeConfig(max_per_subset=self.cfg.probe_per_subset, batch_size=16, seed=self.cfg.seed)
        rows = probe(self._triplets("test"), load_backbone(self.base_dir), cfg)
        summary = write_report(rows, self.out / "probe")
        return {"comparisons": len(rows), "cells": [c for c in summary["cells"] if c["subset"] == "all"]}

    def _train(self, task: str, out: Path, caches: list[Path], s: TrainSettings, weighting: str = "none") -> None:
        from worldboot.train.recipes import (
            DataSettings,
            LoraSettings,
            LossSettings,
            OptimSettings,
            SourceSettings,
            TrainConfig,
            run_training,
        )

        if out.exists():
            shutil.rmtree(out)  # an unfinished run of a killed demo starts over
        cfg = TrainConfig(
            task=task, base_model=self.base_dir, out=str(out), max_steps=s.steps, batch_size=s.batch_size,
            micro_batch_size=s.micro_batch_size, save_every=0, eval_every=0, log_every=5, seed=self.cfg.seed,
            lora=LoraSettings(enabled=s.lora, r=s.lora_r, alpha=2 * s.lora_r, dropout=0.05),
            optim=OptimSettings(lr=s.lr, warmup_steps=max(1, s.steps // 20)),
            data=DataSettings(sources=[SourceSettings(cache=str(c)) for c in caches], eval_fraction=0.0),
            loss=LossSettings(weighting=weighting, uniform_mix=self.cfg.weight_mix),
        )
        run_training(cfg)

    def _cache(self, triplets, name: str) -> Path:
        from worldboot.data.cache import build_cache
        from worldboot.models import load_backbone

        path = self.out / "cache" / name
        build_cache(triplets, load_backbone(self.base_dir), path, progress=False)
        return path

    def stage_cdm(self) -> dict[str, Any]:
        from worldboot.evaluate.text_metrics import TextMetricsConfig, score_actions
        from worldboot.models import load_backbone
        from worldboot.world.scene import Action
        from worldboot.world.text import parse_action, slot_accuracy

        labelled = self._cache(self._triplets("train"), "labelled")
        self._train("dynamics", self.out / "cdm", [labelled], self.cfg.cdm)
        test = self._triplets("test")
        refs = {t.id: (t.subset, t.action) for t in test}
        results: dict[str, Any] = {}
        for name, path in (("Chameleon ZS (base)", self.base_dir), ("CDM", self.out / "cdm")):
            bb = load_backbone(path)
            preds = self._describe(bb, test)
            rows, summary = score_actions(preds, refs, TextMetricsConfig())
            correct, slots = [], []
            for t in test:
                truth = Action.from_json(t.meta["action"])
                got = parse_action(preds[t.id])
                correct.append(float(got is not None and got == truth))
                slots.append(slot_accuracy(preds[t.id], truth))
            choices = self._choice_hits(bb, test)
            overall = dict(summary["overall"])
            overall["action_accuracy"] = sum(correct) / len(correct)
            overall["slot_accuracy"] = sum(slots) / len(slots)
            overall["choice_accuracy"] = sum(choices) / max(1, len(choices))
            # Per test triplet, in test order: the claims' paired significance tests read these.
            by_id = {r["id"]: r for r in rows}
            overall["per_sample"] = {
                "ids": [t.id for t in test], "exact": correct, "slot": slots, "choice": choices,
                "bertscore": [by_id[t.id].get("bertscore") for t in test],
                "rougeL": [by_id[t.id].get("rougeL") for t in test],
            }
            results[name] = overall
            write_atomic(self.out / "cdm_actions" / f"{_slug(name)}.jsonl",
                         "".join(json.dumps({"id": i, "action": a}) + "\n" for i, a in preds.items()))
        return results

    def _choice_hits(self, bb, triplets, n_other: int = CHOICES - 1) -> list[float]:
        """Per triplet, 1.0 if ``bb`` picks the true action, argmax log p(a | o_s, o_t), among it
        and ``n_other`` other actions that can happen in the same source scene (canonical texts
        for all, so wording gives nothing away), else 0.0. Unlike a generated text, this asks
        only whether the model reads the change between the two images: chance is
        ``1 / (n_other + 1)``."""
        import random

        from worldboot import world
        from worldboot.images import open_image
        from worldboot.world.text import canonical_text

        hits = []
        for t in triplets:
            truth = world.Action.from_json(t.meta["action"])
            scene = world.Scene.from_json(t.meta["source_scene"])
            rng = random.Random(f"worldboot/demo/choice/{self.cfg.seed}/{t.id}")
            options = [truth, *world.distractor_actions(scene, truth, n_other, rng)]
            enc = bb.encode_images([open_image(t.source), open_image(t.target)])
            examples = [bb.dynamics_example(enc.codes[0], enc.codes[1], canonical_text(a)) for a in options]
            hits.append(float(int(bb.score_shared_prefix(examples).total.argmax()) == 0))
        return hits

    @staticmethod
    def _describe(bb, triplets) -> dict[str, str]:
        from worldboot.images import open_image

        out = {}
        for start in range(0, len(triplets), 16):
            chunk = triplets[start : start + 16]
            enc = bb.encode_images([open_image(p) for t in chunk for p in (t.source, t.target)])
            prompts = [bb.dynamics_example(enc.codes[2 * i], enc.codes[2 * i + 1]) for i in range(len(chunk))]
            for t, text in zip(chunk, bb.generate_text(prompts, max_new_tokens=24), strict=True):
                out[t.id] = text
        return out

    def stage_mine(self) -> dict[str, Any]:
        from worldboot.mining.annotate import AnnotateConfig, annotate_pairs
        from worldboot.mining.keyframes import (
            KeyframeConfig,
            action_overlap_rate,
            keyframe_hit_rate,
            mine_videos,
        )
        from worldboot.mining.select import SelectConfig, select_synthetic
        from worldboot.models import load_backbone
        from worldboot.world.gen import read_clip_truth

        mining = self.out / "mining"
        # PNG: the world's frames are drawn in flat colours that JPEG would smear.
        kcfg = KeyframeConfig(k=self.cfg.keyframes, interval=self.cfg.interval, image_format="png")
        summary = mine_videos(self.out / "data" / "clips", mining / "keyframes", kcfg, progress=False)
        pairs = mining / "keyframes" / "pairs.jsonl"
        rows = [row for _, row in read_jsonl(pairs)]
        truth = read_clip_truth(self.out / "data" / "clips" / "ground_truth.jsonl")
        spans = {r["video"]: [(a["start"], a["end"]) for a in r["actions"]] for r in truth}
        quality = {"pair_overlap": action_overlap_rate(rows, spans), "keyframe_hit": keyframe_hit_rate(rows, spans)}
        annotate_pairs(pairs, load_backbone(self.out / "cdm"), mining / "annotated", AnnotateConfig(), progress=False)
        sel = select_synthetic(mining / "annotated", mining / "synthetic",
                               SelectConfig(k=self.cfg.synthetic_k, name="world-clips"))
        synthetic = self._read(mining / "synthetic" / "synthetic.jsonl")
        self._cache(synthetic, "synthetic")
        return {"videos": getattr(summary, "videos", None), "pairs": len(rows), "selected": len(synthetic),
                **quality, "select": {k: v for k, v in asdict(sel).items() if isinstance(v, (int, float, str))}}

    @staticmethod
    def _read(path: Path):
        from worldboot.data.schema import read_manifest

        return read_manifest(path)

    def stage_cwm(self) -> dict[str, Any]:
        caches = {"labelled": self.out / "cache" / "labelled", "synthetic": self.out / "cache" / "synthetic"}
        out = {}
        for name, (synthetic, weighting) in WORLD_MODELS.items():
            use = [caches["labelled"]] + ([caches["synthetic"]] if synthetic else [])
            self._train("world", self.out / "cwm" / _slug(name), use, self.cfg.cwm, weighting)
            rows = [row for _, row in read_jsonl(self.out / "cwm" / _slug(name) / "metrics.jsonl")]
            out[name] = {"final_loss": next(r["loss"] for r in reversed(rows) if "loss" in r)}
        return out

    def stage_predict(self) -> dict[str, Any]:
        import torch

        from worldboot.images import open_image
        from worldboot.infer.generate import make_generator, predict, sample_seed
        from worldboot.infer.verify import Verifier
        from worldboot.models import load_backbone
        from worldboot.models.backbone import SamplingConfig
        from worldboot.world.judge import judge_triplet

        test = self._triplets("test")
        n = max(self.cfg.best_of)
        verifier = Verifier(load_backbone(self.out / "cdm"))
        results: dict[str, list[dict[str, Any]]] = {}
        copy_rows = []
        for t in test:
            r = judge_triplet(t, open_image(t.source))
            copy_rows.append({"id": t.id, "subset": t.subset, "es": [r.editing_success], "me": [r.minimal_editing],
                              "score": [r.score], "cdm": [0.0]})
        results["Copy"] = copy_rows
        # The ceiling the tokenizer sets: the true target through encode and decode, i.e. a world
        # model that writes exactly the target's tokens. Far below 10, it is the VQ that limits
        # the scores; far above the world models, it is their learning.
        base = load_backbone(self.base_dir)
        ceiling_rows = []
        for start in range(0, len(test), 16):
            chunk = test[start : start + 16]
            decoded = base.decode_codes(base.encode_images([open_image(t.target) for t in chunk]).codes)
            for t, img in zip(chunk, decoded, strict=True):
                r = judge_triplet(t, img)
                ceiling_rows.append({"id": t.id, "subset": t.subset, "es": [r.editing_success],
                                     "me": [r.minimal_editing], "score": [r.score], "cdm": [0.0]})
        results[CEILING] = ceiling_rows
        del base
        for name in WORLD_MODELS:
            world = load_backbone(self.out / "cwm" / _slug(name))
            rows, greedy_rows = [], []
            folder = self.out / "predictions" / _slug(name)
            for start in range(0, len(test), 4):
                chunk = test[start : start + 4]
                images = [open_image(t.source) for t in chunk]
                codes = world.encode_images(images).codes
                gens = [make_generator(sample_seed(self.cfg.seed, t.id)) for t in chunk]
                preds = predict(world, list(codes), [t.action for t in chunk], n, SamplingConfig(temperature=1.0),
                                gens, verifier, images)
                for t, p in zip(chunk, preds, strict=True):
                    judged = [judge_triplet(t, img) for img in p.images]
                    cdm = p.scores.get(verifier.score_kind).tolist() if p.scores is not None else [0.0] * n
                    rows.append({"id": t.id, "subset": t.subset, "es": [j.editing_success for j in judged],
                                 "me": [j.minimal_editing for j in judged], "score": [j.score for j in judged],
                                 "cdm": cdm})
                    folder.mkdir(parents=True, exist_ok=True)
                    for k, img in enumerate(p.images[: min(n, 4)]):
                        img.save(folder / f"{t.id}-{k}.png")
                    p.image.save(folder / f"{t.id}-best.png")  # the CDM's pick of all n
                # Greedy decoding beside the paper's temperature 1: how much of a model's
                # minimal-editing loss is sampling noise (the paper: lower temperatures copy).
                greedy = predict(world, list(codes), [t.action for t in chunk], 1, SamplingConfig(temperature=0.0),
                                 [make_generator(0) for _ in chunk], None, images)
                for t, p in zip(chunk, greedy, strict=True):
                    j = judge_triplet(t, p.images[0])
                    greedy_rows.append({"id": t.id, "subset": t.subset, "es": [j.editing_success],
                                        "me": [j.minimal_editing], "score": [j.score], "cdm": [0.0]})
            results[name] = rows
            results[name + GREEDY] = greedy_rows
            del world
            torch.cuda.empty_cache() if torch.cuda.is_available() else None
        write_atomic(self.out / "predictions" / "judged.json", json.dumps(results))
        return {"models": list(results), "samples": len(test), "candidates": n}

    # -- report -----------------------------------------------------------------------------

    def stage_report(self) -> dict[str, Any]:
        from worldboot.evaluate.plots import plot_recognition_weights

        judged = json.loads((self.out / "predictions" / "judged.json").read_text())
        figures = self.out / "figures"
        figures.mkdir(exist_ok=True)
        plot_recognition_weights(self.out / "cache" / "labelled", figures / "figure3_weights.png", n=4,
                                 seed=self.cfg.seed)
        shutil.copy(self.out / "probe" / "figure2_preferences.png", figures / "figure2_preferences.png")
        ks = sorted(self.cfg.best_of)
        table2 = _table2(judged, ks)
        _plot_k(judged, ks, figures / "figure7_best_of_k.png")
        _plot_examples(self, figures / "examples.png")
        claims = _claims(self.state, table2, ks, judged)
        md = _markdown(self, table2, ks, claims)
        write_atomic(self.out / "report.md", md)
        write_atomic(self.out / "report.html", _html(md, self.out))
        return {"claims": claims}


def _plot_examples(demo: Demo, path: Path, n: int = 5) -> None:
    """Source, target, C-FT's and the CWM's first sample, and the CDM's pick of the CWM's
    samples, for ``n`` test triplets spread over the test set, with each action as a caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from worldboot.images import open_image

    test = demo._triplets("test")
    rows = test[:: max(1, len(test) // n)][:n]
    k = max(demo.cfg.best_of)
    columns = [("source", None), ("target", None), ("C-FT", "0"), ("CWM", "0"), (f"CWM + best-of-{k}", "best")]
    import textwrap

    fig, axes = plt.subplots(len(rows), len(columns), figsize=(1.8 * len(columns), 2.2 * len(rows) + 0.4),
                             squeeze=False)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.45 / (2.2 * len(rows) + 0.4),
                        wspace=0.08, hspace=0.45)
    for i, t in enumerate(rows):
        for j, (label, suffix) in enumerate(columns):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if suffix is None:
                img_path = Path(t.source if label == "source" else t.target)
            else:
                img_path = demo.out / "predictions" / _slug(label.split(" + ")[0]) / f"{t.id}-{suffix}.png"
            if img_path.is_file():
                ax.imshow(open_image(img_path), interpolation="nearest")
            if i == 0:
                box = ax.get_position()
                fig.text((box.x0 + box.x1) / 2, 1 - 0.2 / (2.2 * len(rows) + 0.4), label, ha="center",
                         va="center", fontsize=9, weight="bold")
        axes[i][0].set_title(textwrap.shorten(t.action, 70), fontsize=8, loc="left", x=0.0)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-").replace("--", "-")


def _pick(row: dict[str, Any], k: int) -> int:
    """Index of best-of-k: the candidate with the highest CDM score among the first k."""
    cands = row["cdm"][:k]
    return max(range(len(cands)), key=lambda i: cands[i])


def _sampled(rows: list[dict[str, Any]]) -> bool:
    """Whether a model's rows hold several candidates (best-of-K applies)."""
    return bool(rows) and len(rows[0]["score"]) > 1


def _table2(judged: dict[str, list[dict[str, Any]]], ks: list[int]) -> dict[str, Any]:
    """Per model (and best-of-K variants): mean score, ES and ME per subset and overall."""
    out: dict[str, Any] = {}
    for name, rows in judged.items():
        single = name in BASELINES or not _sampled(rows)
        variants = [(name, 1)] if single else [(name, 1)] + [(f"{name} + best-of-{k}", k) for k in ks if k > 1]
        for label, k in variants:
            per: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
            for r in rows:
                i = _pick(r, k) if k > 1 else 0
                for subset in (r["subset"], "all"):
                    per[subset]["score"].append(r["score"][i])
                    per[subset]["es"].append(r["es"][i])
                    per[subset]["me"].append(r["me"][i])
            out[label] = {s: {m: statistics.fmean(v) for m, v in d.items()} | {"n": len(d["score"])}
                          for s, d in per.items()}
        if not single:
            oracle: dict[str, list[float]] = defaultdict(list)
            for r in rows:
                for subset in (r["subset"], "all"):
                    oracle[subset].append(max(r["score"][: max(ks)]))
            out[f"{name} oracle best-of-{max(ks)}"] = {s: {"score": statistics.fmean(v), "n": len(v)}
                                                        for s, v in oracle.items()}
    return out


def _plot_k(judged: dict[str, list[dict[str, Any]]], ks: list[int], path: Path) -> None:
    """Figure 7: judge score against K for best-of-K with the CDM, per world model (mean ± std
    over bootstrap resamples of the test samples)."""
    import random

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, rows in judged.items():
        if name in BASELINES or not _sampled(rows):
            continue
        means, stds = [], []
        for k in ks:
            vals = [r["score"][_pick(r, k)] for r in rows]
            rng = random.Random(0)
            boots = [statistics.fmean(rng.choices(vals, k=len(vals))) for _ in range(200)]
            means.append(statistics.fmean(vals))
            stds.append(statistics.pstdev(boots))
        ax.errorbar(ks, means, yerr=stds, marker="o", capsize=3, label=name)
    copy = statistics.fmean(r["score"][0] for r in judged["Copy"])
    ax.axhline(copy, color="grey", ls="--", lw=0.8, label="Copy")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("K (candidates ranked by the CDM)")
    ax.set_ylabel("world-judge score (0-10)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _paired_p(x: list[float], y: list[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of paired per-sample values (None without pairs)."""
    from worldboot.evaluate.human import wilcoxon_paired

    pairs = [(a, b) for a, b in zip(x, y, strict=True) if a is not None and b is not None]
    if not pairs:
        return None
    return wilcoxon_paired([a for a, _ in pairs], [b for _, b in pairs])[1]


def _chance_p(hits: list[float], chance: float) -> float | None:
    """Two-sided exact binomial p-value of ``sum(hits)`` successes in ``len(hits)`` against chance."""
    from scipy.stats import binomtest

    return binomtest(int(sum(hits)), len(hits), chance).pvalue if hits else None


def _verdict(better: bool, p: float | None) -> str:
    """``held``, ``did not hold`` or ``not significant`` (``p >= ALPHA``, either direction).

    Without a p-value (a deterministic check, or a run from before per-sample results were kept)
    the direction alone decides.
    """
    if p is not None and p >= ALPHA:
        return "not significant"
    return "held" if better else "did not hold"


def _per_sample(judged: dict[str, list[dict[str, Any]]], name: str, metric: str, k: int = 1) -> dict[str, float]:
    """Test id -> the judge's ``metric`` of ``name``'s best-of-``k`` candidate."""
    return {r["id"]: r[metric][_pick(r, k) if k > 1 else 0] for r in judged[name]}


def _claims(state: dict[str, Any], table2: dict[str, Any], ks: list[int],
            judged: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The paper's claims, each with the numbers of this run, a p-value and a verdict.

    A comparison of two models is a two-sided Wilcoxon signed-rank test over the test triplets
    (paired: both models on the same triplet); the multiple-choice claim also tests against
    chance (exact binomial), and the claim's p-value is the larger of its tests'. A claim
    ``held`` when its direction is right and ``p < ALPHA``; ``not significant`` when
    ``p >= ALPHA`` (this run cannot tell); ``did not hold`` when the difference is significant
    the other way.
    """
    kmax = max(ks)
    cdm = state["cdm"]["result"]
    score = {name: v["all"]["score"] for name, v in table2.items()}
    es = {name: v["all"].get("es") for name, v in table2.items()}
    me = {name: v["all"].get("me") for name, v in table2.items()}

    def es_me(a: str, b: str) -> str:
        # The two criteria behind a score gap (Table 3): what each model gained and lost.
        return f" (ES {es[a]:.2f} vs {es[b]:.2f}, ME {me[a]:.2f} vs {me[b]:.2f})"

    base_m, cdm_m = cdm["Chameleon ZS (base)"], cdm["CDM"]
    base_s, cdm_s = base_m.get("per_sample", {}), cdm_m.get("per_sample", {})
    has_samples = bool(base_s) and bool(cdm_s)

    def cdm_p(metric: str) -> float | None:
        return _paired_p(cdm_s[metric], base_s[metric]) if has_samples else None

    def world_p(a: str, b: str, metric: str = "score", ka: int = 1) -> float | None:
        x, y = _per_sample(judged, a, metric, ka), _per_sample(judged, b, metric)
        return _paired_p([x[i] for i in y], list(y.values()))

    cdm_acc, base_acc = cdm_m["action_accuracy"], base_m["action_accuracy"]
    cdm_slots, base_slots = cdm_m.get("slot_accuracy", 0.0), base_m.get("slot_accuracy", 0.0)
    cdm_choice, base_choice = cdm_m.get("choice_accuracy", 0.0), base_m.get("choice_accuracy", 0.0)
    cwm_success = (es["CWM"] or 0.0) / 10.0
    text_better = all((cdm_m.get(m) or 0) > (base_m.get(m) or 0) for m in ("bertscore", "rougeL"))
    text_ps = [cdm_p(m) for m in ("bertscore", "rougeL")]
    choice_ps = [cdm_p("choice"), _chance_p(cdm_s["choice"], 1 / CHOICES) if has_samples else None]
    easier_p = None
    if has_samples:
        cwm_es = _per_sample(judged, "CWM", "es")
        easier_p = _paired_p(cdm_s["slot"], [cwm_es[i] / 10.0 for i in cdm_s["ids"]])

    def worst(ps: list[float | None]) -> float | None:
        return None if any(p is None for p in ps) else max(ps)  # type: ignore[type-var]

    rows = [
        ("Fine-tuning makes Chameleon a much better dynamics model than zero-shot (Table 1 metrics)",
         text_better, worst(text_ps),
         f"BERTScore {_fmt(base_m.get('bertscore'))} -> {_fmt(cdm_m.get('bertscore'))}, ROUGE-L "
         f"{_fmt(base_m.get('rougeL'))} -> {_fmt(cdm_m.get('rougeL'))} (base -> CDM)"),
        ("The fine-tuned CDM names the exact action (the world's stricter test)",
         cdm_acc > base_acc, cdm_p("exact"), f"action accuracy {base_acc:.2f} (base) -> {cdm_acc:.2f} (CDM)"),
        ("The fine-tuned CDM gets the parts of the action right (which object, which change)",
         cdm_slots > base_slots, cdm_p("slot"), f"slot accuracy {base_slots:.2f} (base) -> {cdm_slots:.2f} (CDM)"),
        ("The fine-tuned CDM reads the change between the two images (picks the true action among "
         f"{CHOICES} that can happen in the scene more often than the base and than chance, {1 / CHOICES:.2f})",
         cdm_choice > max(base_choice, 1 / CHOICES), worst(choice_ps),
         f"choice accuracy {base_choice:.2f} (base) -> {cdm_choice:.2f} (CDM)"),
        ("The CDM is easier to learn than the CWM at equal compute (Section 1)",
         cdm_slots > cwm_success, easier_p,
         f"after the same steps and batch, partial credit on both sides: CDM slot accuracy "
         f"{cdm_slots:.2f} vs CWM editing success {cwm_success:.2f} (ES / 10)"),
        ("The CWM (synthetic data + weighted loss) beats C-FT (Table 2)",
         score["CWM"] > score["C-FT"], world_p("CWM", "C-FT"),
         f"score {score['CWM']:.2f} vs {score['C-FT']:.2f}" + es_me("CWM", "C-FT")),
        ("The recognition-weighted loss raises editing success (Table 3)",
         (es["CWM"] or 0) > (es["CWM w/o weighted loss"] or 0), world_p("CWM", "CWM w/o weighted loss", "es"),
         f"ES {es['CWM']:.2f} with vs {es['CWM w/o weighted loss']:.2f} without (ME {me['CWM']:.2f} vs "
         f"{me['CWM w/o weighted loss']:.2f})"),
        ("Synthetic data from the CDM helps the CWM (ablation)",
         score["CWM"] > score["CWM w/o synthetic"], world_p("CWM", "CWM w/o synthetic"),
         f"score {score['CWM']:.2f} with vs {score['CWM w/o synthetic']:.2f} without"
         + es_me("CWM", "CWM w/o synthetic")),
    ] + ([] if kmax < 2 else [
        (f"Best-of-N with the CDM raises C-FT's score (Figure 7, K={kmax})",
         score[f"C-FT + best-of-{kmax}"] > score["C-FT"], world_p("C-FT", "C-FT", ka=kmax),
         f"score {score['C-FT']:.2f} (K=1) -> {score[f'C-FT + best-of-{kmax}']:.2f} (K={kmax})"
         + es_me(f"C-FT + best-of-{kmax}", "C-FT")),
    ]) + [
        ("Copy gets no editing success from the judge (sanity check)",
         (es["Copy"] or 0) == 0.0, None, f"Copy ES {es['Copy']:.2f}"),
    ]
    out = []
    for claim, better, p, evidence in rows:
        verdict = _verdict(better, p)
        out.append({"claim": claim, "verdict": verdict, "held": verdict == "held", "p": p,
                    "evidence": evidence + ("" if p is None else f"; p = {p:.2g}")})
    return out


def _fmt(x: Any) -> str:
    return f"{x:.2f}" if isinstance(x, float) else str(x)


def _finetuning_note(cfg: DemoConfig) -> str:
    """One sentence on how the CDM and the world models were fine-tuned, against the paper's LoRA."""

    def how(s: TrainSettings) -> str:
        return f"LoRA r{s.lora_r}, alpha {2 * s.lora_r}, dropout 0.05" if s.lora else "every weight"

    note = (f"Fine-tuning: the CDM trains {how(cfg.cdm)} ({cfg.cdm.steps} steps), each world model "
            f"{how(cfg.cwm)} ({cfg.cwm.steps} steps); the paper trains LoRA r16, alpha 32, dropout 0.05.")
    if not (cfg.cdm.lora and cfg.cwm.lora):
        note += (" The tiny base learns too little through LoRA adapters in these few steps (measured in "
                 "docs/results.md), so the demo trains every weight; Anole-7B runs use the paper's LoRA "
                 "(configs/anole7b/).")
    return note


def _markdown(demo: Demo, table2: dict[str, Any], ks: list[int], claims: list[dict[str, Any]]) -> str:
    st = demo.state
    cfg = demo.cfg
    lines = ["# worldboot demo: the paper in miniature", "",
             f"Procedural world, tiny Chameleon base `{st['base']['result']['path']}` (preset "
             f"`{cfg.base_preset}`), {st['data']['result']['train']} labelled training triplets, "
             f"{st['data']['result']['test']} test triplets, {st['data']['result']['clips']} unlabelled clips.", "",
             _finetuning_note(cfg), "",
             "## Which of the paper's claims held on this run", ""]
    for c in claims:
        lines.append(f"- **{c['verdict']}**: {c['claim']}. {c['evidence']}.")
    n = st["data"]["result"]["test"]
    lines += ["", f"p: two-sided Wilcoxon signed-rank test over the {n} test triplets, paired (the two models "
              f"on the same triplet); the choice claim also tests against chance (exact binomial) and "
              f"reports the larger p. **held**: the right direction with p < {ALPHA}; **not significant**: "
              f"p >= {ALPHA}, this run cannot tell; **did not hold**: significant the other way. "
              "A claim that did not hold here is a measurement of this run, not a verdict on the paper; "
              "the `paper` preset trains longer on more data.", ""]
    lines += ["## Table 1: dynamics model, action prediction on the test triplets", "",
              "| model | action accuracy | slot accuracy† | action choice‡ | BERTScore (MiniLM)* | ROUGE-1 | "
              "ROUGE-L | BLEU |",
              "|---|---|---|---|---|---|---|---|"]
    for name, m in st["cdm"]["result"].items():
        lines.append(f"| {name} | {m['action_accuracy']:.2f} | {_fmt(m.get('slot_accuracy'))} | "
                     f"{_fmt(m.get('choice_accuracy'))} | "
                     f"{_fmt(m.get('bertscore'))} | {_fmt(m.get('rouge1'))} | {_fmt(m.get('rougeL'))} | "
                     f"{_fmt(m.get('bleu'))} |")
    lines += ["", "*BERTScore with the offline MiniLM-L6 model: not comparable with roberta-large numbers.",
              "†The share of the true action's parts (family, kind, object colour and shape, steps, anchor, "
              "place, value) that the parsed text gets right; 0 for a text that names no action.",
              f"‡Multiple choice: the true action against {CHOICES - 1} others that can happen in the same "
              "source scene, picked by the model's log p(action | source, target); chance is "
              f"{1 / CHOICES:.2f}.", ""]
    subsets = sorted(k for k in table2["Copy"] if k != "all")
    lines += ["## Table 2: world models, world-judge score (0-10, min of the two criteria)", "",
              "| model | " + " | ".join(s.replace("world/", "") for s in subsets) + " | all |",
              "|---" * (len(subsets) + 2) + "|"]
    for name, per in table2.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(per[s]["score"]) if s in per else "–" for s in subsets)
                     + f" | {_fmt(per['all']['score'])} |")
    if CEILING in table2:
        lines += ["", f"The ceiling row judges the true target image after the base's tokenizer (encode, "
                  f"decode): a world model that wrote exactly the target's tokens would score "
                  f"{_fmt(table2[CEILING]['all']['score'])}."]
    lines += ["", "## Table 3: editing success (ES) and minimal editing (ME), all subsets", "",
              "| model | ES | ME | score |", "|---|---|---|---|"]
    for name, per in table2.items():
        if "es" in per["all"]:
            a = per["all"]
            lines.append(f"| {name} | {a['es']:.2f} | {a['me']:.2f} | {a['score']:.2f} |")
    lines += ["", f"Rows marked{GREEDY} decode the same model greedily (temperature 0, one candidate); the "
              "others sample at temperature 1, as the paper does."]
    stats = demo.out / "mining" / "synthetic" / "stats.md"
    mine = st["mine"]["result"]
    lines += ["", "## Table 5: mined synthetic data", "",
              f"{mine['pairs']} key-frame pairs from the clips, {mine['selected']} kept by Algorithm 1."]
    if "pair_overlap" in mine:
        lines.append(f"Share of key-frame pairs spanning a true action: {mine['pair_overlap']:.2f}; share of "
                     f"key-frames inside an action: {mine['keyframe_hit']:.2f}.")
    if stats.is_file():
        lines += ["", stats.read_text()]
    lines += ["", "## Figures", "",
              "Figure 2 (probe of the base model): ![](figures/figure2_preferences.png)", "",
              "Figure 3 (recognition weights): ![](figures/figure3_weights.png)", "",
              "Figure 7 (best-of-K with the CDM as verifier): ![](figures/figure7_best_of_k.png)", "",
              f"Examples (temperature 1; the last column is the CDM's pick of {max(demo.cfg.best_of)} CWM samples): "
              "![](figures/examples.png)", ""]
    probe_md = demo.out / "probe" / "probe.md"
    if probe_md.is_file():
        lines += ["### Probe of the base model (Figure 2 as a table)", "", probe_md.read_text(), ""]
    lines += ["## Examples", "", "| source | action | target | C-FT | CWM |", "|---|---|---|---|---|"]
    test = demo._triplets("test")
    for t in test[:: max(1, len(test) // 5)][:5]:
        rel = os.path.relpath
        cells = [f"![]({rel(t.source, demo.out)})", html.escape(t.action), f"![]({rel(t.target, demo.out)})"]
        for name in ("C-FT", "CWM"):
            p = demo.out / "predictions" / _slug(name) / f"{t.id}-0.png"
            cells.append(f"![]({rel(p, demo.out)})" if p.is_file() else "–")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Time and memory per stage", "", "| stage | seconds | peak memory (MB) |", "|---|---|---|"]
    for name in STAGES:
        if name in st:
            peak = st[name].get("peak_mb")
            lines.append(f"| {name} | {st[name]['seconds']} | {'–' if peak is None else peak} |")
    return "\n".join(lines) + "\n"


def _html(md: str, out: Path) -> str:
    """A self-contained page from the Markdown (tables, images, lists) without extra packages."""
    import re

    body, table, items = [], [], []

    def flush_table() -> None:
        if not table:
            return
        rows = [r for r in table if not re.fullmatch(r"\|(\s*-+\s*\|)+", r.replace("---", "-"))]
        body.append("<table>")
        for i, r in enumerate(rows):
            tag = "th" if i == 0 else "td"
            cells = [c.strip() for c in r.strip("|").split("|")]
            body.append("<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells) + "</tr>")
        body.append("</table>")
        table.clear()

    def flush_list() -> None:
        if items:
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            flush_list()
            if not set(line.replace("|", "").strip()) <= {"-"}:
                table.append(line)
            continue
        flush_table()
        if line.startswith("- "):
            items.append(line[2:])
            continue
        flush_list()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    flush_table()
    flush_list()
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
             "th{background:#f3f3f3}img{max-width:100%;image-rendering:pixelated}td img{width:96px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>worldboot demo</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>")


def _inline(text: str) -> str:
    import re

    text = html.escape(text, quote=False)
    text = re.sub(r"!\[\]\(([^)]+)\)", r"<img src='\1' alt=''>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
