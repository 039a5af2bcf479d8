"""Reward optimisation of the world model against the dynamics model (``task: world-rl``).

Best-of-N pays N samples for every prediction to let the CDM pick one. This recipe moves the
CDM's preference into the world model's weights, as SWIRL does after the paper: for each
(source, action) of a batch the policy samples a group of ``G`` target images (one prefill, G
samples, the sampler of ``worldboot generate``), the frozen CDM rewards each with the mean per
token of log p_CDM(action | source, candidate), and

* **GRPO** turns the rewards into group-normalised advantages and takes a policy-gradient step
  on the image tokens, with a KL penalty to the reference;
* **DPO** takes the best and the worst candidate of each group as a preference pair; or,
  offline (``candidates``), the pairs are read from a ``worldboot generate --best-of N``
  folder whose candidates the CDM already scored (:mod:`worldboot.train.pairs`).

The policy is a LoRA adapter on the starting world model, and the reference is that model with
the adapter switched off (peft's ``disable_adapter``): no second copy of the weights.

Why not TRL's trainers: its GRPO trainer samples text through ``generate`` and decodes
completions with a tokenizer (SWIRL subclasses it to get images out), and its DPO trainer
builds text pairs from a dataset. Here candidates are image codes from our sampler and rewards
come from another model's forward, so the loop is the accelerate recipe of
:mod:`worldboot.train.recipes` (the same resume, multi-process and DeepSpeed support) with a
different step; the losses are the pure functions of :mod:`worldboot.train.losses`.

(Just over 400 lines: one recipe, online and offline, whose sampling, rewarding and
log-probability hooks :mod:`worldboot.train.rl_dynamics` overrides for the reverse direction.)
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from worldboot.errors import ConfigError, DataError, ModelError
from worldboot.models.backbone import Example, SamplingConfig
from worldboot.runs import run_task
from worldboot.train.engine import unpartitioned_loading, zero_stage
from worldboot.train.losses import dpo_loss_sum, group_advantages, grpo_loss_sum
from worldboot.train.pairs import PreferencePair, check_candidates_folder, check_source, read_pairs
from worldboot.train.recipes import Trainer
from worldboot.train.rl_config import DPOConfig, RLConfig


def offline_candidates(cfg: RLConfig) -> str:
    """Offline DPO's candidates folder (:attr:`DPOConfig.candidates`), or ``""``."""
    return cfg.candidates if isinstance(cfg, DPOConfig) else ""


def check_rl(cfg: RLConfig) -> None:
    """Refuse an RL config that cannot work, before anything is loaded.

    Raises:
        ConfigError: One line naming the setting.
        ModelError: The verifier's directory does not exist.
    """
    candidates = offline_candidates(cfg)
    if candidates:
        check_candidates_folder(candidates)
    if cfg.group_size < 2 and not (candidates and not cfg.verifier):  # offline pairs alone draw nothing
        raise ConfigError(
            f"group_size is {cfg.group_size}: a group of one candidate has zero advantage (GRPO compares "
            "candidates within a group) and no preference pair (DPO); use 2 or more"
        )
    if not cfg.verifier and not candidates:
        if cfg.task == "dynamics-rl":
            raise ConfigError("verifier is empty: give the world model that rewards the action texts (--verifier)")
        raise ConfigError(
            "verifier is empty: give the dynamics model (CDM) that rewards candidates (--verifier), or "
            "candidates it already scored (--candidates)"
        )
    if cfg.verifier and not Path(cfg.verifier).is_dir():
        raise ModelError(f"verifier directory not found: {cfg.verifier}")
    # A trained run records its task: a world model passed as the CDM (or the reverse) would
    # train on a reward that means nothing. Base models record none and pass.
    verifier_role, policy_role = ("dynamics", "world") if cfg.task == "world-rl" else ("world", "dynamics")
    for flag, path, role in (("--verifier", cfg.verifier, verifier_role), ("--base", cfg.base_model, policy_role)):
        trained = run_task(path) if path else None
        if trained is not None and not trained.startswith(role):
            raise ConfigError(f"{flag} {path} is a {trained} run; {cfg.task} needs a {role} model there")
    if not cfg.lora.enabled:
        raise ConfigError(
            f"{cfg.task} trains a LoRA adapter (lora.enabled=true): the reference policy is the starting model "
            "with the adapter switched off, which needs no second copy of the weights"
        )
    if cfg.reward_min >= 0:
        raise ConfigError(f"reward_min must be below 0 (rewards are log-probabilities), got {cfg.reward_min:g}")


def image_logprobs(
    backbone: Any, model: Any, examples: list[Example], codes: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``[S, L]``: log-probability of each target image code under ``model``, over the image
    tokens only at ``temperature`` (the distribution the sampler draws from, so that the policy
    gradient is that of the samples).

    Args:
        backbone: Builds the batch and knows the image vocabulary.
        model: The policy, or the reference.
        examples: ``S`` world examples whose completions are the candidates.
        codes: ``[S, L]`` the candidates' codes (the completions' image codes).
        temperature: The sampling temperature.
    """
    from worldboot.models.lm_forward import completion_positions

    batch = backbone.collate(examples).to(backbone.device)
    mask, targets, _ = completion_positions(batch.labels)
    vocab = backbone.image_vocab()
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_mask=mask, logits_vocab=vocab)
    # Column k of the image-vocabulary logits is code k (the sampler's convention).
    logp = torch.log_softmax(out.logits.float() / temperature, dim=-1)
    return logp.gather(1, codes.reshape(-1, 1).to(logp.device)).view(len(examples), -1)


class RLTrainer(Trainer):
    """:class:`~worldboot.train.recipes.Trainer` with a GRPO or DPO step against a frozen CDM.

    ``batch_size`` counts (source, action) prompts; each brings ``group_size`` candidates.
    Metrics per step: the loss, the mean reward of the fresh candidates and its spread within a
    group (the standard deviation GRPO divides by, averaged over groups), the KL to the
    reference (GRPO), and the seconds spent sampling, scoring and updating. With offline pairs
    (``candidates``) nothing is sampled or scored, and the row has no reward.
    """

    pairs: dict[str, PreferencePair] | None = None
    pair_eval: list = []
    pairs_note = ""
    verifier: Any = None

    def setup(self) -> None:
        """Check the RL settings, set up the policy, then load the verifier and check that it
        reads the policy's image codes."""
        check_rl(self.cfg)
        super().setup()
        if self.pairs is not None:
            self.accelerator.print(self.pairs_note)
        if not self.cfg.verifier:
            return  # offline pairs only
        # Frozen and read by every process on its own prompts: a whole copy per process (under
        # ZeRO-3 transformers would otherwise shard it like the policy).
        with unpartitioned_loading(self.accelerator):
            self.verifier = self.load_verifier()
        self.verifier.backbone.model.eval()

    def load_verifier(self) -> Any:
        """The frozen model that rewards: here the CDM, as a :class:`~worldboot.infer.verify.Verifier`
        that refuses another image tokenizer than the policy's."""
        from worldboot.infer.verify import Verifier

        return Verifier.load(self.cfg.verifier, world=self.backbone, score="mean", on_mismatch="error")

    def select_data(self) -> None:
        """Offline DPO: keep the cache's samples that have a pair in ``candidates``, each
        checked against the cache's source codes."""
        cfg = self.cfg
        candidates = offline_candidates(cfg)
        if not candidates:
            return
        pairs, stats = read_pairs(candidates, cfg.reward_min)
        kept: dict[str, list] = {"train": [], "eval": []}
        ids: set[str] = set()
        for split in kept:
            for entry in getattr(self.data, split):
                item = self.data.item(entry)
                pair = pairs.get(str(item["id"]))
                if pair is not None:
                    check_source(pair, str(item["id"]), item["source_codes"], candidates)
                    kept[split].append(entry)
                    ids.add(str(item["id"]))
        if not kept["train"]:
            raise DataError(
                f"no training sample of the caches has candidates in {candidates} ({stats.pairs} pairs there): "
                "generate them from the manifest the caches were made from"
            )
        self.pairs = {i: pairs[i] for i in ids}
        self.pairs_note = (
            f"offline DPO: {len(kept['train'])} training and {len(kept['eval'])} held-out prompts of "
            f"{len(self.data.train) + len(self.data.eval)} have pairs in {candidates} "
            f"({sum(not p.preferred for p in self.pairs.values())} of them ties, weighing 0; "
            f"{stats.single + stats.unscored} rows there without scored candidates)"
        )
        self.data.train = kept["train"]
        self.pair_eval = kept["eval"]  # the held-out reward (with a verifier) keeps every held-out prompt
        if not cfg.verifier:
            self.data.eval = kept["eval"]

    def data_fingerprint(self) -> str:
        """The samples' hash and, offline, the pairs' codes and ties: a candidates folder
        redrawn between a run and its resume changes what the steps train on."""
        base = super().data_fingerprint()
        if self.pairs is None:
            return base
        import hashlib

        h = hashlib.sha256(base.encode())
        for sample_id in sorted(self.pairs):
            pair = self.pairs[sample_id]
            h.update(sample_id.encode())
            h.update(pair.chosen.numpy().tobytes() + pair.rejected.numpy().tobytes() + bytes([pair.preferred]))
        return h.hexdigest()[:16]

    def _pairs_of(self, items: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``[n, 2, L]`` (chosen, rejected) codes of offline pairs, and ``[n]`` whether preferred."""
        assert self.pairs is not None
        pairs = [self.pairs[str(it["id"])] for it in items]
        return (torch.stack([torch.stack([p.chosen, p.rejected]) for p in pairs]),
                torch.tensor([p.preferred for p in pairs]))

    # -- one step -----------------------------------------------------------------------------

    def _policy(self) -> Any:
        return self.accelerator.unwrap_model(self.model)

    def _generators(self, step: int, offsets: list[int], salt: int = 0) -> list[torch.Generator]:
        # One generator per prompt, seeded by its place in the global batch: the same candidates
        # whatever the process count, and again after a resume.
        return [torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step * 10_007 + i + salt) for i in offsets]

    def _prompts(self, items: list[dict[str, Any]]) -> list[Example]:
        return [self.backbone.world_example(it["source_codes"], it["action"]) for it in items]

    @contextmanager
    def policy_sampling(self) -> Iterator[Any]:
        """The backbone with the current policy (unwrapped) as its model, for its samplers;
        the training model and training mode are back afterwards."""
        wrapped, self.backbone.model = self.backbone.model, self._policy()
        try:
            yield self.backbone
        finally:
            self.backbone.model = wrapped
            self.model.train()

    @torch.no_grad()
    def sample(self, items: list[dict[str, Any]], generators: list[torch.Generator]) -> torch.Tensor:
        """``[n, G, L]`` candidate codes from the current policy."""
        cfg = self.cfg
        with self.policy_sampling() as bb:
            return bb.generate_images(self._prompts(items), cfg.group_size, SamplingConfig(temperature=cfg.temperature),
                                      generator=generators)

    @torch.no_grad()
    def rewards(self, items: list[dict[str, Any]], codes: torch.Tensor, step: int) -> torch.Tensor:
        """``[n, G]``: the CDM's per-token mean log p(action | source, candidate), clamped.

        Raises:
            ModelError: When the CDM returns NaN (a broken verifier would otherwise train the
                policy on noise).
        """
        out = torch.empty(codes.shape[:2])
        for i, it in enumerate(items):
            mean = self.reward_means(it, codes[i])
            if torch.isnan(mean).any():
                raise ModelError(
                    f"the verifier {self.cfg.verifier} gave a NaN reward for sample {it.get('id', i)!r} at step "
                    f"{step + 1}: check {self.rewarder} (its weights or dtype)"
                )
            out[i] = mean.clamp(min=self.cfg.reward_min, max=0.0)
        return out

    rewarder = "the CDM"  # named by a NaN reward's error

    def reward_means(self, item: dict[str, Any], cands: torch.Tensor) -> torch.Tensor:
        """``[k]`` the verifier's per-token mean log p(action | source, candidate) of ``cands``."""
        return self.verifier.score_candidates(item["source_codes"], cands, item["action"]).mean

    def _examples(self, items: list[dict[str, Any]], codes: torch.Tensor) -> list[Example]:
        bb = self.backbone
        return [bb.world_example(it["source_codes"], it["action"], c) for it, cand in zip(items, codes, strict=True)
                for c in cand]

    def candidate_logprobs(self, model: Any, items: list[dict[str, Any]], cands: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[S, L]`` log-probabilities of the candidates' tokens under ``model`` (``cands``:
        ``[n, k, L]``, ``S = n * k``), and ``[S, L]`` which of them count (all, for images)."""
        flat = cands.reshape(-1, cands.shape[-1])
        logp = image_logprobs(self.backbone, model, self._examples(items, cands), flat, self.cfg.temperature)
        return logp, torch.ones_like(logp)

    def _dpo_sums(self, items: list[dict[str, Any]], pairs: torch.Tensor, preferred: torch.Tensor,
                  model: Any = None) -> tuple[torch.Tensor, float]:
        """DPO loss summed over ``pairs`` (``[n, 2, L]``, chosen first), and how many pairs the
        policy ranks right (its log-ratio to the reference higher for the chosen one); ``model``:
        the policy to run (default: the wrapped training model)."""
        cfg = self.cfg
        logp, mask = self.candidate_logprobs(model or self.model, items, pairs)
        logp = (logp * mask).sum(1).view(-1, 2)
        with torch.no_grad(), self._policy().disable_adapter():
            ref = self.candidate_logprobs(self._policy(), items, pairs)[0]
        ref = (ref * mask).sum(1).view(-1, 2)
        preferred = preferred.to(logp.device)
        loss = dpo_loss_sum(logp[:, 0], logp[:, 1], ref[:, 0], ref[:, 1], cfg.beta, preferred)
        right = ((logp[:, 0] - ref[:, 0]) > (logp[:, 1] - ref[:, 1])) & preferred
        return loss, float(right.sum())

    def _loss_sum(self, items: list[dict[str, Any]], codes: torch.Tensor, rewards: torch.Tensor) -> tuple[torch.Tensor, float]:
        """The loss summed over this micro-batch's sequences (GRPO) or pairs (DPO), and its KL sum."""
        cfg = self.cfg
        if self.pairs is not None:  # offline: ``codes`` are the pairs, ``rewards`` whether preferred
            return self._dpo_sums(items, codes, rewards.bool())[0], 0.0
        if cfg.objective == "dpo":
            # Every group makes a pair, ties included with weight 0: under ZeRO-3 every process
            # must run the same forwards, whatever its rewards.
            rows = torch.arange(len(items))
            pairs = torch.stack([codes[rows, rewards.argmax(1)], codes[rows, rewards.argmin(1)]], 1)  # [n, 2, L]
            preferred = rewards.max(1).values > rewards.min(1).values
            return self._dpo_sums(items, pairs, preferred)[0], 0.0
        logp, mask = self.candidate_logprobs(self.model, items, codes)
        with torch.no_grad(), self._policy().disable_adapter():
            ref = self.candidate_logprobs(self._policy(), items, codes)[0]
        adv = group_advantages(rewards).flatten().to(logp.device)
        loss, kl = grpo_loss_sum(logp, ref, adv, cfg.beta, mask)
        return loss, float(kl)

    def train_step(self, step: int) -> dict[str, float]:
        """Sample, reward and update for the global batch ``step``; returns its metrics."""
        acc = self.accelerator
        cfg = self.cfg
        entries = self._global_batch(step)
        mine = list(range(acc.process_index, len(entries), acc.num_processes))
        items = [self.data.item(entries[i]) for i in mine]
        t0 = time.perf_counter()
        if self.pairs is not None:
            codes, preferred = self._pairs_of(items)  # offline: the pairs, and whether preferred
            rewards = preferred.float()
            t1 = t2 = time.perf_counter()
        else:
            codes = self.sample(items, self._generators(step, mine))
            t1 = time.perf_counter()
            rewards = self.rewards(items, codes, step)
            t2 = time.perf_counter()
        units = len(entries) * (cfg.group_size if cfg.objective == "grpo" else 1)
        scale = acc.num_processes * self.accum / units
        loss_sum = torch.zeros((), device=acc.device)
        kl_sum = 0.0
        mb = cfg.micro_batch_size
        self.model.train()
        for start in range(0, len(items), mb):
            sl = slice(start, start + mb)
            with acc.accumulate(self.model):
                s, kl = self._loss_sum(items[sl], codes[sl], rewards[sl])
                acc.backward(s * scale)
                loss_sum += s.detach()
                kl_sum += kl
                if acc.sync_gradients and cfg.optim.max_grad_norm > 0:
                    acc.clip_grad_norm_(self.model.parameters(), cfg.optim.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad()
        self.scheduler.step()
        t3 = time.perf_counter()
        # Summed over processes: loss, KL, rewards, within-group spread of the rewards (the
        # signal GRPO has: 0 when every candidate of a group scores the same), groups, rewards.
        # (Offline, the "rewards" are whether each pair is preferred: the row has no reward.)
        spread = rewards.std(dim=1, unbiased=False).sum() if rewards.dim() == 2 else torch.zeros(())
        stats = torch.tensor([float(loss_sum), kl_sum, float(rewards.sum()), float(spread), float(len(items)),
                              float(rewards.numel()), float((codes >= 0).sum())], device=acc.device)
        stats = acc.reduce(stats, reduction="sum")
        n = max(float(stats[5]), 1.0)
        record = {
            "loss": float(stats[0]) / units,
            "tokens": float(stats[6]),  # the candidates' tokens (padding, -1, left out)
            "lr": self.scheduler.get_last_lr()[0],
            "sample_s": t1 - t0,
            "score_s": t2 - t1,
            "update_s": t3 - t2,
        }
        if self.pairs is None:
            record.update(reward=float(stats[2]) / n, reward_spread=float(stats[3]) / max(float(stats[4]), 1.0))
        if cfg.objective == "grpo":
            record["kl"] = float(stats[1]) / n
        return record

    def _eval_batches(self, n: int) -> list[list[int]]:
        """This process's indices of ``n`` held-out prompts in micro-batches. Under ZeRO-3 every
        forward gathers the weights, a collective: every process then runs as many batches as
        the busiest one (an empty one repeats prompt 0, not counted)."""
        acc = self.accelerator
        mine = list(range(acc.process_index, n, acc.num_processes))
        mb = max(self.cfg.micro_batch_size, 1)
        batches = math.ceil(len(mine) / mb)
        if zero_stage(acc) == 3:
            batches = math.ceil(math.ceil(n / acc.num_processes) / mb)
        return [mine[b * mb : (b + 1) * mb] for b in range(batches)]

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """On the held-out prompts: the mean reward of fresh candidates (``group_size`` each,
        fixed seeds), what the step is meant to raise, when there is a verifier; with offline
        pairs, the DPO loss and the share ranked right of the held-out prompts' pairs (ties
        left out of both; the metrics are left out when every held-out pair is a tie)."""
        acc = self.accelerator
        total = torch.zeros(5, device=acc.device)  # reward sum, rewards, DPO loss sum, right, pairs
        if self.verifier is not None and self.data.eval:
            for idx in self._eval_batches(len(self.data.eval)):
                items = [self.data.item(self.data.eval[i]) for i in (idx or [0])]
                codes = self.sample(items, self._generators(0, idx or [0], salt=7_777_777))
                if idx:
                    r = self.rewards(items, codes, self.global_step)
                    total[:2] += torch.tensor([float(r.sum()), float(r.numel())], device=acc.device)
        if self.pairs is not None and self.pair_eval:
            policy = self._policy()  # unwrapped: processes may run different numbers of batches
            policy.eval()  # no LoRA dropout in the held-out loss
            for idx in self._eval_batches(len(self.pair_eval)):
                items = [self.data.item(self.pair_eval[i]) for i in (idx or [0])]
                pairs, preferred = self._pairs_of(items)
                loss, right = self._dpo_sums(items, pairs, preferred, policy)
                if idx:
                    total[2:] += torch.tensor([float(loss), right, float(preferred.sum())], device=acc.device)
            self.model.train()
        total = acc.reduce(total, reduction="sum")
        out = {}
        if float(total[1]) > 0:
            out["eval_reward"] = float(total[0] / total[1])
        if float(total[4]) > 0:
            out.update(eval_dpo_loss=float(total[2] / total[4]), eval_pair_accuracy=float(total[3] / total[4]))
        return out
