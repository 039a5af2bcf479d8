"""How the demo trains its models: each a ``configs/demo/*.yaml`` training preset with the demo
preset's dotted overrides (:class:`~worldboot.demo.config.TrainRecipe`), resolved as ``worldboot
train`` resolves its words and run through the same recipe."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worldboot.demo.config import TrainRecipe
from worldboot.runs import read_jsonl

if TYPE_CHECKING:
    from worldboot.train.config import TrainConfig
    from worldboot.train.rl_config import DPOConfig, GRPOConfig


def train_config(recipe: TrainRecipe, *, task: str | None, base: str | Path, out: Path, caches: Sequence[Path],
                 seed: int, extra: Sequence[str] = (), verifier: str | Path | None = None,
                 objective: str | None = None) -> TrainConfig:
    """The config of one demo run: exactly ``worldboot train TASK --config RECIPE.config --base
    BASE --cache C... --out OUT [--verifier V --objective O] RECIPE.overrides... EXTRA... seed=SEED``.

    Args:
        recipe: The preset and the demo's overrides on it.
        task: The command's task (None: the preset's own).
        base: The model to start from.
        out: The run directory.
        caches: Token caches (they replace the preset's sources).
        seed: The demo's seed (a last override, as ``seed=N``).
        extra: Overrides of this row of the demo (``loss.weighting=none`` for C-FT).
        verifier: The frozen model that rewards (reward optimisation).
        objective: ``grpo`` or ``dpo`` (reward optimisation).
    """
    from worldboot.train.resolve import resolve_train_config

    rl = {"verifier": str(verifier), "objective": objective} if verifier else {}
    return resolve_train_config(recipe.config, [*recipe.overrides, *extra, f"seed={seed}"], task=task,
                                base=base, out=out, caches=caches, **rl)


def finetune(cfg: TrainConfig) -> None:
    """Train ``cfg`` into ``cfg.out``; an unfinished run of a killed demo starts over (``out`` is
    deleted first)."""
    from worldboot.train.run import run_training

    if Path(cfg.out).exists():
        shutil.rmtree(cfg.out)
    run_training(cfg)


def reward_optimise(cfg: GRPOConfig | DPOConfig, prompts: Sequence[str]) -> dict[str, Any]:
    """GRPO or DPO (``cfg.objective``) on the CWM against the frozen CDM (``worldboot train
    world-rl``): a LoRA adapter, the world model without it as the reference.

    Returns:
        The settings, the mean reward of the training samples over the first and the last
        fifth of the steps, the mean spread of the rewards within a group, and the last KL to
        the reference (GRPO; None for DPO, which logs none).
    """
    finetune(cfg)
    rows = [row for _, row in read_jsonl(Path(cfg.out) / "metrics.jsonl") if "reward" in row]
    fifth = max(1, len(rows) // 5)
    return {
        "steps": cfg.max_steps, "prompts": list(prompts), "objective": cfg.objective, "batch_size": cfg.batch_size,
        "group_size": cfg.group_size, "lr": cfg.optim.lr, "beta": cfg.beta,
        "reward_first": sum(x["reward"] for x in rows[:fifth]) / fifth,
        "reward_last": sum(x["reward"] for x in rows[-fifth:]) / fifth,
        "spread": sum(x["reward_spread"] for x in rows) / len(rows),
        "kl_last": rows[-1].get("kl"),
    }
