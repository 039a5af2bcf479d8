"""``worldboot demo``: the paper's whole method in miniature, on the procedural world, on a CPU.

Stages, each a call into the same code the CLI stages run, each finished stage recorded in
``stages.json`` so that a rerun after a kill skips what is done:

1. ``base``: the tiny foundation model of the world (pictures and words, no dynamics),
   shipped with the package for the named presets, else
   built once and cached (:mod:`worldboot.base`).
2. ``data``: labelled train and test triplets of the five world subsets, the CDM's own
   action-recognition set (first and last frames of one-action clips), and unlabelled clips.
3. ``probe``: does the base prefer real trajectories? (Figure 2 in miniature.)
4. ``cdm``: tokenize, fine-tune the dynamics model on the labelled triplets and the recognition
   set (``configs/demo/cdm.yaml`` with the preset's overrides), and measure its actions (Table 1).
5. ``mine``: key-frames by optical flow, CDM annotation, stratified top-K (Table 5).
6. ``cwm``: C-FT (labelled only, plain loss), CWM (labelled + synthetic, weighted loss) and the
   two ablations (without synthetic data; without the weighted loss; unless ``ablations`` is
   false), equal steps each.
   ``curve``: transition success of the CDM and of C-FT against the examples each has seen.
7. ``rl`` and ``dpo``: the CWM trained with GRPO, and with DPO, against the frozen CDM's
   reward (``worldboot train world-rl``, after the paper), when the preset asks for them
   (``rl.enabled``, ``dpo.enabled``).
8. ``predict``: ``worldboot generate`` draws N candidates per test sample from each world
   model with the CDM as verifier (and one greedy decoding), and ``worldboot evaluate`` judges
   them with the world's judge; best-of-K for K in ``best_of`` (Figure 7).
9. ``report``: ``report.md`` and ``report.html`` with what each model saw, Tables 1, 2, 3, 5,
   Figures 2, 3, 7, the learning curve, example images, and which of the paper's claims held on
   this run: each claim's comparison is a paired test over the test triplets (exact McNemar or
   Wilcoxon signed-rank), so a verdict is ``held``, ``did not hold`` or ``not significant``
   (:func:`worldboot.demo.claims.claims`).

(Just over 400 lines: one class, one method per stage; the report's and the predictions' helpers
live in report.py and predictions.py.)
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worldboot.demo.actions import measure_actions, mined_label_precision
from worldboot.demo.claims import claims
from worldboot.demo.config import (
    ABLATIONS,
    CEILING,
    GREEDY,
    REWARD_MODELS,
    STAGES,
    WORLD_MODELS,
    DemoConfig,
    TrainRecipe,
    check_training,
)
from worldboot.demo.curve import measure_curve, plot_curve, snapshot_steps
from worldboot.demo.finetune import finetune, reward_optimise, train_config
from worldboot.demo.markdown import markdown
from worldboot.demo.memory import PeakMemory
from worldboot.demo.predictions import add_transitions, write_ceiling
from worldboot.demo.report import (
    judged_rows,
    plot_examples,
    plot_k,
    slug,
    table2,
    to_html,
    trained,
)
from worldboot.runs import RunDir, read_jsonl, write_atomic

if TYPE_CHECKING:
    from worldboot.train.config import TrainConfig


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

    def use_threads(self) -> None:
        """Sets torch's thread count to the config's ``torch_threads`` (0: leaves torch's own);
        :meth:`run` calls it, and so does a script that runs stages one by one."""
        import torch

        if self.cfg.torch_threads:
            torch.set_num_threads(self.cfg.torch_threads)

    # -- bookkeeping ------------------------------------------------------------------------

    def _done(self, name: str, result: dict[str, Any], seconds: float, peak_mb: float | None = None) -> None:
        self.state[name] = {"result": result, "seconds": round(seconds, 1), "peak_mb": peak_mb}
        write_atomic(self.state_path, json.dumps(self.state, indent=2))

    def _forget_after(self, name: str) -> None:
        # A stage that runs now makes every later one stale (say a stage added since the run
        # was made: its model would miss the predictions and the report), so they run again.
        later = [s for s in STAGES[STAGES.index(name) + 1 :] if s in self.state and s != "report"]
        if later:
            for s in later:
                del self.state[s]
            write_atomic(self.state_path, json.dumps(self.state, indent=2))
            self.say(f"[{name}] runs, so {', '.join(later)} will run again after it")

    def check_resume(self) -> None:
        """Refuse to resume a run made with other settings: its finished stages would be
        skipped and the report would name settings they were not trained with.

        Raises:
            ConfigError: One line naming the keys that differ (keys the saved config lacks,
                from an older worldboot, are not compared).
        """
        import yaml

        from worldboot.config import dump_yaml, read_yaml
        from worldboot.errors import ConfigError

        saved = self.out / "config.yaml"
        if not self.state or not saved.is_file():
            return

        def flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
            out: dict[str, Any] = {}
            for k, v in tree.items():
                out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
            return out

        old, new = flat(read_yaml(saved)), flat(yaml.safe_load(dump_yaml(self.cfg)))
        changed = [f"{k}: {old[k]} -> {new[k]}" for k in new if k in old and old[k] != new[k]]
        if changed:
            raise ConfigError(
                f"{self.out} holds a demo run made with other settings ({'; '.join(changed)}): rerun with "
                "--fresh to start it over, or choose another --out"
            )

    def run(self) -> Path:
        """Run every stage not yet done, and every stage after one that runs (the report
        always); returns the path of ``report.md``.

        Raises:
            ConfigError: When ``out`` holds a run made with other settings (:meth:`check_resume`).
        """
        self.check_resume()
        check_training(self.cfg)  # a mistake in a training run's words, before any stage
        if "cdm" in self.state and "transition_success" not in self.state["cdm"]["result"].get("CDM", {}):
            del self.state["cdm"]  # measured by an older worldboot, without transition success: again
        self.use_threads()
        with RunDir(self.out, self.cfg, "demo") as run:
            for name in STAGES:
                if name in self.state and name != "report":
                    self.say(f"[{name}] done before ({self.state[name]['seconds']} s), skipped")
                    continue
                self.say(f"[{name}] ...")
                self._forget_after(name)
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
        from worldboot.base import get_world_base

        path = get_world_base(self.cfg.base_preset, progress=False)
        return {"path": str(path)}

    @property
    def base_dir(self) -> str:
        return self.state["base"]["result"]["path"]

    def stage_data(self) -> dict[str, Any]:
        from worldboot.world.gen import generate_clips, generate_triplets
        from worldboot.world.recognition import generate_recognition, triplet_keys

        c = self.cfg
        data = self.out / "data"
        train = generate_triplets(data / "train", c.train_per_subset, seed=c.seed, paraphrase=c.paraphrase)
        test = generate_triplets(data / "test", c.test_per_subset, seed=c.seed + 1000)
        # The CDM's own action-recognition set: never a transition the world models train on
        # or the test triplets hold.
        recognition = generate_recognition(data / "recognition", c.recognition_per_subset, seed=c.seed + 3000,
                                           size=c.clip_size, exclude=triplet_keys(train) | triplet_keys(test),
                                           per_source=c.recognition_per_source)
        clips = generate_clips(data / "clips", c.clips, seed=c.seed + 2000, size=c.clip_size)
        return {"train": len(train), "test": len(test), "recognition": len(recognition), "clips": len(clips)}

    def triplets(self, split: str):
        from worldboot.data.schema import read_manifest

        return read_manifest(self.out / "data" / split / "manifest.jsonl")

    def stage_probe(self) -> dict[str, Any]:
        from worldboot.evaluate.probe import ProbeConfig, probe, write_report
        from worldboot.models import load_backbone

        cfg = ProbeConfig(max_per_subset=self.cfg.probe_per_subset, batch_size=16, seed=self.cfg.seed)
        rows = probe(self.triplets("test"), load_backbone(self.base_dir), cfg)
        summary = write_report(rows, self.out / "probe")
        return {"comparisons": len(rows), "cells": [c for c in summary["cells"] if c["subset"] == "all"]}

    def train_config(self, name: str) -> TrainConfig:
        """The resolved training config of the model ``name``: ``CDM``, a row of
        :data:`WORLD_MODELS` or of :data:`REWARD_MODELS`."""
        c, caches = self.cfg, self.out / "cache"
        base = self.base_dir
        if name == "CDM":
            use = [caches / "labelled"] + ([caches / "recognition"] if c.recognition_per_subset else [])
            return train_config(c.cdm, task="dynamics", base=base, out=self.out / "cdm", caches=use, seed=c.seed,
                                extra=self._snapshots(c.cdm))
        if name in WORLD_MODELS:
            synthetic, weighting = WORLD_MODELS[name]
            use = [caches / "labelled"] + ([caches / "synthetic"] if synthetic else [])
            return train_config(c.cwm, task="world", base=base, out=self.out / "cwm" / slug(name), caches=use,
                                seed=c.seed, extra=[f"loss.weighting={weighting}",
                                                    *(self._snapshots(c.cwm) if name == "C-FT" else [])])
        key, objective = next((k, o) for k, (row, o) in REWARD_MODELS.items() if row == name)
        r = getattr(c, key)
        return train_config(r, task="world-rl", base=self.out / "cwm" / slug("CWM"), out=self.out / "cwm" / slug(name),
                            caches=[caches / p for p in r.prompts], seed=c.seed, verifier=self.out / "cdm",
                            objective=objective)

    def _snapshots(self, recipe: TrainRecipe) -> list[str]:
        """The ``snapshot_steps`` word of a run on the learning curve (none without a curve)."""
        if self.cfg.curve_points < 2:
            return []
        steps = train_config(recipe, task=None, base="", out=self.out, caches=[], seed=self.cfg.seed).max_steps
        return [f"snapshot_steps={snapshot_steps(steps, self.cfg.curve_points)}"]

    def _cache(self, triplets, name: str) -> Path:
        from worldboot.data.tokenize import build_cache
        from worldboot.models import load_backbone

        path = self.out / "cache" / name
        # 64 images an encoder call: twice the throughput of 16 on 2 cores (the tiny VQ encoder).
        build_cache(triplets, load_backbone(self.base_dir), path, batch_size=64, progress=False)
        return path

    def stage_cdm(self) -> dict[str, Any]:
        from worldboot.models import load_backbone

        self._cache(self.triplets("train"), "labelled")
        if self.cfg.recognition_per_subset:
            self._cache(self.triplets("recognition"), "recognition")
        finetune(self.train_config("CDM"))
        test = self.triplets("test")
        return {name: measure_actions(load_backbone(path), test, self.cfg.seed,
                                      self.out / "cdm_actions" / f"{slug(name)}.jsonl")
                for name, path in (("Chameleon ZS (base)", self.base_dir), ("CDM", self.out / "cdm"))}

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
        precision = mined_label_precision(mining, self.out / "data" / "clips")
        return {"videos": getattr(summary, "videos", None), "pairs": len(rows), "selected": len(synthetic),
                **quality, "label_precision": precision, "select": {k: v for k, v in asdict(sel).items() if isinstance(v, (int, float, str))}}

    @staticmethod
    def _read(path: Path):
        from worldboot.data.schema import read_manifest

        return read_manifest(path)

    def stage_cwm(self) -> dict[str, Any]:
        out = {}
        for name in self.trained_world_models():
            cfg = self.train_config(name)
            finetune(cfg)
            rows = [row for _, row in read_jsonl(Path(cfg.out) / "metrics.jsonl")]
            out[name] = {"final_loss": next(r["loss"] for r in reversed(rows) if "loss" in r)}
        return out

    def stage_curve(self) -> dict[str, Any]:
        """Transition success of the CDM and of C-FT against the examples each has seen
        (:mod:`worldboot.demo.curve`); skipped when ``curve_points`` is below 2."""
        if self.cfg.curve_points < 2:
            return {"skipped": "curve_points is below 2"}
        runs = {}
        for name in ("CDM", "C-FT"):
            t = self.train_config(name)
            runs[name] = (Path(t.out), t.max_steps, t.batch_size)
        return measure_curve(self.base_dir, runs, self.triplets("test"), self.cfg.seed)

    def stage_rl(self) -> dict[str, Any]:
        """The CWM trained with GRPO against the frozen CDM (``worldboot train world-rl``): a
        LoRA adapter, the CWM without it as the reference; skipped unless ``rl.enabled``."""
        return self._reward("rl")

    def stage_dpo(self) -> dict[str, Any]:
        """The CWM trained with DPO against the frozen CDM (each group's best and worst
        candidate as the pair); skipped unless ``dpo.enabled``."""
        return self._reward("dpo")

    def _reward(self, key: str) -> dict[str, Any]:
        r = getattr(self.cfg, key)
        if not r.enabled:
            return {"skipped": f"{key}.enabled is false"}
        return reward_optimise(self.train_config(REWARD_MODELS[key][0]), r.prompts)

    def reward_models(self) -> list[str]:
        """The rows of :data:`REWARD_MODELS` this run trains (``enabled``)."""
        return [row for key, (row, _) in REWARD_MODELS.items() if getattr(self.cfg, key).enabled]

    def trained_world_models(self) -> list[str]:
        """The rows of :data:`WORLD_MODELS` this run trains: all four, or without
        :data:`ABLATIONS` when ``ablations`` is false."""
        return [name for name in WORLD_MODELS if self.cfg.ablations or name not in ABLATIONS]

    def world_models(self) -> list[str]:
        """The world models of this run: those of :meth:`trained_world_models`, and the CWM
        after each reward optimisation the preset trains."""
        return [*self.trained_world_models(), *self.reward_models()]

    def stage_predict(self) -> dict[str, Any]:
        """Each world model through ``worldboot generate`` (N candidates at temperature 1, the
        CDM as verifier, and one greedy decoding), the true targets through the tokenizer,
        then ``worldboot evaluate`` with the world judge over all of them."""
        from worldboot.config import load_config, preset_file
        from worldboot.evaluate.run import EvaluateConfig, run_evaluation
        from worldboot.infer.generate import GenerateConfig, run_generate
        from worldboot.infer.predict import VerifierSettings
        from worldboot.infer.verify import Verifier
        from worldboot.models import load_backbone
        from worldboot.models.backbone import SamplingConfig

        manifest = self.out / "data" / "test" / "manifest.jsonl"
        folder = self.out / "predictions"
        n = max(self.cfg.best_of)
        preds: dict[str, str] = {CEILING: str(write_ceiling(self.base_dir, self.triplets("test"), folder / "ceiling"))}
        verifier = Verifier(load_backbone(self.out / "cdm"))
        for name in self.world_models():
            path = self.out / "cwm" / slug(name)
            world = load_backbone(path)
            runs = [(name, n, 1.0, verifier), (name + GREEDY, 1, 0.0, None)]
            if name in self.reward_models():  # its point is one sample: best-of-N is its comparison
                runs = [(name, 1, 1.0, None)]
            for label, best_of, temperature, verify in runs:
                # Greedy decoding beside the paper's temperature 1: how much of a model's
                # minimal-editing loss is sampling noise (the paper: lower temperatures copy).
                cfg = GenerateConfig(
                    manifest=str(manifest), out=str(folder / slug(label)), world=str(path), best_of=best_of,
                    sampling=SamplingConfig(temperature=temperature), seed=self.cfg.seed,
                    verifier=VerifierSettings(path=str(self.out / "cdm") if verify else None),
                )
                run_generate(cfg, shard=(0, 1), world=world, verifier=verify, progress=False)
                preds[label] = cfg.out
            del world
        evaluation = load_config(
            EvaluateConfig, preset_file("evaluate", "world"),
            flags={"bench": str(manifest), "out": str(folder / "evaluate"), "preds": preds},
        )
        result = run_evaluation(evaluation, show_progress=False)
        judged = judged_rows(read_jsonl(result["results"]), ["Copy", *preds])
        add_transitions(self.out, self.triplets("test"), judged)
        write_atomic(folder / "judged.json", json.dumps(judged))
        return {"models": list(judged), "samples": len(self.triplets("test")), "candidates": n}

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
        t2 = table2(judged, ks)
        plot_k(judged, ks, figures / "figure7_best_of_k.png")
        plot_examples(self, figures / "examples.png")
        if "skipped" not in self.state["curve"]["result"]:
            plot_curve(self.state["curve"]["result"], figures / "learning_curve.png")
        verdicts = claims(self.state, t2, ks, judged, {name: trained(self, name) for name in ("CDM", "CWM")})
        md = markdown(self, t2, ks, verdicts)
        write_atomic(self.out / "report.md", md)
        write_atomic(self.out / "report.html", to_html(md))
        return {"claims": verdicts}
