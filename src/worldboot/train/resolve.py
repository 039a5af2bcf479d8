"""``resolve_train_config``: the config of a training run, of the class its task and objective
name (:data:`CONFIGS`), as ``worldboot train`` and the demo resolve it."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from worldboot.config import load_config, read_yaml, shipped_or_given
from worldboot.errors import ConfigError
from worldboot.train.config import TrainConfig, fill_sources
from worldboot.train.rl_config import DPOConfig, GRPOConfig
from worldboot.train.sft_config import SFTConfig

#: The config class of each (task, objective); supervised tasks have no objective.
CONFIGS: dict[tuple[str, str | None], type[TrainConfig]] = {
    ("dynamics", None): SFTConfig,
    ("world", None): SFTConfig,
    ("world-rl", "grpo"): GRPOConfig,
    ("world-rl", "dpo"): DPOConfig,
    ("dynamics-rl", "grpo"): GRPOConfig,
    ("dynamics-rl", "dpo"): DPOConfig,
}
RL_TASKS = ("world-rl", "dynamics-rl")
#: The demo's world-rl preset of each objective, named by the refusal of a contradicting objective.
_PRESETS = {"grpo": "world_rl.yaml", "dpo": "world_dpo.yaml"}

#: The keys of the one ``rl:`` section that reward optimisation's configs had before
#: :class:`GRPOConfig` and :class:`DPOConfig`, and where each went.
_OLD_RL_KEYS = {"dpo_beta": "beta (in a DPO config)", "beta": "beta (in a GRPO config)"}


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
    --out OUT OVERRIDES...`` resolves it: the preset, its dotted overrides, then the flags, into
    the class of its task and objective (:data:`CONFIGS`).

    The command line and the demo both resolve through here, so a demo run is the command
    ``worldboot train`` would run with the same words.

    Args:
        config: A YAML preset (``configs/demo/cdm.yaml``) or None for the defaults.
        overrides: Dotted ``key=value`` words.
        task: ``dynamics``, ``world``, ``world-rl`` or ``dynamics-rl`` (the command's task).
        base: ``--base``.
        out: ``--out``.
        caches: ``--cache`` words, ``NAME=DIR`` or ``DIR``: they fill the config's
            ``data.sources`` by name, keeping caps and repeats
            (:func:`~worldboot.train.config.fill_sources`), or, for a config that lists none,
            make them.
        **rl: ``--verifier``, ``--objective``, ``--group-size``, ``--candidates`` as
            ``verifier=`` ... (None: not given).

    Raises:
        ConfigError: On a bad file, an unknown key or a wrongly typed value; an objective on the
            command line that contradicts the preset's own.
    """
    given = read_yaml(shipped_or_given(config)) if config is not None else {}
    words = _words(overrides)
    _refuse_old_layout(given, words, config)
    # An empty --out or --base (an unset shell variable) is kept, and refused later, rather
    # than taken as "not given": the preset's folder would be used (and written) instead.
    flags: dict[str, Any] = {"task": task, "base_model": None if base is None else str(base),
                             "out": None if out is None else str(out), **rl}
    task_now = _last(flags.get("task"), words.get("task"), given.get("task"), "dynamics")
    objective = None
    if task_now in RL_TASKS:
        objective = _last(flags.get("objective"), words.get("objective"), given.get("objective"), "grpo")
        own = given.get("objective")
        if own is not None and own != objective:
            raise ConfigError(
                f"{config} is a {own} preset (its settings are {str(own).upper()}'s), not {objective}: "
                f"use a {objective} preset (e.g. configs/demo/{_PRESETS[objective]}) or leave --objective out")
    if rl.get("candidates") and objective != "dpo":
        raise ConfigError("--candidates gives offline pairs, which only DPO trains on (GRPO's advantages are "
                          "those of the current policy's own samples): use a DPO preset "
                          "(configs/demo/world_dpo.yaml) or --objective dpo")
    cls = CONFIGS.get((str(task_now), objective))
    if cls is None:  # an unknown task or objective: the dataclass names the choices
        cls = CONFIGS[("world-rl", "grpo")] if task_now in RL_TASKS else SFTConfig
    cfg = load_config(cls, config, overrides, flags=flags)
    if caches:
        cfg.data.sources = fill_sources(cfg.data.sources, [str(c) for c in caches], config)
    return cfg


def _words(overrides: Sequence[str]) -> dict[str, str]:
    """The top-level ``key=value`` overrides, the last of each key winning."""
    out = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if sep:
            out[key.strip()] = raw.strip()
    return out


def _last(*values: Any) -> Any:
    """The first value that was given (flags before overrides before the file's)."""
    return next(v for v in values if v is not None)


def _refuse_old_layout(given: Mapping[str, Any], words: Mapping[str, str], config: Any) -> None:
    """An ``rl:`` section or ``rl.KEY=`` word, from before the configs per objective, gets a
    line saying where its keys went rather than "unknown key"."""
    keys = list(given["rl"]) if isinstance(given.get("rl"), Mapping) else []
    keys += [k.split(".", 1)[1] for k in words if k.startswith("rl.")]
    if "rl" in given or keys:
        moved = ", ".join(f"rl.{k} -> {_OLD_RL_KEYS.get(k, k)}" for k in keys) or "its keys to the top level"
        where = f"{config}: " if "rl" in given else ""
        raise ConfigError(f"{where}the rl: section is gone; reward optimisation's settings are top-level keys of "
                          f"GRPOConfig and DPOConfig (worldboot.train.rl_config): {moved}")
