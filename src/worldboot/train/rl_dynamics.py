"""Reward optimisation of the dynamics model against the world model (``task: dynamics-rl``).

The reverse of :mod:`worldboot.train.rl`, as SWIRL also trains it: for each (source, target)
of a batch the policy (the CDM with a LoRA adapter) samples a group of ``G`` action texts (one
prefill, G samples), and the frozen world model rewards each with the mean per token of
log p_CWM(target | source, text), clamped to ``[reward_min, 0]``. GRPO or DPO then update
the policy on the text tokens, with the reference the CDM without its adapter.

Why: a world model can read an action off a transition better than a CDM of the same size
generates it. On the embedded world's paper demo, picking the true action among five by
log p(target | source, action) is right 96.5 % of the time with C-FT and 28 % with the CDM's
own log p(action | source, target) (docs/results.md); the reward carries what the CDM lacks.

The loop is :class:`~worldboot.train.rl.RLTrainer`'s (resume, processes, DeepSpeed); this
class changes what is sampled, how it is rewarded and whose log-probabilities are taken.
TRL's GRPO trainer samples text, but from string prompts through its processing class, and
these prompts are two images of VQ codes.
"""

from __future__ import annotations

from typing import Any

import torch

from worldboot.errors import ConfigError, ModelError
from worldboot.models.backbone import Example, SamplingConfig
from worldboot.train.engine import zero_stage
from worldboot.train.rl import RLTrainer, offline_candidates

PAD = -1  # fills the candidates' tensor after a text's last token


def text_logprobs(
    backbone: Any, model: Any, examples: list[Example], temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of each example's completion tokens under ``model``, from the
    distribution the text sampler draws from (temperature, the banned ids masked out).

    Returns:
        ``([S, T], [S, T])``: the log-probabilities, left-aligned and zero-padded to the
        longest completion, and 1.0 where a token is.
    """
    from worldboot.models.lm_forward import completion_positions
    from worldboot.models.sampling import banned_text_ids

    batch = backbone.collate(examples).to(backbone.device)
    positions, targets, rows = completion_positions(batch.labels)
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_mask=positions)
    logits = out.logits.float()
    banned = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    banned[banned_text_ids(backbone).to(logits.device)] = True
    logp = torch.log_softmax(logits.masked_fill(banned, float("-inf")) / temperature, dim=-1)
    picked = logp.gather(1, targets.unsqueeze(1)).squeeze(1)  # [N], row-major over examples
    counts = torch.bincount(rows, minlength=len(examples))
    width = max(int(counts.max()), 1)
    starts = torch.cumsum(counts, 0) - counts
    cols = torch.arange(len(rows), device=rows.device) - starts[rows]
    dense = picked.new_zeros(len(examples), width).index_put((rows, cols), picked)
    mask = torch.zeros(len(examples), width, device=picked.device).index_put(
        (rows, cols), torch.ones_like(picked))
    return dense, mask


class WorldReward:
    """A frozen world model that rewards action texts: the mean per target token of
    log p(target | source, text).

    Raises:
        ModelError: When its image tokenizer is not the policy's (it would read other codes).
    """

    def __init__(self, path: str, policy_backbone: Any) -> None:
        from worldboot.models import load_backbone

        self.backbone = load_backbone(path)
        self.path = path
        mine, theirs = policy_backbone.tokenizer_fingerprint(), self.backbone.tokenizer_fingerprint()
        if mine != theirs:
            raise ModelError(
                f"the world model {path} has another image tokenizer than the dynamics model (fingerprint "
                f"{theirs} vs {mine}): its log p(target | source, text) would read other codes"
            )

    @torch.no_grad()
    def score(self, source: torch.Tensor, target: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """``[len(texts)]`` mean log p(target | source, text) per target token."""
        bb = self.backbone
        return bb.score([bb.world_example(source, text, target) for text in texts], batch_size=len(texts)).mean.float()


class DynamicsRLTrainer(RLTrainer):
    """:class:`~worldboot.train.rl.RLTrainer` for the CDM: candidates are action texts
    (``[n, G, T]`` token ids, :data:`PAD` after each text), rewarded by a world model."""

    def setup(self) -> None:
        """Refuse what only the world direction has, then as :meth:`RLTrainer.setup`."""
        if offline_candidates(self.cfg):
            raise ConfigError(
                "candidates holds image candidates from worldboot generate (world-rl's offline DPO); "
                "dynamics-rl samples its own action texts: leave it empty"
            )
        super().setup()

    def load_verifier(self) -> WorldReward:
        """The frozen world model (``verifier``)."""
        return WorldReward(self.cfg.verifier, self.backbone)

    def _prompts(self, items: list[dict[str, Any]]) -> list[Example]:
        return [self.backbone.dynamics_example(it["source_codes"], it["target_codes"]) for it in items]

    @torch.no_grad()
    def sample(self, items: list[dict[str, Any]], generators: list[torch.Generator]) -> torch.Tensor:
        """``[n, G, T]`` sampled action texts' token ids (end-of-sequence included when drawn)."""
        from worldboot.models.sampling import sample_text_ids

        rl = self.cfg
        with self.policy_sampling() as bb:
            ids = sample_text_ids(bb, self._prompts(items), rl.max_new_tokens, SamplingConfig(temperature=rl.temperature),
                                  generators, rl.group_size, stop_early=zero_stage(self.accelerator) != 3)
        out = torch.full((len(ids), max(max(len(r) for r in ids), 1)), PAD, dtype=torch.long)
        for i, row in enumerate(ids):
            out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return out.view(len(items), rl.group_size, -1)

    def texts(self, cands: torch.Tensor) -> list[str]:
        """The action text of each candidate row (``[k, T]``)."""
        bb = self.backbone
        return [bb.tokenizer.decode([t for t in row.tolist() if t not in (PAD, bb.eos_id)],
                                    skip_special_tokens=True).strip() for row in cands]

    rewarder = "the world model"

    def reward_means(self, item: dict[str, Any], cands: torch.Tensor) -> torch.Tensor:
        """``[k]`` the world model's per-token mean log p(target | source, text) of each text."""
        return self.verifier.score(item["source_codes"], item["target_codes"], self.texts(cands))

    def _examples(self, items: list[dict[str, Any]], codes: torch.Tensor) -> list[Example]:
        examples = []
        for prompt, cand in zip(self._prompts(items), codes, strict=True):
            for row in cand:
                ids = [t for t in row.tolist() if t != PAD]
                examples.append(Example(prompt.input_ids + ids, prompt.labels + ids, len(prompt.input_ids)))
        return examples

    def candidate_logprobs(self, model: Any, items: list[dict[str, Any]], cands: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[S, T]`` log-probabilities of the texts' tokens and ``[S, T]`` where a token is."""
        return text_logprobs(self.backbone, model, self._examples(items, cands), self.cfg.temperature)
