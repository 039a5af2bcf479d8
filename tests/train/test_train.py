"""Training recipes on the tiny model: loss falls, exact resume, adapters reload, bad input, 2 processes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import adamw_atol, assert_adapters_agree, assert_losses_agree, f32_atol
from worldboot.errors import ConfigError, DataError, ModelError
from worldboot.train.config import DataSettings, LoraSettings, OptimSettings, SourceSettings
from worldboot.train.recipes import Trainer
from worldboot.train.run import run_training
from worldboot.train.sft_config import SFTConfig

os.environ["WORLDBOOT_NO_PROGRESS"] = "1"
ROOT = Path(__file__).resolve().parents[2]


def _cfg(tiny_dir, cache_dir, out, task="dynamics", **kw) -> SFTConfig:
    base = dict(
        task=task,
        base_model=str(tiny_dir),
        out=str(out),
        max_steps=12,
        batch_size=4,
        micro_batch_size=2,
        save_every=0,
        eval_every=0,
        log_every=1,
        data=DataSettings(sources=[SourceSettings(cache=str(cache_dir))], eval_fraction=0.1),
        optim=OptimSettings(lr=5e-3, warmup_steps=0),
    )
    base.update(kw)
    return SFTConfig(**base)


def _losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.parametrize("task", ["dynamics", "world"])
def test_loss_falls(tiny_dir, cache_dir, tmp_path, task):
    cfg = _cfg(tiny_dir, cache_dir, tmp_path / task, task=task, max_steps=30, optim=OptimSettings(lr=1e-2, warmup_steps=0))
    if task == "world":
        # A random 2-layer model has no image prior for LoRA to steer (Anole has); the world
        # test trains every weight, as the demo's pre-training does.
        cfg.loss.weighting = "l2"
        cfg.lora.enabled = False
        cfg.optim.lr = 3e-3
    run_training(cfg)
    losses = _losses(tmp_path / task)
    assert len(losses) == 30
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - 0.3, (first, last)
    saved = "adapter/adapter_model.safetensors" if cfg.lora.enabled else "merged/model.safetensors"
    assert (tmp_path / task / saved).is_file()
    assert (tmp_path / task / "config.yaml").is_file() and (tmp_path / task / "meta.json").is_file()


def test_resume_continues_exactly(tiny_dir, cache_dir, tmp_path):
    straight = _cfg(tiny_dir, cache_dir, tmp_path / "straight", save_every=3)
    full = run_training(straight)

    killed = _cfg(tiny_dir, cache_dir, tmp_path / "killed", save_every=3)
    first = Trainer(killed)
    first.setup()
    first.train(stop_after=7)  # "killed" after step 7: the last checkpoint is step 6
    first.cleanup()
    del first
    # Again into the killed run's folder without --resume: refused, nothing of it touched.
    before = sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir())
    metrics = (tmp_path / "killed" / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match="holds an earlier run .*--resume"):
        run_training(killed)
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir()) == before
    assert (tmp_path / "killed" / "metrics.jsonl").read_text() == metrics
    # A checkpoint whose optimizer state is some other pickle: one line, the code never runs.
    import pickle
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "killed", bad)
    step = sorted((bad / "checkpoints").iterdir())[-1]
    (step / "optimizer.bin").write_bytes(pickle.dumps(shutil.rmtree))
    with pytest.raises(ModelError, match=rf"checkpoint {step} cannot be loaded \(UnpicklingError"):
        run_training(_cfg(tiny_dir, cache_dir, bad, save_every=3), resume=True)
    (step / "optimizer.bin").write_bytes((tmp_path / "killed" / step.relative_to(bad) / "optimizer.bin").read_bytes()[:100])
    with pytest.raises(ModelError, match=rf"checkpoint {step} cannot be loaded \(BadZipFile: .*optimizer.bin is damaged"):  # truncated
        run_training(_cfg(tiny_dir, cache_dir, bad, save_every=3), resume=True)
    # Other data under the same step counter (a cap, a seed): refused before the model loads.
    import dataclasses

    import worldboot.models as models

    def no_load(*_a, **_k):
        raise AssertionError("the model was loaded before the data was checked")

    for change in (
        {"data": DataSettings(sources=[SourceSettings(cache=str(cache_dir), max_per_subset={"squares/left": 3})],
                              eval_fraction=0.1)},
        {"seed": killed.seed + 1},
    ):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(models, "load_backbone", no_load)
            with pytest.raises(ConfigError, match="was trained on other data than this run's"):
                run_training(dataclasses.replace(killed, **change), resume=True)
    resumed = run_training(killed, resume=True)
    # The same steps in the same order from the exact saved state (weights, optimiser, random
    # state): bit for bit, whatever the instruction set.
    assert resumed["loss"] == full["loss"]
    assert _losses(tmp_path / "straight")[-1] == resumed["loss"]
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "straight" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_adapter_and_merged_reload_with_same_scores(tiny_dir, cache_dir, tmp_path):
    from worldboot.data.cache import CachedTripletDataset
    from worldboot.models import load_backbone

    cfg = _cfg(tiny_dir, cache_dir, tmp_path / "run", max_steps=6)
    recipe = Trainer(cfg)
    recipe.setup()
    recipe.train()
    recipe.merge()
    items = [CachedTripletDataset(cache_dir)[i] for i in range(3)]
    examples = [recipe.backbone.dynamics_example(it["source_codes"], it["target_codes"], it["action"]) for it in items]
    trained = recipe.backbone.score(examples).total
    recipe.cleanup()

    base = load_backbone(tiny_dir).score(examples).total
    # The same weights in another arrangement (the adapter beside the base, or merged into it and
    # rounded once): a total is a float32 sum of one-signed log-probabilities, so it bounds them.
    rounding = f32_atol(trained.abs().max())
    assert float((trained - base).abs().min()) > 10 * rounding  # training changed the model
    adapter = load_backbone(tmp_path / "run" / "adapter").score(examples).total
    merged = load_backbone(tmp_path / "run" / "merged").score(examples).total
    run_dir = load_backbone(tmp_path / "run").score(examples).total  # a run directory picks merged/
    torch.testing.assert_close(adapter, trained, atol=rounding, rtol=0)
    torch.testing.assert_close(merged, trained, atol=rounding, rtol=0)
    torch.testing.assert_close(run_dir, merged, atol=0, rtol=0)


@pytest.mark.parametrize("lora", [True, False])
def test_snapshots_are_the_model_at_their_step(tiny_dir, cache_dir, tmp_path, lora):
    """A snapshot at step 3 of 6 is a model directory with the weights of step 3: the same as a
    run stopped there (the learning rate follows the 6-step schedule in both)."""
    from worldboot.data.cache import CachedTripletDataset
    from worldboot.models import load_backbone

    lora_settings = LoraSettings(enabled=lora, dropout=0.0)
    run_training(_cfg(tiny_dir, cache_dir, tmp_path / "run", max_steps=6, snapshot_steps=[3], lora=lora_settings))
    stopped = Trainer(_cfg(tiny_dir, cache_dir, tmp_path / "stopped", max_steps=6, lora=lora_settings))
    stopped.setup()
    stopped.train(stop_after=3)
    items = [CachedTripletDataset(cache_dir)[i] for i in range(3)]
    examples = [stopped.backbone.dynamics_example(it["source_codes"], it["target_codes"], it["action"]) for it in items]
    at_3 = stopped.backbone.score(examples).total
    stopped.cleanup()
    snapshot = load_backbone(tmp_path / "run" / "snapshots" / "step-0000003").score(examples).total
    final = load_backbone(tmp_path / "run").score(examples).total
    # The same weights, reloaded (and for LoRA applied anew): float32 rounding of the scores.
    torch.testing.assert_close(snapshot, at_3, atol=f32_atol(at_3.abs().max()), rtol=0)
    assert not torch.allclose(snapshot, final, atol=1e-3)


def test_a_run_trained_on_top_of_a_run_directory_reloads(tiny_dir, cache_dir, tmp_path):
    """A run whose base is another run's directory (as the demo's CWM + GRPO starts from the
    CWM's run): loading it opens the recorded run the same way (its merged/ model, or its
    adapter merged in) and puts the new adapter on top, scoring as the trainer did."""
    from worldboot.data.cache import CachedTripletDataset
    from worldboot.models import load_backbone

    items = [CachedTripletDataset(cache_dir)[i] for i in range(3)]
    for first_lora in (False, True):
        first, second = tmp_path / f"first-{first_lora}", tmp_path / f"second-{first_lora}"
        run_training(_cfg(tiny_dir, cache_dir, first, max_steps=3, lora=LoraSettings(enabled=first_lora)))
        recipe = Trainer(_cfg(first, cache_dir, second, max_steps=3))
        recipe.setup()
        recipe.train()
        examples = [recipe.backbone.dynamics_example(it["source_codes"], it["target_codes"], it["action"])
                    for it in items]
        trained = recipe.backbone.score(examples).total
        recipe.save_final()
        recipe.cleanup()
        assert not (second / "merged").exists()
        reloaded = load_backbone(second).score(examples).total
        rounding = f32_atol(trained.abs().max())  # as above: the same weights, arranged anew
        torch.testing.assert_close(reloaded, trained, atol=rounding, rtol=0)
        below = load_backbone(first).score(examples).total
        assert float((reloaded - below).abs().min()) > 10 * rounding  # the second adapter is applied


def test_weighted_and_plain_agree_with_unit_weights(tiny_dir, cache_dir, tmp_path):
    """The recipe's loss with uniform_mix=1 (all weights 1) equals the plain loss, step by step."""
    plain = _cfg(tiny_dir, cache_dir, tmp_path / "plain", task="world", max_steps=3)
    ones = _cfg(tiny_dir, cache_dir, tmp_path / "ones", task="world", max_steps=3)
    ones.loss.weighting, ones.loss.uniform_mix = "l2", 1.0
    run_training(plain)
    run_training(ones)
    # Weights of exactly 1 make the same float32 operations: equal, bit for bit.
    assert _losses(tmp_path / "plain") == _losses(tmp_path / "ones")


def test_a_run_killed_before_its_first_checkpoint_starts_over_without_twice_logged_steps(
    tiny_dir, cache_dir, tmp_path
):
    cfg = _cfg(tiny_dir, cache_dir, tmp_path / "early", save_every=50)
    first = Trainer(cfg)
    first.setup()
    first.train(stop_after=5)  # "killed" before any checkpoint
    first.cleanup()
    del first
    run_training(cfg, resume=True)
    rows = [json.loads(line) for line in (tmp_path / "early" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r and "final" not in r] == list(range(1, 13))


def test_bad_input_is_named_before_compute(tiny_dir, cache_dir, tmp_path):
    with pytest.raises(DataError, match="cache not found: .*nowhere"):
        Trainer(_cfg(tiny_dir, tmp_path / "nowhere", tmp_path / "r1")).setup()
    with pytest.raises(ModelError, match="base model directory not found"):
        Trainer(_cfg(tmp_path / "no-model", cache_dir, tmp_path / "r2")).setup()
    with pytest.raises(DataError, match="no global batch"):
        Trainer(_cfg(tiny_dir, cache_dir, tmp_path / "r3", batch_size=512, micro_batch_size=2)).setup()
    with pytest.raises(ConfigError, match="multiple of micro_batch_size"):
        Trainer(_cfg(tiny_dir, cache_dir, tmp_path / "r4", batch_size=5, micro_batch_size=2)).setup()
    with pytest.raises(ConfigError, match=r"lora.target_modules': \['nope'\] match no layer .*q_proj"):
        Trainer(_cfg(tiny_dir, cache_dir, tmp_path / "r6", lora=LoraSettings(target_modules=["nope"]))).setup()
    with pytest.raises(ConfigError, match=r"optim.betas': two numbers in \[0, 1\), got \[0.9\]"):
        OptimSettings(betas=[0.9])
    # A cache made by another tokenizer.
    from worldboot.models.tiny import TinyChameleonSpec, save_tiny_chameleon

    other = save_tiny_chameleon(tmp_path / "other", TinyChameleonSpec(codebook=256))
    with pytest.raises(ModelError, match="another backbone"):
        Trainer(_cfg(other, cache_dir, tmp_path / "r5")).setup()


def test_adapter_that_does_not_fit_its_base(tiny_dir, cache_dir, tmp_path):
    from worldboot.models import load_backbone
    from worldboot.models.tiny import TinyChameleonSpec, save_tiny_chameleon

    run_training(_cfg(tiny_dir, cache_dir, tmp_path / "run", max_steps=1))
    wider = save_tiny_chameleon(tmp_path / "wider", TinyChameleonSpec(hidden=64, heads=2))
    meta = tmp_path / "run" / "adapter" / "worldboot.json"
    meta.write_text(json.dumps({"task": "dynamics", "base_model": str(wider)}))
    with pytest.raises(ModelError, match="does not fit the base model"):
        load_backbone(tmp_path / "run" / "adapter")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
def test_two_processes_match_one(tiny_dir, cache_dir, tmp_path):
    """DDP over 2 CPU processes (gloo) with micro-batch 1 = one process with micro-batch 2.

    The two runs sum the same per-token losses in another order, so they agree to float32
    rounding carried through 4 AdamW steps: helpers.adamw_atol derives the bound (l2, over the
    whole adapter) with AdamW's eps at 1, where an update's slope in the gradient is lr / eps.
    LoRA dropout is 0 so both runs draw no random masks.
    """
    from safetensors.torch import load_file

    overrides = [
        f"base_model={tiny_dir}", "max_steps=4", "batch_size=2", "save_every=0", "eval_every=0", "log_every=1",
        "lora.dropout=0.0", "optim.lr=5e-3", "optim.eps=1.0", "optim.warmup_steps=0", "data.eval_fraction=0.1",
    ]
    cli = [sys.executable, "-m", "worldboot.cli", "train", "dynamics", "--cache", str(cache_dir)]
    env = {**os.environ, "WORLDBOOT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    one = subprocess.run([*cli, "--out", str(tmp_path / "one"), *overrides, "micro_batch_size=2"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    two = subprocess.run(
        [accelerate, "launch", "--config_file", str(ROOT / "configs" / "accelerate" / "ddp_cpu.yaml"),
         "--main_process_port", str(_free_port()), "-m", "worldboot.cli", "train", "dynamics",
         "--cache", str(cache_dir), "--out", str(tmp_path / "two"), *overrides, "micro_batch_size=1"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a = load_file(str(tmp_path / "one" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "two" / "adapter" / "adapter_model.safetensors"))
    assert_adapters_agree(a, b, adamw_atol(steps=4, lr=5e-3, eps=1.0, max_grad_norm=1.0))
    assert_losses_agree(_losses(tmp_path / "one"), _losses(tmp_path / "two"), lr=5e-3, eps=1.0, max_grad_norm=1.0)


def test_gradient_checkpointing_gives_the_same_losses(tiny_dir, cache_dir, tmp_path):
    """Recomputing activations in backward changes memory, not the numbers."""
    plain = _cfg(tiny_dir, cache_dir, tmp_path / "plain", max_steps=3, lora=LoraSettings(dropout=0.0))
    ckpt = _cfg(tiny_dir, cache_dir, tmp_path / "ckpt", max_steps=3, lora=LoraSettings(dropout=0.0),
                gradient_checkpointing=True)
    run_training(plain)
    run_training(ckpt)
    # The recomputed forward is the same float32 operations in the same order: bit for bit.
    assert _losses(tmp_path / "plain") == _losses(tmp_path / "ckpt")


def test_tensorboard_tracker_logs_every_metric(tiny_dir, cache_dir, tmp_path):
    """`trackers: [tensorboard]` writes event files with the run's loss at every logged step."""
    pytest.importorskip("tensorboard", reason="tensorboard is part of the dev install")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_training(_cfg(tiny_dir, cache_dir, tmp_path / "run", max_steps=3, eval_every=3, trackers=["tensorboard"]))
    events = sorted((tmp_path / "run").rglob("events.out.tfevents.*"))
    assert events, sorted(p.name for p in (tmp_path / "run").rglob("*"))
    acc = EventAccumulator(str(min(events, key=lambda p: len(p.parts)).parent))  # the run's, not the hparams'
    acc.Reload()
    assert {"loss", "lr", "eval_loss"} <= set(acc.Tags()["scalars"])
    logged = [(e.step, e.value) for e in acc.Scalars("loss")]
    assert [s for s, _ in logged] == [1, 2, 3]
    assert [v for _, v in logged] == pytest.approx(_losses(tmp_path / "run"), rel=1e-6)


def test_training_mistakes_are_one_line(tiny_dir, cache_dir, tmp_path):
    from worldboot.config import load_config

    assert load_config(SFTConfig, overrides=["mixed_precision=no"]).mixed_precision == "no"  # not YAML's false
    for n, (change, says) in enumerate((
        ({"trackers": ["nosuch"]}, r"'trackers': 'nosuch' is not a tracker accelerate can log to here"),
        ({"data": DataSettings(sources=[SourceSettings(cache=str(cache_dir), max_per_subset={"squares/nope": 2})])},
         r"max_per_subset names 'squares/nope'.*its subsets: squares/left, squares/right"),
        ({"data": DataSettings(sources=[SourceSettings(cache=str(cache_dir), max_per_subset={"squares/left": -1})])},
         r"max_per_subset.squares/left must be at least 0"),
        ({"data": DataSettings(sources=[SourceSettings(cache=str(cache_dir))], eval_fraction=1.0)},
         r"no usable training sample .*data.eval_fraction 1 holds them out"),
    )):
        with pytest.raises((ConfigError, DataError), match=says):
            Trainer(_cfg(tiny_dir, cache_dir, tmp_path / f"m{n}", **change)).setup()
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="fp16 needs a GPU"):
            Trainer(_cfg(tiny_dir, cache_dir, tmp_path / "fp16", mixed_precision="fp16")).setup()
    # A diverging run stops at its first non-finite loss instead of saving NaN weights.
    with pytest.raises(ConfigError, match=r"training diverged; lower optim.lr"):
        run_training(_cfg(tiny_dir, cache_dir, tmp_path / "nan", max_steps=6, optim=OptimSettings(lr=1e30, warmup_steps=0)))
    assert not (tmp_path / "nan" / "adapter").exists()
    # --resume on a finished run that kept no checkpoint: refused, its model untouched.
    done = _cfg(tiny_dir, cache_dir, tmp_path / "done", max_steps=2)
    run_training(done)
    before = (tmp_path / "done" / "adapter" / "adapter_model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="holds a finished run and no checkpoint"):
        run_training(done, resume=True)
    assert (tmp_path / "done" / "adapter" / "adapter_model.safetensors").read_bytes() == before
    # ... and one with nothing held out (the demo's recipes), which logs no final evaluation.
    plain = _cfg(tiny_dir, cache_dir, tmp_path / "plain", max_steps=2,
                 data=DataSettings(sources=[SourceSettings(cache=str(cache_dir))], eval_fraction=0.0))
    run_training(plain)
    before = [(tmp_path / "plain" / name).read_bytes() for name in ("adapter/adapter_model.safetensors", "metrics.jsonl")]
    with pytest.raises(ConfigError, match="holds a finished run and no checkpoint"):
        run_training(plain, resume=True)
    assert [(tmp_path / "plain" / name).read_bytes()
            for name in ("adapter/adapter_model.safetensors", "metrics.jsonl")] == before
