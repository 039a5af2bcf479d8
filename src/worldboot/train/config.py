"""What every training method's config shares (:class:`TrainConfig`) and its parts, every field
documented; the YAML presets are ``configs/anole7b/`` and ``configs/demo/``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from worldboot.bounds import bounded, seed_field
from worldboot.errors import ConfigError, resolve_path

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

    def peft_config(self) -> Any:
        """peft's ``LoraConfig`` of these settings. The image tokenizer (``vqmodel``, inside
        Chameleon and Emu3) is excluded: Emu3's VQ attention has layers named ``q_proj`` too."""
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules), exclude_modules=VQ_MODULES, bias="none")


#: The modules a LoRA adapter never touches: the frozen image tokenizer's (a regex, as peft takes).
VQ_MODULES = r"(.*\.)?vqmodel\..*"


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
class TrainConfig:
    """What every training method shares. Each trainer's config adds its own fields:
    :class:`~worldboot.train.sft_config.SFTConfig` (``dynamics``, ``world``),
    :class:`~worldboot.train.rl_config.GRPOConfig` and
    :class:`~worldboot.train.rl_config.DPOConfig` (``world-rl``, ``dynamics-rl``);
    :func:`~worldboot.train.resolve.resolve_train_config` picks it from the task and objective.

    Attributes:
        task: ``dynamics`` (p(a | o_s, o_t)), ``world`` (p(o_t | o_s, a)), ``world-rl``
            (the world model trained against a frozen CDM's reward) or ``dynamics-rl`` (the
            CDM trained against a frozen world model's reward).
        base_model: Model directory to start from.
        out: Run directory.
        epochs: Passes over the mixture (fractions allowed).
        max_steps: Stop after this many optimiser steps (0 = from epochs).
        batch_size: Global batch (samples per optimiser step, over all processes; for
            ``world-rl``, (source, action) prompts, each with ``group_size`` candidates; for
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
        lora: The LoRA adapter (``lora.enabled: false`` trains every weight).
        optim: AdamW and its schedule.
        data: The mixture of token caches and its held-out split.
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
    seed: int = seed_field(0)
    trackers: list[str] = field(default_factory=list)
    lora: LoraSettings = field(default_factory=LoraSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    data: DataSettings = field(default_factory=DataSettings)


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
            (one line naming the sources); one folder under two names (:func:`dedupe_caches`).
    """
    for word in caches:
        if not word.partition("=")[2 if "=" in word and not Path(word).exists() else 0].strip():
            raise ConfigError(f"--cache {word!r} names no folder (an unset shell variable?)")
    caches, _ = dedupe_caches(caches)
    if not sources:
        out = []
        for word in caches:
            name, sep, path = word.partition("=")
            named = bool(sep) and bool(name) and not Path(word).exists()
            if named and name in {s.name for s in out}:
                raise ConfigError(f"--cache {word}: the name {name!r} is given twice (each source is one cache)")
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


def dedupe_caches(caches: Sequence[str]) -> tuple[list[str], list[str]]:
    """The ``--cache`` words with a folder given again dropped, and a note on each one dropped.

    The same folder twice (``--cache runs/c --cache ./runs/c/``, or once by ``NAME=`` and once
    plainly) would mix its samples in twice: it is read once. One folder under two names is
    refused: two sources would read the same samples.

    Args:
        caches: The ``--cache`` words, ``NAME=DIR`` or ``DIR``, in order.

    Returns:
        The words kept, in order, and one line per word dropped.

    Raises:
        ConfigError: One folder given under two different names.
    """
    kept: list[str] = []
    notes: list[str] = []
    seen: dict[Path, tuple[str, str]] = {}  # folder -> (its first word, its name)
    for word in caches:
        name, sep, path = word.partition("=")
        if not (sep and name and not Path(word).exists()):
            name, path = "", word
        folder = resolve_path(path)
        if folder not in seen:
            seen[folder] = (word, name)
            kept.append(word)
            continue
        first, first_name = seen[folder]
        if name and first_name and name != first_name:
            raise ConfigError(f"--cache {first} and --cache {word} name one folder twice: two sources would "
                              "train on the same samples; give each source its own cache")
        notes.append(f"--cache {word} is {first} again (the same folder {folder}): its samples are read once")
    return kept, notes


def accumulation_steps(cfg: TrainConfig, processes: int) -> int:
    """Micro-batches each process accumulates per optimiser step: ``batch_size`` split into
    ``micro_batch_size`` samples on each of ``processes`` processes (GPUs).

    The trainer and ``worldboot plan`` both ask here, so a plan refuses what the run would.

    Raises:
        ConfigError: ``batch_size`` is not a multiple of ``micro_batch_size`` x ``processes``.
    """
    per_step = processes * cfg.micro_batch_size
    if cfg.batch_size % per_step:
        below = cfg.batch_size // per_step * per_step
        fits = [n for n in (below, below + per_step) if n]
        raise ConfigError(
            f"batch_size {cfg.batch_size} is not a multiple of micro_batch_size {cfg.micro_batch_size} x {processes} "
            f"processes: the global batch is split evenly over them; set batch_size to "
            f"{' or '.join(map(str, fits))}, or another micro_batch_size"
        )
    return cfg.batch_size // per_step
