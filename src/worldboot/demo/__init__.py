"""``worldboot demo``: the paper's whole method in miniature, on the procedural world, on a CPU.

* :mod:`~worldboot.demo.config`: the sizes (:class:`DemoConfig`, presets ``default``, ``smoke`` and ``paper``).
* :mod:`~worldboot.demo.pipeline`: :class:`Demo`, the stages, each resumable.
* :mod:`~worldboot.demo.finetune`: how the stages train the CDM, the world models and the
  CWM + GRPO / + DPO (``worldboot train``'s recipes).
* :mod:`~worldboot.demo.actions`: how the stage ``cdm`` measures the models' actions (Table 1),
  and the label precision of the mined pairs (Table 5).
* :mod:`~worldboot.demo.claims`: the paper's claims, tested on the run.
* :mod:`~worldboot.demo.report`: the report's tables and figures, and ``report.html``.
* :mod:`~worldboot.demo.markdown`: ``report.md``, section by section.

Importing this package is light (no torch): the command line reads :data:`PRESETS` from it.
"""

from worldboot.demo.config import (
    ABLATIONS,
    ALPHA,
    CEILING,
    GREEDY,
    PRESETS,
    REWARD_MODELS,
    STAGES,
    WORLD_MODELS,
    DemoConfig,
    RewardRecipe,
    TrainRecipe,
    load_demo_config,
)
from worldboot.demo.memory import PeakMemory
from worldboot.demo.pipeline import Demo

__all__ = [
    "ABLATIONS",
    "ALPHA",
    "CEILING",
    "GREEDY",
    "PRESETS",
    "REWARD_MODELS",
    "STAGES",
    "WORLD_MODELS",
    "Demo",
    "DemoConfig",
    "PeakMemory",
    "RewardRecipe",
    "TrainRecipe",
    "load_demo_config",
]
