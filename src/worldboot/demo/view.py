"""What the report reads of a demo run: the :class:`Demo` Protocol, which
:class:`worldboot.demo.pipeline.Demo` satisfies. The report's modules (:mod:`~worldboot.demo.report`,
:mod:`~worldboot.demo.markdown`) import this, never the pipeline that imports them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from worldboot.demo.config import DemoConfig

if TYPE_CHECKING:
    from worldboot.train.config import TrainConfig


class Demo(Protocol):
    """A demo run as its report reads it.

    Attributes:
        cfg: The run's sizes and training recipes.
        out: Its folder.
        state: ``stages.json``: each finished stage's result.
    """

    cfg: DemoConfig
    out: Path
    state: dict[str, Any]

    def triplets(self, split: str) -> list[Any]:
        """The run's triplets of ``split`` (``train``, ``test``, ``recognition``)."""
        ...

    def trained_world_models(self) -> list[str]:
        """The rows of the world models table this run trains (the ablations or not)."""
        ...

    def reward_models(self) -> list[str]:
        """The rows of the reward-optimised CWMs this run trains."""
        ...

    def train_config(self, name: str) -> TrainConfig:
        """The training config of the model ``name`` (``CDM``, ``C-FT``, ``CWM``...)."""
        ...
