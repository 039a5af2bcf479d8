"""Cached triplets to token sequences, labels and loss weights: the one place that decides masks.

The backbone decides the layout and puts labels on the completion only; this module adds the
per-token loss weights (recognition weights on the world model's target image tokens, 1 on
every other labelled token) and pads batches. The collator only pads (trl's rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from worldboot.models.backbone import Backbone, Batch, Example
from worldboot.train.losses import normalise_weights

Task = Literal["dynamics", "world"]


@dataclass
class RenderedExample:
    """An example with a loss weight per position (0 where there is no label)."""

    example: Example
    weights: list[float]


def render_example(
    backbone: Backbone, item: dict[str, Any], task: Task, weighting: str = "none", uniform_mix: float = 0.0
) -> RenderedExample:
    """Build the sequence of one cached triplet for ``task``.

    Args:
        backbone: Decides the layout.
        item: A :class:`~worldboot.data.cache.CachedTripletDataset` item (``source_codes``,
            ``target_codes``, ``action``, ``weights``).
        task: ``"dynamics"`` (CDM) or ``"world"`` (CWM).
        weighting: ``"l2"`` applies the recognition weights to the target image tokens of the
            world layout; ``"none"`` weighs every labelled token 1.
        uniform_mix: See :func:`~worldboot.train.losses.normalise_weights`.
    """
    if task == "dynamics":
        ex = backbone.dynamics_example(item["source_codes"], item["target_codes"], item["action"])
    else:
        ex = backbone.world_example(item["source_codes"], item["action"], item["target_codes"])
    weights = [0.0 if lab == -100 else 1.0 for lab in ex.labels]
    if task == "world" and weighting == "l2":
        w = normalise_weights(torch.as_tensor(item["weights"]), uniform_mix).tolist()
        # One weight per target code: the completion's labelled positions (a layout token
        # inside the image, as Emu3's row ends, has no label and no weight).
        coded = [i for i in range(ex.completion_start, len(ex.labels)) if ex.labels[i] != -100]
        if len(w) != len(coded):
            raise ValueError(f"{len(w)} weights for {len(coded)} target tokens")
        for i, wi in zip(coded, w, strict=True):
            weights[i] = wi
    return RenderedExample(ex, weights)


def collate(backbone: Backbone, items: Sequence[RenderedExample]) -> tuple[Batch, torch.Tensor]:
    """Right-pad a list of rendered examples; returns the batch and ``[B, T]`` weights."""
    batch = backbone.collate([r.example for r in items])
    weights = torch.zeros(batch.labels.shape, dtype=torch.float32)
    for i, r in enumerate(items):
        weights[i, : len(r.weights)] = torch.tensor(r.weights)
    return batch, weights
