"""The configs of reward optimisation (``task: world-rl`` and ``dynamics-rl``), one per objective
as TRL keeps one beside each trainer: :class:`GRPOConfig` and :class:`DPOConfig`, each a
:class:`~worldboot.train.config.TrainConfig` with its own fields, every field documented.

``world-rl``: for each (source, action) of a global batch the policy (the world model with a LoRA
adapter) samples ``group_size`` target images; the frozen CDM scores each by the mean per token
of log p_CDM(action | source, candidate) (the reward). ``dynamics-rl`` is the reverse direction
(SWIRL's): for each (source, target) the policy (the CDM with a LoRA adapter) samples
``group_size`` action texts, and the frozen world model rewards each by the mean per token of
log p_CWM(target | source, text). Both trainers
(:class:`~worldboot.train.rl.RLTrainer`, :class:`~worldboot.train.rl_dynamics.DynamicsRLTrainer`)
read either config; the objective picks the update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from worldboot.bounds import bounded
from worldboot.train.config import TrainConfig


@dataclass
class RLConfig(TrainConfig):
    """What GRPO and DPO share: the frozen model that rewards and how candidates are drawn.

    Attributes:
        objective: ``grpo`` (:class:`GRPOConfig`) or ``dpo`` (:class:`DPOConfig`). A preset
            names its own; ``--objective`` or ``objective=`` may not contradict it.
        verifier: The frozen model that rewards: the CDM's directory for ``world-rl``, the
            world model's for ``dynamics-rl`` (its image tokenizer must be the policy's).
        group_size: Candidates per prompt ((source, action) for ``world-rl``, (source, target)
            for ``dynamics-rl``); GRPO's advantages are relative to the group, so it needs at
            least 2.
        temperature: Sampling temperature of the candidates (1 = the paper's setting); the
            policy's log-probabilities are taken at the same temperature.
        reward_min: Rewards are clamped to ``[reward_min, 0]``: a per-token mean log-probability
            is at most 0, and one candidate the verifier finds absurd (say -40) would otherwise
            set a group's spread alone and squash every other candidate's share towards zero.
        max_new_tokens: ``dynamics-rl`` only: most tokens of a sampled action text (one that has
            not ended by then is kept as drawn, without end-of-sequence). A world model's
            candidate is always one image.
    """

    task: Literal["world-rl", "dynamics-rl"] = "world-rl"
    objective: Literal["grpo", "dpo"] = "grpo"
    verifier: str = ""
    group_size: int = bounded(4, ge=1)
    temperature: float = bounded(1.0, gt=0)
    reward_min: float = -10.0
    max_new_tokens: int = bounded(32, ge=1)


@dataclass
class GRPOConfig(RLConfig):
    """GRPO: group-normalised advantages, the policy gradient on the sampled tokens, and a KL
    penalty to the reference (the starting model without the adapter).

    Attributes:
        objective: Always ``grpo``.
        beta: The KL coefficient (per-token k3 estimate of KL(policy || reference); TRL's
            GRPO ``beta``).
    """

    objective: Literal["grpo"] = "grpo"
    beta: float = bounded(0.04, ge=0)


@dataclass
class DPOConfig(RLConfig):
    """DPO: the best and the worst candidate of each group, by the verifier's clamped reward,
    as a preference pair.

    Attributes:
        objective: Always ``dpo``.
        beta: DPO's temperature on the log-ratio margin (TRL's DPO ``beta``).
        candidates: Offline DPO (``world-rl`` only): a ``worldboot generate --best-of N
            --verifier CDM`` output folder whose scored candidates make the pairs (the best and
            the worst of each sample, by the same clamped reward), so nothing is sampled or
            scored while training. The prompts are the cache's samples that have candidates
            there; ``verifier`` is then optional (given, it scores fresh samples of the held-out
            prompts at each evaluation).
    """

    objective: Literal["dpo"] = "dpo"
    beta: float = bounded(0.1, gt=0)
    candidates: str = ""
