"""The config of supervised fine-tuning (``task: dynamics`` and ``world``), the paper's recipe
for the CDM, C-FT and the CWM: :class:`SFTConfig`, read by :class:`~worldboot.train.recipes.Trainer`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from worldboot.bounds import bounded
from worldboot.train.config import TrainConfig


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
class SFTConfig(TrainConfig):
    """Fine-tuning with the completion loss: on the action text (``dynamics``, the CDM) or on the
    target image tokens (``world``, C-FT and the CWM).

    Attributes:
        task: ``dynamics`` (p(a | o_s, o_t)) or ``world`` (p(o_t | o_s, a)).
        loss: The completion loss (the CWM's recognition weights).
    """

    task: Literal["dynamics", "world"] = "dynamics"
    loss: LossSettings = field(default_factory=LossSettings)
