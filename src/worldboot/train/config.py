"""The training recipe's config (:class:`TrainConfig`) and its parts, every field documented; the YAML presets are ``configs/anole7b/`` and ``configs/demo/``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from worldboot.config import bounded
from worldboot.errors import ConfigError

ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"
CHECKPOINTS_DIR = "checkpoints"
SNAPSHOTS_DIR = "snapshots"
STATE_FILE = "trainer_state.json"


@dataclass
class LoraSettings:
    """LoRA adapter (paper: r 16, alpha 32, dropout 0.05 on the attention projections).

    Attributes:
        enabled: False trains every weight (used to pre-train tiny models).
        r: Rank.
        alpha: Scaling numerator (scale = alpha / r).
        dropout: Dropout on the adapter's input.
        target_modules: Module names to adapt; the VQ model is never adapted.
    """

    enabled: bool = True
    r: int = bounded(16, ge=1)
    alpha: int = bounded(32, gt=0)
    dropout: float = bounded(0.05, ge=0, le=1)
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class OptimSettings:
    """AdamW with warm-up and a decay schedule (paper: cosine).

    Attributes:
        lr: Peak learning rate.
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        eps: AdamW's epsilon, added to the root mean square of the gradients before dividing
            (TRL's ``adam_epsilon``). It bounds how far one step moves a weight whose gradient
            is near zero: the update's slope in the gradient is at most ``lr / eps``.
        warmup_steps: Linear warm-up steps (capped at 10% of the run for short runs).
        scheduler: ``cosine``, ``linear`` or ``constant`` after warm-up.
        max_grad_norm: Gradient clipping (0 = off).
    """

    lr: float = bounded(2e-4, gt=0)
    weight_decay: float = bounded(0.0, ge=0)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = bounded(1e-8, gt=0)
    warmup_steps: int = bounded(500, ge=0)
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    max_grad_norm: float = bounded(1.0, ge=0)

    def __post_init__(self) -> None:
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"config key 'optim.betas': two numbers in [0, 1), got {self.betas}")


@dataclass
class SourceSettings:
    """One data source of the mixture (paper Eq. 1: labelled + synthetic).

    Attributes:
        cache: A pre-tokenised cache directory (``worldboot tokenize``).
        name: The source's name: ``--cache NAME=DIR`` fills it, and logs and the run's record of
            its mixture use it (default: the folder name).
        repeats: How often each sample appears per epoch; fractions sample a seeded subset
            (0.5 = half of it), so ratios between sources are set here.
        max_per_subset: Per-subset cap applied before repeats (the paper caps Kubric at 10K).
    """

    cache: str = ""
    name: str = ""
    repeats: float = bounded(1.0, gt=0)
    max_per_subset: dict[str, int] = field(default_factory=dict)


@dataclass
class DataSettings:
    """The training mixture and its held-out split.

    Attributes:
        sources: Caches to mix.
        eval_fraction: Share of each source held out (by a hash of the sample id, so the split
            does not move when the mixture changes).
        eval_max: Most held-out samples evaluated.
    """

    sources: list[SourceSettings] = field(default_factory=list)
    eval_fraction: float = bounded(0.05, ge=0, le=1)
    eval_max: int = bounded(256, ge=0)


@dataclass
class LossSettings:
    """The completion loss.

    Attributes:
        weighting: ``l2`` = the paper's recognition-weighted loss (Eq. 2) on the world model's
            target image tokens; ``none`` = plain cross-entropy. Ignored for dynamics.
        uniform_mix: Share of uniform weight mixed into the recognition weights (0 = paper).
    """

    weighting: Literal["none", "l2"] = "none"
    uniform_mix: float = bounded(0.0, ge=0, le=1)


@dataclass
class RLSettings:
    """Reward optimisation of one model against the other, frozen (``task: world-rl`` or
    ``dynamics-rl``).

    ``world-rl``: for each (source, action) of a global batch the policy (the world model with
    a LoRA adapter) samples ``group_size`` target images; the frozen CDM scores each by the mean
    per token of log p_CDM(action | source, candidate) (the reward); the update is GRPO or DPO.
    ``dynamics-rl`` is the reverse direction (SWIRL's): for each (source, target) the policy
    (the CDM with a LoRA adapter) samples ``group_size`` action texts, and the frozen world
    model rewards each by the mean per token of log p_CWM(target | source, text).

    Attributes:
        objective: ``grpo``: group-normalised advantages, policy gradient on the sampled tokens,
            KL penalty ``beta`` to the reference; ``dpo``: the best and the worst candidate of
            each group as a preference pair, DPO loss with temperature ``dpo_beta``.
        verifier: The frozen model that rewards: the CDM's directory for ``world-rl``, the
            world model's for ``dynamics-rl`` (its image tokenizer must be the policy's).
        group_size: Candidates per (source, action); GRPO's advantages are relative to the
            group, so it needs at least 2.
        temperature: Sampling temperature of the candidates (1 = the paper's setting); the
            policy's log-probabilities are taken at the same temperature.
        beta: GRPO's KL coefficient (per-token k3 estimate of KL(policy || reference)).
        dpo_beta: DPO's temperature on the log-ratio margin.
        reward_min: Rewards are clamped to ``[reward_min, 0]``: a per-token mean log-probability
            is at most 0, and one candidate the CDM finds absurd (say -40) would otherwise set a
            group's spread alone and squash every other advantage towards zero.
        candidates: Offline DPO: a ``worldboot generate --best-of N --verifier CDM`` output
            folder whose scored candidates make the pairs (the best and the worst of each
            sample, by the same clamped reward), so nothing is sampled or scored while training.
            The prompts are the cache's samples that have candidates there. Needs ``objective:
            dpo``; ``verifier`` is then optional (given, it scores fresh samples of the held-out
            prompts at each evaluation).
        max_new_tokens: ``dynamics-rl``: most tokens of a sampled action text (one that has not
            ended by then is kept as drawn, without end-of-sequence).
    """

    objective: Literal["grpo", "dpo"] = "grpo"
    verifier: str = ""
    group_size: int = bounded(4, ge=1)
    temperature: float = bounded(1.0, gt=0)
    beta: float = bounded(0.04, ge=0)
    dpo_beta: float = bounded(0.1, gt=0)
    reward_min: float = -10.0
    candidates: str = ""
    max_new_tokens: int = bounded(32, ge=1)


@dataclass
class TrainConfig:
    """A training run of the CDM or the CWM.

    Attributes:
        task: ``dynamics`` (p(a | o_s, o_t)), ``world`` (p(o_t | o_s, a)), ``world-rl``
            (the world model trained against a frozen CDM's reward: :class:`RLSettings`) or
            ``dynamics-rl`` (the CDM trained against a frozen world model's reward).
        base_model: Model directory to start from.
        out: Run directory.
        epochs: Passes over the mixture (fractions allowed).
        max_steps: Stop after this many optimiser steps (0 = from epochs).
        batch_size: Global batch (samples per optimiser step, over all processes; for
            ``world-rl``, (source, action) prompts, each with ``rl.group_size`` candidates; for
            ``dynamics-rl``, (source, target) prompts).
        micro_batch_size: Samples per forward pass per process; accumulation fills the rest.
        mixed_precision: ``auto`` = bf16 on GPUs that have it, else none.
        model_dtype: Dtype of the frozen base weights (``auto``: bf16 on such GPUs).
        gradient_checkpointing: Recompute activations in backward to save memory.
        save_every: Checkpoint every N steps (0 = only at the end).
        snapshot_steps: Steps after which the model trained so far (the adapter, or every
            weight) is also written to ``out/snapshots/step-NNNNNNN/``, a model directory like
            the final one (for learning curves; unlike checkpoints, never pruned).
        eval_every: Held-out loss every N steps (0 = only at the end).
        log_every: Metrics line every N steps.
        keep_checkpoints: Most recent checkpoints kept.
        seed: Seeds data order, adapter initialisation and dropout.
        trackers: accelerate trackers to log to (``tensorboard``, ``wandb``...), off by default.
        rl: Reward optimisation (``task: world-rl`` or ``dynamics-rl`` only).
    """

    task: Literal["dynamics", "world", "world-rl", "dynamics-rl"] = "dynamics"
    base_model: str = ""
    out: str = "runs/train"
    epochs: float = bounded(10.0, gt=0)
    max_steps: int = bounded(0, ge=0)
    batch_size: int = bounded(64, ge=1)
    micro_batch_size: int = bounded(1, ge=1)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    model_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    gradient_checkpointing: bool = False
    save_every: int = bounded(500, ge=0)
    snapshot_steps: list[int] = field(default_factory=list)
    eval_every: int = bounded(500, ge=0)
    log_every: int = bounded(10, ge=1)
    keep_checkpoints: int = bounded(2, ge=1)
    seed: int = 0
    trackers: list[str] = field(default_factory=list)
    lora: LoraSettings = field(default_factory=LoraSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    data: DataSettings = field(default_factory=DataSettings)
    loss: LossSettings = field(default_factory=LossSettings)
    rl: RLSettings = field(default_factory=RLSettings)


def resolve_train_config(
    config: str | os.PathLike[str] | None,
    overrides: Sequence[str] = (),
    *,
    task: str | None = None,
    base: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    caches: Sequence[str | os.PathLike[str]] = (),
    **rl: Any,
) -> TrainConfig:
    """A training config as ``worldboot train TASK --config CONFIG --base BASE --cache C...
    --out OUT OVERRIDES...`` resolves it: the preset, its dotted overrides, then the flags.

    The command line and the demo both resolve through here, so a demo run is the command
    ``worldboot train`` would run with the same words.

    Args:
        config: A YAML preset (``configs/demo/cdm.yaml``) or None for the defaults.
        overrides: Dotted ``key=value`` words.
        task: ``dynamics``, ``world``, ``world-rl`` or ``dynamics-rl`` (the command's task).
        base: ``--base``.
        out: ``--out``.
        caches: ``--cache`` words, ``NAME=DIR`` or ``DIR``: they fill the config's
            ``data.sources`` by name, keeping caps and repeats (:func:`fill_sources`), or, for a
            config that lists none, make them.
        **rl: ``--verifier``, ``--objective``, ``--group-size``, ``--candidates`` as
            ``rl.verifier`` ... (None: not given).

    Raises:
        ConfigError: On a bad file, an unknown key or a wrongly typed value.
    """
    from worldboot.config import load_config

    flags: dict[str, Any] = {
        "task": task,
        "base_model": str(base) if base else None,
        "out": str(out) if out else None,
    }
    flags.update({f"rl.{key}": value for key, value in rl.items()})
    cfg = load_config(TrainConfig, config, overrides, flags=flags)
    if caches:
        cfg.data.sources = fill_sources(cfg.data.sources, [str(c) for c in caches], config)
    return cfg


def fill_sources(
    sources: Sequence[SourceSettings], caches: Sequence[str], config: str | os.PathLike[str] | None = None
) -> list[SourceSettings]:
    """The mixture after ``--cache`` words: the config's own sources, filled by name, with their
    caps and repeats kept; or, for a config that lists no source, one source per cache.

    A word is ``NAME=DIR`` (the source named NAME reads DIR) or ``DIR`` (the source whose
    ``cache`` is DIR, or whose name is DIR's folder name).

    Args:
        sources: The config's ``data.sources``.
        caches: The ``--cache`` words, in order.
        config: The config's file, for the error message.

    Raises:
        ConfigError: For a cache that fits no source of the config, or two caches for one source
            (one line naming the sources).
    """
    if not sources:
        out = []
        for word in caches:
            name, sep, path = word.partition("=")
            named = bool(sep) and bool(name) and not Path(word).exists()
            out.append(SourceSettings(cache=path, name=name) if named else SourceSettings(cache=word))
        return out
    filled = [replace(s) for s in sources]
    names = [s.name or Path(s.cache).name for s in filled]
    given: set[int] = set()
    where = f" of {config}" if config else ""
    for word in caches:
        name, sep, path = word.partition("=")
        if sep and name in names and not Path(word).exists():
            i = names.index(name)
        elif sep and name and not Path(word).exists():
            raise ConfigError(f"--cache {word}: {config or 'the config'} has no source named {name!r} "
                              f"(its sources: {', '.join(names)})")
        else:
            path = word
            matches = [i for i, s in enumerate(filled)
                       if Path(s.cache) == Path(word) or names[i] == Path(word).name]
            if not matches:
                raise ConfigError(
                    f"--cache {word} fits no source{where} ({', '.join(names)}): name the one it fills, "
                    f"e.g. --cache {names[0]}={word}")
            i = matches[0]
        if i in given:
            raise ConfigError(f"--cache gives source {names[i]!r}{where} twice")
        given.add(i)
        filled[i] = replace(filled[i], cache=path, name=names[i])
    return filled
