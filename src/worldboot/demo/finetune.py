"""How the demo trains its models: each a :class:`~worldboot.train.config.TrainConfig` run
through :func:`~worldboot.train.recipes.run_training`, the recipe ``worldboot train`` runs."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from worldboot.demo.config import FineTuneSettings, RewardSettings
from worldboot.runs import read_jsonl


def finetune(task: str, base: str, out: Path, caches: list[Path], s: FineTuneSettings, seed: int,
             weighting: str = "none", weight_mix: float = 0.0) -> None:
    """Fine-tune ``base`` as the CDM (``task="dynamics"``) or a world model into ``out``.

    An unfinished run of a killed demo starts over (``out`` is deleted first).
    """
    from worldboot.train.config import (
        DataSettings,
        LoraSettings,
        LossSettings,
        OptimSettings,
        SourceSettings,
        TrainConfig,
    )
    from worldboot.train.recipes import run_training

    if out.exists():
        shutil.rmtree(out)
    run_training(TrainConfig(
        task=task, base_model=base, out=str(out), max_steps=s.steps, batch_size=s.batch_size,
        micro_batch_size=s.micro_batch_size, save_every=0, eval_every=0, log_every=5, seed=seed,
        lora=LoraSettings(enabled=s.lora, r=s.lora_r, alpha=2 * s.lora_r, dropout=0.05),
        optim=OptimSettings(lr=s.lr, warmup_steps=max(1, s.steps // 20)),
        data=DataSettings(sources=[SourceSettings(cache=str(c)) for c in caches], eval_fraction=0.0),
        loss=LossSettings(weighting=weighting, uniform_mix=weight_mix),
    ))


def reward_optimise(world: Path, cdm: Path, out: Path, caches: list[Path], r: RewardSettings,
                    seed: int, objective: str = "grpo") -> dict[str, Any]:
    """GRPO or DPO (``objective``) on ``world`` against the frozen ``cdm`` (``worldboot train
    world-rl``): a LoRA adapter (r16, alpha 32, no dropout), the world model without it as the
    reference; ``r.beta`` is GRPO's KL coefficient or DPO's temperature.

    Returns:
        The settings, the mean reward of the training samples over the first and the last
        fifth of the steps, the mean spread of the rewards within a group, and the last KL to
        the reference (GRPO; None for DPO, which logs none).
    """
    from worldboot.train.config import (
        DataSettings,
        LoraSettings,
        OptimSettings,
        RLSettings,
        SourceSettings,
        TrainConfig,
    )
    from worldboot.train.recipes import run_training

    if out.exists():
        shutil.rmtree(out)
    run_training(TrainConfig(
        task="world-rl", base_model=str(world), out=str(out), max_steps=r.steps, batch_size=r.batch_size,
        micro_batch_size=r.batch_size, save_every=0, eval_every=0, log_every=1, seed=seed,
        lora=LoraSettings(r=16, alpha=32, dropout=0.0),
        optim=OptimSettings(lr=r.lr, warmup_steps=0, scheduler="constant"),
        data=DataSettings(sources=[SourceSettings(cache=str(c)) for c in caches], eval_fraction=0.0),
        rl=RLSettings(objective=objective, verifier=str(cdm), group_size=r.group_size,
                      **({"dpo_beta": r.beta} if objective == "dpo" else {"beta": r.beta})),
    ))
    rows = [row for _, row in read_jsonl(out / "metrics.jsonl") if "reward" in row]
    fifth = max(1, len(rows) // 5)
    return {
        "steps": r.steps, "prompts": list(r.prompts), "objective": objective, "batch_size": r.batch_size,
        "group_size": r.group_size, "lr": r.lr, "beta": r.beta,
        "reward_first": sum(x["reward"] for x in rows[:fifth]) / fifth,
        "reward_last": sum(x["reward"] for x in rows[-fifth:]) / fifth,
        "spread": sum(x["reward_spread"] for x in rows) / len(rows),
        "kl_last": rows[-1].get("kl"),
    }
