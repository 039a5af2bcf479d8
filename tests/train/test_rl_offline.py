"""Offline DPO (``rl.candidates``): preference pairs read from a ``worldboot generate --best-of
N --verifier`` folder instead of sampled while training; its bad inputs, one line each."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from helpers import rl_config
from worldboot.errors import ConfigError, DataError, ModelError
from worldboot.train.pairs import read_pairs
from worldboot.train.rl import RLTrainer
from worldboot.train.rl_config import DPOConfig
from worldboot.train.run import run_training


@pytest.fixture(scope="module")
def scored(tmp_path_factory, tiny_dir, cache_dir) -> Path:
    """Best-of-3 predictions of the cache's own triplets, scored by a verifier (the tiny model)."""
    from worldboot.infer.generate import GenerateConfig, run_generate

    out = tmp_path_factory.mktemp("offline") / "pred-bo3"
    cfg = GenerateConfig(manifest=str(cache_dir.parent / "images" / "manifest.jsonl"), out=str(out),
                         world=str(tiny_dir), batch_size=8, best_of=3)
    cfg.verifier.path = str(tiny_dir)
    run_generate(cfg, progress=False)
    return out


def _cfg(base, cache_dir, out, candidates, **kw) -> DPOConfig:
    return rl_config(base, cache_dir, out, **{"max_steps": 8, "objective": "dpo", "candidates": str(candidates), **kw})


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_pairs_are_the_best_and_worst_scored_candidates(scored):
    from safetensors.torch import load_file

    pairs, stats = read_pairs(scored, reward_min=-10.0)
    assert stats.rows == stats.pairs == len(pairs) == 40
    row = json.loads((scored / "predictions.jsonl").read_text().splitlines()[0])
    t = load_file(str(scored / row["codes"]))
    pair = pairs[row["id"]]
    means = t["verifier_mean"].clamp(-10.0, 0.0)
    assert torch.equal(pair.chosen, t["candidates"][int(means.argmax())].long())
    assert torch.equal(pair.rejected, t["candidates"][int(means.argmin())].long())
    assert pair.margin == pytest.approx(float(means.max() - means.min()))
    assert pair.preferred == (pair.margin > 0)


def _rescored(scored: Path, out: Path, means: dict[int, list[float]]) -> list[str]:
    """A copy of ``scored`` whose rows ``i`` get the verifier scores ``means[i]``; their ids."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(scored, out)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    for i, mean in means.items():
        path = out / rows[i]["codes"]
        save_file({**load_file(str(path)), "verifier_mean": torch.tensor(mean)}, str(path))
    return [rows[i]["id"] for i in means]


def test_the_clamp_makes_ties_and_a_tie_weighs_nothing(tiny_dir, cache_dir, scored, tmp_path):
    """Scores below ``reward_min`` clamp to it: two such candidates tie, and a sample whose three
    candidates all fall below is a tie pair (not preferred, margin 0) that adds nothing to the loss."""
    from safetensors.torch import load_file

    tie_id, clamped_id = _rescored(scored, tmp_path / "ties", {0: [-50.0, -60.0, -70.0], 1: [-50.0, -60.0, -1.0]})
    pairs, _ = read_pairs(tmp_path / "ties", reward_min=-10.0)
    assert not pairs[tie_id].preferred and pairs[tie_id].margin == 0.0
    t = load_file(str(tmp_path / "ties" / json.loads(
        (tmp_path / "ties" / "predictions.jsonl").read_text().splitlines()[1])["codes"]))
    clamped = pairs[clamped_id]
    assert clamped.preferred and clamped.margin == pytest.approx(9.0)
    assert torch.equal(clamped.chosen, t["candidates"][2].long())
    assert torch.equal(clamped.rejected, t["candidates"][0].long())  # -50 and -60 tie at -10: the first
    recipe = RLTrainer(_cfg(tiny_dir, cache_dir, tmp_path / "run", tmp_path / "ties", reward_min=-10.0))
    recipe.setup()
    try:
        entries = recipe.data.train + recipe.data.eval
        items = [it for it in (recipe.data.item(e) for e in entries) if str(it["id"]) in (tie_id, clamped_id)]
        assert len(items) == 2
        pairs_t, preferred = recipe._pairs_of(items)
        assert preferred.tolist() == [str(it["id"]) == clamped_id for it in items]
        with torch.no_grad():
            loss, _ = recipe._dpo_sums(items, pairs_t, preferred)
    finally:
        recipe.cleanup()
    assert float(loss) == pytest.approx(math.log(2), rel=1e-5)  # the tie adds 0, the preferred pair log 2


def test_offline_dpo_lowers_the_loss_of_its_pairs(tiny_dir, cache_dir, scored, tmp_path):
    """At step 1 the policy is the reference (LoRA's B starts at zero), so each preferred pair
    costs log 2; training on the pairs lowers their loss and ranks more of them right. Nothing is
    sampled or scored while training."""
    cfg = _cfg(tiny_dir, cache_dir, tmp_path / "run", scored)
    recipe = RLTrainer(cfg)
    recipe.setup()
    try:
        assert recipe.verifier is None and recipe.pairs is not None
        assert len(recipe.data.train) + len(recipe.data.eval) == 40

        def no_sampling(*_a, **_k):
            raise AssertionError("offline DPO sampled")

        recipe.sample = recipe.rewards = no_sampling
        entries = recipe._global_batch(0)
        items = [recipe.data.item(e) for e in entries]
        pairs, preferred = recipe._pairs_of(items)
        with torch.no_grad():
            before, right_before = recipe._dpo_sums(items, pairs, preferred)
        assert float(before) == pytest.approx(math.log(2) * float(preferred.sum()), rel=1e-5)
        assert right_before == 0  # equal log-ratios: none ranked right yet
        first = recipe.train_step(0)
        assert first["loss"] == pytest.approx(float(before) / len(entries), rel=1e-5)
        assert first["score_s"] == 0 and "reward" not in first  # nothing scored (sample_s: reading the pairs)
        for step in range(1, 8):
            recipe.train_step(step)
        with torch.no_grad():
            after, right_after = recipe._dpo_sums(items, pairs, preferred)
        held = recipe.evaluate()
    finally:
        recipe.cleanup()
    assert float(after) < float(before), (float(before), float(after))
    assert right_after > 0
    assert set(held) == {"eval_dpo_loss", "eval_pair_accuracy"} and 0.0 <= held["eval_pair_accuracy"] <= 1.0


def test_resume_after_a_kill_gives_the_same_adapter(tiny_dir, cache_dir, scored, tmp_path):
    from safetensors.torch import load_file

    run_training(_cfg(tiny_dir, cache_dir, tmp_path / "straight", scored, max_steps=4, save_every=2))
    killed = _cfg(tiny_dir, cache_dir, tmp_path / "killed", scored, max_steps=4, save_every=2)
    first = RLTrainer(killed)
    first.setup()
    first.train(stop_after=3)
    first.cleanup()
    del first
    run_training(killed, resume=True)
    a = load_file(str(tmp_path / "straight" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "adapter" / "adapter_model.safetensors"))
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in a.items() if "lora_B" in k)
    for k in a:  # the same steps from the exact saved state: bit for bit
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)
    assert [r["step"] for r in _rows(tmp_path / "killed") if "loss" in r and "final" not in r] == [1, 2, 3, 4]


def test_a_resume_on_other_pairs_is_refused(tiny_dir, cache_dir, scored, tmp_path):
    """The checkpoint records the pairs it trained on: redrawn or rescored candidates under the
    same folder would silently change the data after the resume."""
    folder = tmp_path / "cands"
    _rescored(scored, folder, {})
    cfg = _cfg(tiny_dir, cache_dir, tmp_path / "run", folder, max_steps=4, save_every=2)
    first = RLTrainer(cfg)
    first.setup()
    first.train(stop_after=2)
    first.cleanup()
    import shutil

    from safetensors.torch import load_file

    row = json.loads((scored / "predictions.jsonl").read_text().splitlines()[0])
    flipped = -load_file(str(scored / row["codes"]))["verifier_mean"].clamp(-10.0, 0.0) - 10.0
    shutil.rmtree(folder)
    _rescored(scored, folder, {0: flipped.tolist()})  # row 0's best candidate becomes its worst
    with pytest.raises(ConfigError, match="was trained on other data than this run's"):
        run_training(cfg, resume=True)
    shutil.rmtree(folder)
    _rescored(scored, folder, {})
    run_training(cfg, resume=True)  # the same pairs again: resumes
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()


def test_bad_candidates_are_refused_in_one_line(tiny_dir, cache_dir, scored, tmp_path):
    from safetensors.torch import load_file, save_file

    from worldboot.infer.generate import GenerateConfig, run_generate
    from worldboot.train.resolve import resolve_train_config

    with pytest.raises(ConfigError, match="only DPO trains on .*world_dpo.yaml. or --objective dpo"):
        resolve_train_config("configs/demo/world_rl.yaml", task="world-rl", candidates=str(scored))
    with pytest.raises(ConfigError, match="unknown config key 'candidates'"):  # a GRPO config has no such field
        resolve_train_config("configs/demo/world_rl.yaml", ["candidates=x"], task="world-rl")
    with pytest.raises(DataError, match="candidates folder not found: .*nowhere"):
        RLTrainer(_cfg(tiny_dir, cache_dir, tmp_path / "b", tmp_path / "nowhere")).setup()
    with pytest.raises(DataError, match="has no predictions.jsonl"):
        RLTrainer(_cfg(tiny_dir, cache_dir, tmp_path / "c", cache_dir)).setup()
    # Candidates no verifier scored: best-of-2 without --verifier.
    unscored = tmp_path / "unscored"
    run_generate(GenerateConfig(manifest=str(cache_dir.parent / "images" / "manifest.jsonl"), out=str(unscored),
                                world=str(tiny_dir), batch_size=8, best_of=2), progress=False)
    with pytest.raises(DataError, match=r"no sample .* scored by a verifier \(40 rows: 0 with one candidate, 40 unscored\)"):
        RLTrainer(_cfg(tiny_dir, cache_dir, tmp_path / "d", unscored)).setup()
    # A folder whose source codes are not the cache's (as from a world model with another tokenizer).
    row = json.loads((unscored / "predictions.jsonl").read_text().splitlines()[0])
    t = load_file(str(scored / row["codes"]))
    t["source"] = (t["source"] + 1) % 8
    tampered = tmp_path / "tampered"
    import shutil

    shutil.copytree(scored, tampered)
    save_file(t, str(tampered / row["codes"]))
    with pytest.raises(ModelError, match=f"for sample '{row['id']}' were drawn from other source codes"):
        RLTrainer(_cfg(tiny_dir, cache_dir, tmp_path / "e", tampered)).setup()
    # Broken codes files: cut, without the scores, with a NaN score.
    for name, change, message in (
        ("cut", lambda p: p.write_bytes(p.read_bytes()[:40]), "cannot read"),
        ("unscored-file", lambda p: save_file({k: v for k, v in load_file(str(p)).items() if k != "verifier_mean"},
                                              str(p)), "has no verifier_mean"),
        ("nan", lambda p: save_file({**load_file(str(p)), "verifier_mean": torch.full((3,), float("nan"))}, str(p)),
         "score is NaN"),
    ):
        broken = tmp_path / name
        shutil.copytree(scored, broken)
        change(broken / row["codes"])
        with pytest.raises(DataError, match=f"sample '{row['id']}': .*{message}"):
            RLTrainer(_cfg(tiny_dir, cache_dir, tmp_path / f"run-{name}", broken)).setup()
    assert not any((tmp_path / n / "metrics.jsonl").exists() for n in "abcde")
