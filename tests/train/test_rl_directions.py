"""What world-rl (the CWM against a frozen CDM) and dynamics-rl (the CDM against a frozen world
model) share: the loop of :class:`~worldboot.train.rl.RLTrainer`, so the same refusals and the
same exact resume, run here for both directions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import rl_config
from worldboot.errors import ModelError
from worldboot.train.rl import RLTrainer
from worldboot.train.rl_dynamics import DynamicsRLTrainer
from worldboot.train.run import run_training

#: Per direction: its trainer, its RL settings beyond the verifier, the steps of a short run,
#: and the frozen model's name in its error messages.
DIRECTIONS = {
    "world-rl": (RLTrainer, {"group_size": 3}, 6, "world model", "CDM"),
    "dynamics-rl": (DynamicsRLTrainer, {"group_size": 3, "max_new_tokens": 6}, 4, "dynamics model", "world model"),
}


def _cfg(task, base, verifier, cache_dir, out, **kw):
    _, rl, steps, _, _ = DIRECTIONS[task]
    return rl_config(base, cache_dir, out, **{"task": task, "max_steps": steps, "verifier": str(verifier), **rl, **kw})


@pytest.mark.parametrize("task", DIRECTIONS)
def test_a_verifier_with_another_tokenizer_is_refused(task, tiny_dir, cache_dir, tmp_path):
    from worldboot.models.tiny import TinyChameleonSpec, save_tiny_chameleon

    trainer, _, _, policy, _ = DIRECTIONS[task]
    other = save_tiny_chameleon(tmp_path / "other", TinyChameleonSpec(codebook=256))
    recipe = trainer(_cfg(task, tiny_dir, other, cache_dir, tmp_path / "run"))
    with pytest.raises(ModelError, match=f"another image tokenizer than the {policy}"):
        recipe.setup()
    recipe.cleanup()


@pytest.mark.parametrize("task", DIRECTIONS)
def test_a_nan_reward_stops_with_one_line(task, tiny_dir, cache_dir, tmp_path):
    from worldboot.models import load_backbone

    frozen = DIRECTIONS[task][4]
    broken = load_backbone(tiny_dir)
    with torch.no_grad():
        broken.core.lm_head.weight.fill_(float("nan"))
    broken.save(tmp_path / "nan")
    with pytest.raises(ModelError, match=rf"gave a NaN reward for sample .* at step 1: check the {frozen}"):
        run_training(_cfg(task, tiny_dir, tmp_path / "nan", cache_dir, tmp_path / "run"))
    assert not (tmp_path / "run" / "adapter").exists()


@pytest.mark.parametrize("objective", ["grpo", "dpo"])
@pytest.mark.parametrize("task", DIRECTIONS)
def test_resume_after_a_kill_gives_the_same_adapter(task, objective, tiny_dir, cache_dir, tmp_path):
    from safetensors.torch import load_file

    trainer, _, steps, _, _ = DIRECTIONS[task]
    run_training(_cfg(task, tiny_dir, tiny_dir, cache_dir, tmp_path / "straight", save_every=2, objective=objective))
    killed = _cfg(task, tiny_dir, tiny_dir, cache_dir, tmp_path / "killed", save_every=2, objective=objective)
    first = trainer(killed)
    first.setup()
    first.train(stop_after=3)  # the last checkpoint is step 2
    first.cleanup()
    del first
    result = run_training(killed, resume=True)
    a = load_file(str(tmp_path / "straight" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in a.items() if "lora_B" in k)  # it trained
    for k in a:  # the same steps from the exact saved state: bit for bit
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)
    assert "eval_reward" in result
    rows = [json.loads(line) for line in (Path(tmp_path / "killed") / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward" in r] == list(range(1, steps + 1))
    assert all(r["sample_s"] >= 0 and r["score_s"] >= 0 and r["update_s"] >= 0 for r in rows if "reward" in r)
