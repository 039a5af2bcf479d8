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


# --------------------------------------------------------------------------------------------
# Reward optimisation (task world-rl). Written here rather than taken from TRL: TRL's GRPO and
# DPO losses are methods of its trainers, which build text completions with a tokenizer and a
# chat template; these take per-token log-probabilities of image tokens, whatever produced them.
# --------------------------------------------------------------------------------------------


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GRPO's advantages: each reward minus its group's mean, over the group's standard
    deviation (0 for a group whose rewards are all equal: it carries no preference).

    Args:
        rewards: ``[n_groups, G]``.

    Returns:
        ``[n_groups, G]``.
    """
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=False)
    return torch.where(std > eps, centred / std.clamp(min=eps), torch.zeros_like(centred))


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from tokens sampled by the policy:
    ``exp(ref - logp) - (ref - logp) - 1`` (non-negative, unbiased; Schulman's k3, as GRPO)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


def grpo_loss_sum(
    logp: torch.Tensor, ref_logp: torch.Tensor, advantages: torch.Tensor, beta: float,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO's loss summed over sequences, for one update per batch of fresh samples (so the
    importance ratio is 1 and PPO's clipping never acts): per sequence, the mean over its
    tokens of ``-A * logp + beta * KL``.

    Args:
        logp: ``[S, L]`` the policy's log-probability of each sampled token (with gradient).
        ref_logp: ``[S, L]`` the reference's (no gradient).
        advantages: ``[S]``.
        beta: KL coefficient.
        mask: ``[S, L]``, 1 where a token counts (sampled text of different lengths, padded);
            the means are over those tokens. Default: every token.

    Returns:
        ``(loss_sum, kl_sum)``: divide both by the number of sequences in the global batch.
    """
    mask = torch.ones_like(logp) if mask is None else mask.to(logp.dtype)
    count = mask.sum(dim=1).clamp(min=1.0)
    kl = kl_k3(logp, ref_logp.detach()) * mask
    per_seq = ((-advantages.detach()[:, None] * logp) * mask + beta * kl).sum(dim=1) / count
    return per_seq.sum(), (kl.detach().sum(dim=1) / count).sum()


def dpo_loss_sum(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """DPO's sigmoid loss summed over pairs: ``-log sigmoid(beta * ((chosen - ref_chosen) -
    (rejected - ref_rejected)))``, each argument a ``[P]`` sequence log-probability (summed over
    the image tokens); ``mask`` (``[P]``, 0 or 1) leaves pairs out (a tie is no preference)."""
    margin = (chosen - ref_chosen.detach()) - (rejected - ref_rejected.detach())
    losses = -F.logsigmoid(beta * margin)
    return (losses if mask is None else losses * mask.to(losses.dtype)).sum()
