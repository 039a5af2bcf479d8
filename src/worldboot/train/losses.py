"""The completion loss, plain or recognition-weighted (paper Eq. 2). Pure functions.

Normalisation (documented because the paper leaves it open): recognition weights are scaled
to mean 1 over each target image's ``L`` tokens (:func:`normalise_weights`), and the loss is
the sum of weighted token cross-entropies divided by the number of completion tokens. With all
weights equal to 1 this is exactly the plain mean completion loss, so learning rates carry
over between ``loss.weighting=none`` and ``l2``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def normalise_weights(raw: torch.Tensor, uniform_mix: float = 0.0, eps: float = 1e-8) -> torch.Tensor:
    """Scale one image's raw recognition weights to mean 1.

    Args:
        raw: ``[L]`` squared L2 distances between source and target pre-quantisation features.
        uniform_mix: Share of a uniform weight mixed in (0 = the paper's pure weighting); a
            small share keeps unchanged regions from being ignored entirely.
        eps: Below this mean the image did not change at all and the weights are uniform.

    Returns:
        ``[L]`` non-negative weights with mean 1.
    """
    raw = raw.float().clamp(min=0)
    mean = raw.mean()
    w = torch.ones_like(raw) if mean < eps else raw / mean
    return (1.0 - uniform_mix) * w + uniform_mix


def completion_loss_sum(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Sum over completion tokens of (weight x cross-entropy).

    Args:
        logits: ``[N, V]`` logits at the completion positions.
        targets: ``[N]`` the tokens they should predict.
        weights: ``[N]`` per-token weights (None = 1).

    Returns:
        A scalar: divide by the number of tokens (over the whole global batch) for the loss.
    """
    ce = F.cross_entropy(logits.float(), targets, reduction="none")
    if weights is not None:
        ce = ce * weights.to(ce.dtype)
    return ce.sum()


def weighted_completion_loss(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over completion tokens of (weight x cross-entropy); the plain loss when weights are 1."""
    return completion_loss_sum(logits, targets, weights) / max(int(targets.numel()), 1)
