"""The demo's sizes (:class:`DemoConfig`, the ``smoke`` and ``paper`` presets) and the names
its stages, report and claims share."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from worldboot.bounds import bounded, seed_field
from worldboot.config import load_preset
from worldboot.errors import ConfigError

STAGES = ("base", "data", "probe", "cdm", "mine", "cwm", "curve", "rl", "dpo", "predict", "report")
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
class TrainRecipe:
    """One training run of the demo: a ``worldboot train`` preset and the demo's dotted
    overrides on it, resolved as ``worldboot train --config CONFIG OVERRIDES...`` resolves them
    (:func:`worldboot.demo.finetune.train_config`).

    Attributes:
        config: The training preset, as ``--config`` takes it (``configs/demo/cdm.yaml``: the
            package's copy when no such file is in the current folder).
        overrides: Dotted overrides on it (``max_steps=200``). A word ``cdm.max_steps=100`` given
            to ``worldboot demo`` is appended here (a key of this dataclass is set instead).
    """

    config: str = "configs/demo/cdm.yaml"
    overrides: list[str] = field(default_factory=list)


@dataclass
class RewardRecipe(TrainRecipe):
    """One reward optimisation of the demo (``worldboot train world-rl``, after the paper:
    SWIRL): the CWM trained against the frozen CDM's reward, with GRPO (``DemoConfig.rl``, the
    ``CWM + GRPO`` row, ``configs/demo/world_rl.yaml``) or DPO (``DemoConfig.dpo``, the ``CWM +
    DPO`` row, ``configs/demo/world_dpo.yaml``).

    Attributes:
        enabled: Train the row (the smoke preset leaves both out).
        prompts: Which of the demo's token caches give the (source, action) prompts:
            ``labelled`` (the labelled training triplets, on which the CDM and the world models
            were trained), ``synthetic`` (the mined key-frame pairs with the CDM's own actions),
            or both. Only their source and action are read.
    """

    config: str = "configs/demo/world_rl.yaml"
    enabled: bool = False
    prompts: list[Literal["labelled", "synthetic"]] = field(default_factory=lambda: ["labelled"])


@dataclass
class DemoConfig:
    """The demo's sizes; :data:`PRESETS` names three (``default``, ``smoke`` and ``paper``, the
    package's ``configs/demo/<name>.yaml``) and :func:`load_demo_config` resolves one.

    Attributes:
        base_preset: Preset of the world foundation model (``smoke`` or ``paper``).
        seed: Seeds data, training and sampling.
        train_per_subset: Labelled training triplets per world subset (the CDM and every world
            model see them, as AURORA in the paper).
        recognition_per_subset: Action-recognition samples per subset that only the CDM sees,
            as the paper's CDM sees 15K EPIC-Kitchens samples (Appendix K): the first and last
            frames of one-action clips, canonical texts (:mod:`worldboot.world.recognition`).
        recognition_per_source: Recognition samples that share a first frame, each of another
            family (1 to 5): fewer images to render and tokenize for the same samples.
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
        ablations: Train the two ablation rows of :data:`ABLATIONS` (the CWM without synthetic
            data, without the weighted loss) and test their claims; False leaves them out
            (the default preset, for its time budget; the paper preset trains them).
        curve_points: Points of the learning curve of the CDM and of C-FT (transition success
            against examples seen: the base, ``curve_points - 1`` snapshots, the final model);
            0 or 1 draws none.
        cdm: The dynamics model's training (``worldboot train dynamics``).
        cwm: Each world model's training (``worldboot train world``; the same for all four, for
            a fair comparison, but for the loss each row names: :data:`WORLD_MODELS`).
        rl: The CWM trained with GRPO against the CDM (the ``CWM + GRPO`` row).
        dpo: The CWM trained with DPO against the CDM, on groups sampled the same way (the
            ``CWM + DPO`` row).
        torch_threads: Threads for torch (0 = torch's default).
    """

    base_preset: str = "smoke"
    seed: int = seed_field(0)
    train_per_subset: int = bounded(40, ge=1)
    recognition_per_subset: int = bounded(0, ge=0)
    recognition_per_source: int = bounded(1, ge=1, le=5)
    test_per_subset: int = bounded(6, ge=1)
    clips: int = bounded(10, ge=1)
    clip_size: int = bounded(96, ge=32)
    synthetic_k: int = bounded(60, ge=1)
    keyframes: int = bounded(6, ge=2)
    interval: int = bounded(20, ge=1)
    probe_per_subset: int = bounded(6, ge=1)
    paraphrase: bool = True
    best_of: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    curve_points: int = bounded(4, ge=0)
    ablations: bool = True
    cdm: TrainRecipe = field(default_factory=TrainRecipe)
    cwm: TrainRecipe = field(default_factory=lambda: TrainRecipe("configs/demo/cwm.yaml"))
    rl: RewardRecipe = field(default_factory=RewardRecipe)
    dpo: RewardRecipe = field(default_factory=lambda: RewardRecipe("configs/demo/world_dpo.yaml"))
    torch_threads: int = bounded(0, ge=0)

    def __post_init__(self) -> None:
        from worldboot.base.recipe import PRESETS as BASE_PRESETS

        if self.base_preset not in BASE_PRESETS:
            # Checked here, not when the base stage opens it: before the demo makes --out.
            raise ConfigError(f"base_preset: unknown base preset {self.base_preset!r}; choose from {', '.join(BASE_PRESETS)}")
        if not self.best_of or min(self.best_of) < 1:
            raise ConfigError(f"best_of: sizes of at least 1, got {self.best_of}")
        for key in REWARD_MODELS:
            r = getattr(self, key)
            if r.enabled and not r.prompts:
                raise ConfigError(
                    f"{key}.prompts is empty: name the caches that give the prompts (labelled, synthetic)")


#: Named sizes, each ``configs/demo/<name>.yaml`` inside the package (the one copy): ``default``
#: (``make demo``), ``smoke`` (the CI's end-to-end test, minutes) and ``paper`` (the paper's regime).
PRESETS = ("default", "smoke", "paper")


#: The fields of :class:`DemoConfig` that are training runs (:class:`TrainRecipe`).
TRAINING = ("cdm", "cwm", "rl", "dpo")


def load_demo_config(
    preset: str = "default", config: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()
) -> DemoConfig:
    """A preset, optionally changed by a YAML file and dotted overrides (``seed=1``).

    A word on a training run's own config (``cdm.max_steps=100``, ``cwm.optim.lr=1e-3``) is
    appended to that run's ``overrides``, after the preset's: the training config then resolves
    it as ``worldboot train`` would. A word naming a field of the run (``rl.enabled=true``,
    ``cdm.config=...``) sets the field.

    Raises:
        ConfigError: For an unknown preset or a bad key (the training run's keys are checked
            when the demo resolves each run's config, before any stage).
    """
    own = {f.name for f in dataclasses.fields(RewardRecipe)}
    plain: list[str] = []
    extra: dict[str, list[str]] = {key: [] for key in TRAINING}
    for word in overrides:
        key, dot, rest = word.partition(".")
        if dot and key in TRAINING and rest.partition("=")[0].split(".")[0].strip() not in own:
            extra[key].append(rest)
        else:
            plain.append(word)
    cfg = load_preset(DemoConfig, "demo", preset, PRESETS, config, plain, kind="demo")
    for key, words in extra.items():
        getattr(cfg, key).overrides.extend(words)
    check_training(cfg)
    return cfg


def check_training(cfg: DemoConfig) -> None:
    """Resolve each training run's preset and overrides, so that a mistake in them stops the
    demo before its first stage, not an hour in.

    Raises:
        ConfigError: One line naming the run (``cdm: ...``) and the key.
    """
    from worldboot.train.resolve import resolve_train_config

    for key in TRAINING:
        recipe = getattr(cfg, key)
        try:
            resolve_train_config(recipe.config, recipe.overrides)
        except ConfigError as err:
            raise ConfigError(f"{key} ({recipe.config}): {err}") from None


WORLD_MODELS = {
    # name: (use synthetic data, loss weighting)
    "C-FT": (False, "none"),
    "CWM": (True, "l2"),
    "CWM w/o synthetic": (False, "l2"),
    "CWM w/o weighted loss": (True, "none"),
}
#: The ablation rows of :data:`WORLD_MODELS` (``DemoConfig.ablations`` trains them).
ABLATIONS = ("CWM w/o synthetic", "CWM w/o weighted loss")
#: The rows of the CWM after reward optimisation against the CDM, by the :class:`DemoConfig`
#: field (and stage) that trains each: (row, ``worldboot train world-rl``'s objective).
REWARD_MODELS = {"rl": ("CWM + GRPO", "grpo"), "dpo": ("CWM + DPO", "dpo")}

