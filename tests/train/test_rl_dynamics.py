"""Reward optimisation of the dynamics model against a world model (task dynamics-rl): the
text log-probabilities are the sampler's, a step moves towards the better texts, bad input
before compute, and exact resume."""

from __future__ import annotations

import pytest
import torch

from helpers import f32_atol, rl_config
from worldboot.errors import ConfigError
from worldboot.train.config import OptimSettings
from worldboot.train.losses import group_advantages
from worldboot.train.rl_config import RLConfig
from worldboot.train.rl_dynamics import PAD, DynamicsRLTrainer, text_logprobs


def _cfg(base, verifier, cache_dir, out, **kw) -> RLConfig:
    return rl_config(base, cache_dir, out, **{"task": "dynamics-rl", "max_steps": 4, "verifier": str(verifier),
                                              "group_size": 3, "max_new_tokens": 6, **kw})


def test_text_log_probabilities_are_those_the_sampler_draws_from(tiny, cache_dir):
    """Over 3000 draws of a first token at temperature 2 (image tokens banned), the five most
    drawn tokens' shares match exp(log p) from text_logprobs within 0.03, and no banned token is
    drawn. The output layer is scaled up so that a few tokens share most of the mass (a random
    tiny model's is nearly uniform, where any temperature would pass)."""
    from worldboot.data.cache import CachedTripletDataset
    from worldboot.models.backbone import Example, SamplingConfig
    from worldboot.models.sampling import banned_text_ids, sample_text_ids

    with torch.no_grad():
        tiny.core.lm_head.weight.mul_(60.0)
    item = CachedTripletDataset(cache_dir)[0]
    prompt = tiny.dynamics_example(item["source_codes"], item["target_codes"])
    draws = sample_text_ids(tiny, [prompt], 1, SamplingConfig(temperature=2.0), torch.Generator().manual_seed(0),
                            num_samples=3000)
    first = torch.tensor([row[0] for row in draws])
    assert not torch.isin(first, banned_text_ids(tiny)).any()
    tokens, counts = first.unique(return_counts=True)
    top = tokens[counts.argsort(descending=True)[:5]]
    examples = [Example(prompt.input_ids + [int(t)], prompt.labels + [int(t)], len(prompt.input_ids)) for t in top]
    with torch.no_grad():
        logp, mask = text_logprobs(tiny, tiny.model, examples, temperature=2.0)
    assert mask.tolist() == [[1.0]] * len(top)
    assert float(logp[:, 0].exp().sum()) > 0.5  # the five carry most of the mass
    for t, lp in zip(top, logp[:, 0], strict=True):
        share = float((first == t).float().mean())
        assert share == pytest.approx(float(lp.exp()), abs=0.03), (int(t), share, float(lp.exp()))


def test_padded_texts_count_only_their_own_tokens(tiny, cache_dir):
    from worldboot.data.cache import CachedTripletDataset
    from worldboot.models.backbone import Example

    item = CachedTripletDataset(cache_dir)[0]
    prompt = tiny.dynamics_example(item["source_codes"], item["target_codes"])
    ids = tiny.tokenizer.encode(" red square", add_special_tokens=False)
    long, short = ids + [tiny.eos_id], ids[:1]
    examples = [Example(prompt.input_ids + c, prompt.labels + c, len(prompt.input_ids)) for c in (long, short)]
    with torch.no_grad():
        logp, mask = text_logprobs(tiny, tiny.model, examples)
        alone, _ = text_logprobs(tiny, tiny.model, examples[1:])
    assert mask.sum(1).tolist() == [len(long), 1]
    assert float(logp[1, 1:].abs().sum()) == 0.0
    # the same log-probability in a padded batch (another shape): helpers.f32_atol
    torch.testing.assert_close(logp[1, :1], alone[0, :1], atol=f32_atol(alone[0, :1].abs().max()), rtol=0)


def test_one_grpo_step_moves_probability_towards_the_better_texts(tiny_dir, cache_dir, tmp_path):
    """After one small step the log-probabilities of the step's own texts change in the
    direction of their advantages: sum(A * delta mean log p) > 0."""
    cfg = _cfg(tiny_dir, tiny_dir, cache_dir, tmp_path / "run",
               group_size=4, beta=0.0,
               optim=OptimSettings(lr=1e-4, warmup_steps=0, scheduler="constant"))
    recipe = DynamicsRLTrainer(cfg)
    recipe.setup()
    try:
        entries = recipe._global_batch(0)
        items = [recipe.data.item(e) for e in entries]
        texts = recipe.sample(items, recipe._generators(0, list(range(len(entries)))))
        assert texts.shape[:2] == (4, 4) and (texts[:, :, 0] != PAD).all()
        adv = group_advantages(recipe.rewards(items, texts, 0)).flatten()

        def mean_logp() -> torch.Tensor:
            with torch.no_grad():
                logp, mask = recipe.candidate_logprobs(recipe.model, items, texts)
            return (logp * mask).sum(1) / mask.sum(1)

        before = mean_logp()
        recipe.train_step(0)
        after = mean_logp()
    finally:
        recipe.cleanup()
    assert adv.abs().sum() > 0
    assert float((adv * (after - before)).sum()) > 0, (adv, after - before)


def test_bad_settings_are_refused_before_compute(tiny_dir, cache_dir, tmp_path):
    with pytest.raises(ConfigError, match="give the world model that rewards the action texts"):
        DynamicsRLTrainer(_cfg(tiny_dir, "", cache_dir, tmp_path / "a")).setup()
    with pytest.raises(ConfigError, match="dynamics-rl samples its own action texts"):
        DynamicsRLTrainer(_cfg(tiny_dir, tiny_dir, cache_dir, tmp_path / "b", objective="dpo",
                               candidates=str(tmp_path))).setup()
    with pytest.raises(ConfigError, match="group_size is 1"):
        DynamicsRLTrainer(_cfg(tiny_dir, tiny_dir, cache_dir, tmp_path / "c", group_size=1)).setup()
    assert not any((tmp_path / n / "metrics.jsonl").exists() for n in "abc")


def test_under_zero3_the_text_sampler_runs_every_step(tiny, cache_dir, monkeypatch):
    """When every text has ended, the sampler stops, except with stop_early=False (what
    dynamics-rl passes under ZeRO-3, where each forward is a collective of all processes and
    another process may still be drawing)."""
    from worldboot.data.cache import CachedTripletDataset
    from worldboot.models import sampling

    item = CachedTripletDataset(cache_dir)[0]
    prompt = tiny.dynamics_example(item["source_codes"], item["target_codes"])
    monkeypatch.setattr(sampling, "pick", lambda scores, *a: torch.full((scores.shape[0],), tiny.eos_id))
    steps = []
    real_step = tiny._step
    monkeypatch.setattr(tiny, "_step", lambda *a, **k: steps.append(1) or real_step(*a, **k))
    assert sampling.sample_text_ids(tiny, [prompt], 5) == [[tiny.eos_id]]
    assert steps == []
    assert sampling.sample_text_ids(tiny, [prompt], 5, stop_early=False) == [[tiny.eos_id]]
    assert len(steps) == 4
