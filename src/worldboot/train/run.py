"""``run_training``: the trainer of a task, set up, trained, saved and cleaned up, its run
recorded in ``cfg.out``.

The table from task to trainer lives here, above the trainers, so that the SFT recipe
(:mod:`worldboot.train.recipes`) does not import the RL recipes built on it.
"""

from __future__ import annotations

import os

from worldboot.errors import ConfigError
from worldboot.runs import RunDir
from worldboot.train.config import TrainConfig
from worldboot.train.engine import describe
from worldboot.train.recipes import Trainer
from worldboot.train.resolve import CONFIGS
from worldboot.train.rl import RLTrainer
from worldboot.train.rl_dynamics import DynamicsRLTrainer

#: The trainer of each ``task``.
TRAINERS: dict[str, type[Trainer]] = {
    "dynamics": Trainer,
    "world": Trainer,
    "world-rl": RLTrainer,
    "dynamics-rl": DynamicsRLTrainer,
}


def run_training(cfg: TrainConfig, resume: bool | str = False, merge: bool = False) -> dict[str, float]:
    """Set up, train, save (and merge), clean up; records the run in ``cfg.out``.

    Raises:
        ConfigError: ``cfg`` is not the config class of its task and objective
            (:data:`~worldboot.train.resolve.CONFIGS`), e.g. a bare ``TrainConfig``.
    """
    wanted = CONFIGS.get((cfg.task, getattr(cfg, "objective", None)))
    if wanted is None or not isinstance(cfg, wanted):
        names = [wanted.__name__] if wanted else sorted({c.__name__ for (t, _), c in CONFIGS.items() if t == cfg.task})
        raise ConfigError(f"task {cfg.task} trains with a {' or '.join(names)}, got a {type(cfg).__name__} "
                          "(worldboot.train.resolve.resolve_train_config makes it)")
    recipe = TRAINERS[cfg.task](cfg, resume=resume)
    try:
        # Launched processes share the folder: the first (RANK 0, or the only one) writes its files.
        writer = os.environ.get("RANK", "0") == "0"
        with RunDir(cfg.out, cfg, f"train-{cfg.task}", writer=writer) as run:
            recipe.setup()
            mixture = recipe.data.summary(cfg.data)
            run.record("mixture", mixture, ["The mixture trained (after caps and repeats):", *(
                f"  {m['name']}: {m['cache']}, {m['train']} training and {m['held_out']} held-out samples"
                + (f", capped {m['max_per_subset']}" if m["max_per_subset"] else "")
                + (f", repeats {m['repeats']:g}" if m["repeats"] != 1 else "") for m in mixture)])
            run.log(f"{cfg.task}: {len(recipe.data.train)} train / {len(recipe.data.eval)} held-out samples, "
                    f"{recipe.n_trainable:,} trainable parameters, {recipe.total_steps} steps; "
                    f"{describe(recipe.accelerator)}")
            result = recipe.train()
            if merge:
                recipe.merge()
            run.log(f"done: {result}")
            return result
    finally:
        recipe.cleanup()
