"""The demo's sizes (:class:`DemoConfig`, the ``smoke`` and ``paper`` presets) and the names
its stages, report and claims share."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from worldboot.config import bounded, load_preset
from worldboot.errors import ConfigError

STAGES = ("base", "data", "probe", "cdm", "mine", "cwm", "rl", "dpo", "predict", "report")
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
class FineTuneSettings:
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

    steps: int = bounded(60, ge=1)
    batch_size: int = bounded(16, ge=1)
    micro_batch_size: int = bounded(16, ge=1)
    lr: float = bounded(2e-3, gt=0)
    lora: bool = True
    lora_r: int = bounded(16, ge=1)


@dataclass
class RewardSettings:
    """One reward optimisation of the demo (``worldboot train world-rl``, after the paper:
    SWIRL): the CWM trained against the frozen CDM's reward, with GRPO (``DemoConfig.rl``, the
    ``CWM + GRPO`` row) or DPO (``DemoConfig.dpo``, the ``CWM + DPO`` row).

    Attributes:
        steps: Optimiser steps; 0 leaves the row out (the smoke preset does).
        batch_size: (source, action) prompts per step.
        group_size: Candidates sampled per prompt (the group GRPO normalises over, or DPO's
            best and worst are taken from).
        lr: Learning rate of the LoRA adapter (constant).
        beta: How strongly the policy is held to the reference (the CWM without the adapter):
            GRPO's KL coefficient; DPO's temperature on the log-ratio margin (TRL's
            ``DPOConfig.beta``), where each group's best and worst candidate make the pair.
        prompts: Which of the demo's token caches give the (source, action) prompts:
            ``labelled`` (the labelled training triplets, on which the CDM and the world models
            were trained), ``synthetic`` (the mined key-frame pairs with the CDM's own actions),
            or both. Only their source and action are read.
    """

    steps: int = bounded(0, ge=0)
    batch_size: int = bounded(8, ge=1)
    group_size: int = bounded(8, ge=2)
    lr: float = bounded(2e-3, ge=0)
    beta: float = bounded(0.04, ge=0)
    prompts: list[Literal["labelled", "synthetic"]] = field(default_factory=lambda: ["labelled"])


@dataclass
class DemoConfig:
    """The demo's sizes; :data:`PRESETS` names two (``smoke`` and ``paper``, the package's
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
        rl: The CWM trained with GRPO against the CDM (the ``CWM + GRPO`` row; off when
            ``rl.steps`` is 0).
        dpo: The CWM trained with DPO against the CDM, on groups sampled the same way (the
            ``CWM + DPO`` row; off when ``dpo.steps`` is 0).
        torch_threads: Threads for torch (0 = torch's default).
    """

    base_preset: str = "smoke"
    seed: int = bounded(0, ge=0)
    train_per_subset: int = bounded(40, ge=1)
    test_per_subset: int = bounded(6, ge=1)
    clips: int = bounded(10, ge=1)
    clip_size: int = bounded(96, ge=32)
    synthetic_k: int = bounded(60, ge=1)
    keyframes: int = bounded(6, ge=2)
    interval: int = bounded(20, ge=1)
    probe_per_subset: int = bounded(6, ge=1)
    paraphrase: bool = True
    best_of: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    weight_mix: float = bounded(0.3, ge=0, le=1)
    cdm: FineTuneSettings = field(default_factory=FineTuneSettings)
    cwm: FineTuneSettings = field(default_factory=FineTuneSettings)
    rl: RewardSettings = field(default_factory=RewardSettings)
    dpo: RewardSettings = field(default_factory=lambda: RewardSettings(lr=5e-4, beta=0.1))
    torch_threads: int = bounded(0, ge=0)

    def __post_init__(self) -> None:
        if not self.best_of or min(self.best_of) < 1:
            raise ConfigError(f"best_of: sizes of at least 1, got {self.best_of}")
        for key in REWARD_MODELS:
            r = getattr(self, key)
            if r.steps and not r.prompts:
                raise ConfigError(
                    f"{key}.prompts is empty: name the caches that give the prompts (labelled, synthetic)")
        if self.dpo.steps and self.dpo.beta <= 0:  # before the hour of stages that precede it
            raise ConfigError(f"dpo.beta must be above 0 (DPO's temperature), got {self.dpo.beta:g}")


#: Named sizes, each ``configs/demo/<name>.yaml`` inside the package (the one copy).
PRESETS = ("smoke", "paper")


def load_demo_config(
    preset: str = "smoke", config: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()
) -> DemoConfig:
    """A preset, optionally changed by a YAML file and dotted overrides (``cdm.steps=100``).

    Raises:
        ConfigError: For an unknown preset or a bad key.
    """
    return load_preset(DemoConfig, "demo", preset, PRESETS, config, overrides, kind="demo")


WORLD_MODELS = {
    # name: (use synthetic data, loss weighting)
    "C-FT": (False, "none"),
    "CWM": (True, "l2"),
    "CWM w/o synthetic": (False, "l2"),
    "CWM w/o weighted loss": (True, "none"),
}
#: The rows of the CWM after reward optimisation against the CDM, by the :class:`DemoConfig`
#: field (and stage) that trains each: (row, ``worldboot train world-rl``'s objective).
REWARD_MODELS = {"rl": ("CWM + GRPO", "grpo"), "dpo": ("CWM + DPO", "dpo")}

