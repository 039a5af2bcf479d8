"""Mistakes around ``worldboot train`` and ``worldboot plan``: a batch that does not split over
the GPUs, an override after ``--resume``, a checkpoint cut short, one cache given twice."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from worldboot.cli import main
from worldboot.errors import ConfigError, ModelError
from worldboot.train import checkpoints
from worldboot.train.config import (
    DataSettings,
    LoraSettings,
    SourceSettings,
    accumulation_steps,
    dedupe_caches,
    fill_sources,
)
from worldboot.train.plan import make_plan
from worldboot.train.recipes import Trainer
from worldboot.train.sft_config import SFTConfig

os.environ["WORLDBOOT_NO_PROGRESS"] = "1"
ROOT = Path(__file__).resolve().parents[2]
CDM = str(ROOT / "configs" / "demo" / "cdm.yaml")


def _cfg(tiny_dir: Path, cache_dir: Path, out: Path, **kw) -> SFTConfig:
    base = dict(task="dynamics", base_model=str(tiny_dir), out=str(out), max_steps=2, batch_size=4,
                micro_batch_size=2, save_every=1, eval_every=0, log_every=1,
                data=DataSettings(sources=[SourceSettings(cache=str(cache_dir))], eval_fraction=0.1))
    base.update(kw)
    return SFTConfig(**base)


def _one_line(err: str, *says: str) -> None:
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert all(s in err for s in says), err


# -- 1. a global batch that does not split over micro-batches and GPUs -----------------------


def test_plan_refuses_the_batch_split_the_trainer_refuses_in_its_words(tiny_dir, cache_dir, tmp_path, capsys):
    cfg = _cfg(tiny_dir, cache_dir, tmp_path / "run", batch_size=16, micro_batch_size=2)
    with pytest.raises(ConfigError) as refused:
        accumulation_steps(cfg, 3)
    plan = make_plan(cfg, str(tiny_dir), gpus=3, gpu_gib=80)
    assert plan.refusal == str(refused.value) and "not a multiple of micro_batch_size 2 x 3 processes" in plan.refusal
    assert plan.to_json()["runnable"] is False and plan.accumulation_steps == 0
    fine = make_plan(cfg, str(tiny_dir), gpus=4, gpu_gib=80)
    assert (fine.refusal, fine.accumulation_steps, fine.to_json()["runnable"]) == ("", 2, True)
    # The trainer refuses with the same line (one process here: 5 is no multiple of 2 x 1).
    odd = _cfg(tiny_dir, cache_dir, tmp_path / "odd", batch_size=5)
    with pytest.raises(ConfigError) as trainer:
        Trainer(odd)._make_accelerator()
    assert str(trainer.value) == make_plan(odd, str(tiny_dir), gpus=1, gpu_gib=80).refusal
    # The command: the plan is printed, and says it would not run, and why.
    argv = ["plan", "--config", CDM, "--base", str(tiny_dir), "--cache", str(cache_dir), "--gpus", "3",
            "batch_size=16", "micro_batch_size=2"]
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps lines
    assert "not runnable on 3 GPU(s): worldboot train would refuse it: batch_size 16 is not a multiple" in out
    assert main([*argv, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["runnable"] is False and got["refusal"] == plan.refusal
    # A batch that splits, on GPUs too small for any strategy: not runnable either.
    small = make_plan(cfg, str(tiny_dir), gpus=4, gpu_gib=0.001)
    assert small.refusal == "" and not any(m.fits for m in small.memory) and small.to_json()["runnable"] is False
    assert main([*argv[:-4], "--gpus", "4", "--gpu-memory", "0.001", "batch_size=16", "micro_batch_size=2"]) == 0
    assert "not runnable on 4 GPU(s): no strategy fits micro-batch 2" in " ".join(capsys.readouterr().out.split())


# -- 2. an override after --resume ------------------------------------------------------------


@pytest.fixture()
def trained_with(monkeypatch):
    """What ``worldboot train`` hands the recipe (config, resume), no training."""
    import worldboot.train.run as run

    seen: dict = {}

    def fake(cfg, resume=False, merge=False):
        seen.update(cfg=cfg, resume=resume)
        return {}

    monkeypatch.setattr(run, "run_training", fake)
    return seen


def test_an_override_after_resume_is_an_override_not_a_checkpoint(tiny_dir, cache_dir, tmp_path, trained_with):
    head = ["train", "dynamics", "--config", CDM, "--base", str(tiny_dir), "--cache", str(cache_dir),
            "--out", str(tmp_path / "run")]
    for words, lr, steps in (
        (["--resume", "optim.lr=1e-4"], 1e-4, 600),
        (["--resume", "optim.lr=1e-4", "max_steps=7"], 1e-4, 7),
        (["max_steps=7", "--resume", "optim.lr=1e-4"], 1e-4, 7),
        (["optim.lr=1e-3", "--resume", "optim.lr=1e-4"], 1e-4, 600),  # the last word wins, as without --resume
        (["--resume", "optim.lr=1e-4", "optim.lr=1e-3"], 1e-3, 600),
        (["--resume=optim.lr=1e-4"], 1e-4, 600),
    ):
        assert main([*head, *words]) == 0, words
        assert trained_with["resume"] is True, words
        assert (trained_with["cfg"].optim.lr, trained_with["cfg"].max_steps) == (lr, steps), words
    # A checkpoint folder stays one, even with a "=" in its name.
    odd = tmp_path / "ckpt=1"
    odd.mkdir()
    assert main([*head, "--resume", str(odd), "max_steps=7"]) == 0
    assert trained_with["resume"] == str(odd) and trained_with["cfg"].max_steps == 7
    assert main([*head, "--resume", "some/ckpt"]) == 0 and trained_with["resume"] == "some/ckpt"


# -- 3. a checkpoint cut short ----------------------------------------------------------------


def _fake_checkpoint(out: Path, step: int) -> Path:
    from safetensors.torch import save_file

    path = checkpoints.checkpoint_dir(out, step)
    path.mkdir(parents=True)
    save_file({"w": torch.zeros(64)}, str(path / "model.safetensors"))
    torch.save({"state": torch.zeros(64)}, path / "optimizer.bin")
    torch.save({"step": step}, path / "random_states_0.pkl")
    checkpoints.write_state(path, step, "dynamics", "base", "fp")
    return path


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.bin", "random_states_0.pkl",
                                  "trainer_state.json"])
@pytest.mark.parametrize("keep", [0, 0.5])
def test_a_file_cut_short_is_named_with_what_to_do(tmp_path, name, keep):
    first, second = _fake_checkpoint(tmp_path, 1), _fake_checkpoint(tmp_path, 2)
    checkpoints.check_intact(second)  # whole: nothing to say
    data = (second / name).read_bytes()
    (second / name).write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelError) as err:
        checkpoints.check_intact(second)
    _one_line(str(err.value), f"checkpoint {second} cannot be loaded", f"its file {name} is damaged or incomplete",
              f"delete {second} and rerun with --resume {first}")
    shutil.rmtree(first)  # none before it: the run starts again
    with pytest.raises(ModelError, match=r"--resume to start again from step 0 \(no earlier checkpoint"):
        checkpoints.check_intact(second)


def test_a_damaged_checkpoint_is_one_line_from_the_command(tiny_dir, cache_dir, tmp_path, capsys):
    from worldboot.train.run import run_training

    out = tmp_path / "run"
    run_training(_cfg(tiny_dir, cache_dir, out, lora=LoraSettings(enabled=False)))  # as cdm.yaml; steps 1, 2
    argv = ["train", "dynamics", "--config", CDM, "--base", str(tiny_dir), "--cache", str(cache_dir),
            "--out", str(out), "batch_size=4", "micro_batch_size=2", "max_steps=3", "save_every=1",
            "data.eval_fraction=0.1", "--resume"]
    step1, step2 = checkpoints.finished_checkpoints(out)
    capsys.readouterr()  # the libraries' progress while training, before the command quiets them
    good = tmp_path / "good"
    shutil.copytree(step2, good)
    # A random state cut short, which accelerate would skip without a word (the resume not exact).
    rng = step2 / "random_states_0.pkl"
    rng.write_bytes(rng.read_bytes()[:100])
    assert main(argv) == 2
    _one_line(capsys.readouterr().err, "its file random_states_0.pkl is damaged or incomplete",
              f"delete {step2} and rerun with --resume {step1}")
    # A file torch refuses only when it loads it (a pickle, not torch.save's archive): named too.
    shutil.copy(good / "random_states_0.pkl", rng)
    (step2 / "optimizer.bin").write_bytes(pickle.dumps({"not": "an optimizer"}))
    assert main(argv) == 2
    _one_line(capsys.readouterr().err, f"checkpoint {step2} cannot be loaded (UnpicklingError",
              "its file optimizer.bin is damaged or incomplete")
    shutil.copy(good / "optimizer.bin", step2 / "optimizer.bin")  # whole again: nothing was lost
    assert main(argv) == 0 and checkpoints.read_state(step2, "dynamics")["global_step"] == 2
    assert [p.name for p in checkpoints.finished_checkpoints(out)] == ["step-0000002", "step-0000003"]


# -- 4. one cache folder given twice ----------------------------------------------------------


def test_one_cache_given_twice_is_read_once_and_said(tiny_dir, cache_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(cache_dir.parent)
    again = f"./{cache_dir.name}/"
    assert dedupe_caches([str(cache_dir), again, f"labelled={cache_dir}"]) == (
        [str(cache_dir)], [f"--cache {again} is {cache_dir} again (the same folder {cache_dir}): its samples are "
                           "read once", f"--cache labelled={cache_dir} is {cache_dir} again (the same folder "
                           f"{cache_dir}): its samples are read once"])
    assert [s.cache for s in fill_sources([], [str(cache_dir), again])] == [str(cache_dir)]
    with pytest.raises(ConfigError, match="name one folder twice: two sources would train on the same samples"):
        fill_sources([], [f"a={cache_dir}", f"b={again}"])
    argv = ["train", "dynamics", "--config", CDM, "--base", str(tiny_dir), "--cache", str(cache_dir),
            "--cache", again, "--print-config"]
    assert main(argv) == 0
    got = capsys.readouterr()
    assert f"note: --cache {again} is {cache_dir} again" in got.err and got.out.count("cache:") == 1
    assert main(["plan", "--config", CDM, "--base", str(tiny_dir), "--cache", str(cache_dir), "--cache", again,
                 "--gpus", "1", "--json"]) == 0
    got = capsys.readouterr()
    assert "read once" in got.err and len(json.loads(got.out)["mixture"]) == 1
    assert main(["train", "dynamics", "--config", CDM, "--cache", f"a={cache_dir}", "--cache", f"b={again}",
                 "--print-config"]) == 2
    _one_line(capsys.readouterr().err, "name one folder twice")


def test_a_cache_that_names_no_folder_is_refused_not_the_current_folder(tiny_dir, cache_dir, tmp_path, capsys,
                                                                         monkeypatch):
    """``--cache labelled=$UNSET`` trained on the current folder when it held a cache."""
    from worldboot.train.data import MixedDataset

    monkeypatch.chdir(cache_dir)  # a cache here: Path("") would read it
    for word in ("labelled=", "", "  "):
        assert main(["train", "dynamics", "--config", CDM, "--base", str(tiny_dir), "--cache", word,
                     "--out", str(tmp_path / "o"), "max_steps=1"]) == 2
        _one_line(capsys.readouterr().err, f"--cache {word!r} names no folder")
    assert not (tmp_path / "o").exists()
    data = DataSettings(sources=[SourceSettings(cache="", name="aurora")])
    with pytest.raises(ConfigError, match=r"data.sources\[0\] \(aurora\) names no cache folder: give --cache aurora=DIR"):
        MixedDataset(data, seed=0)


# -- 5. the recipe as a library: its folder ----------------------------------------------------


def test_the_recipe_refuses_a_users_folder_and_marks_its_own(tiny_dir, cache_dir, tmp_path):
    from worldboot.errors import UsageError
    from worldboot.run_guards import held_stage

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="mine holds files that no worldboot run wrote"):
        Trainer(_cfg(tiny_dir, cache_dir, mine))._check_run_dir()
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    Trainer(_cfg(tiny_dir, cache_dir, tmp_path / "run"))._check_run_dir()  # without RunDir, as a library
    assert held_stage(tmp_path / "run") == "train-dynamics"  # so that `worldboot train --resume` takes it up


def test_a_copied_cache_and_damaged_run_files_are_one_line(tiny_dir, cache_dir, tmp_path, capsys):
    """A copy of a cache beside it trained on each sample twice; a hand-edited cache index or
    checkpoint state gave a KeyError, TypeError or AttributeError."""
    copy = tmp_path / "copy"
    shutil.copytree(cache_dir, copy)
    argv = ["train", "dynamics", "--config", CDM, "--base", str(tiny_dir), "--out", str(tmp_path / "o"), "max_steps=1"]
    assert main([*argv, "--cache", f"a={cache_dir}", "--cache", f"b={copy}"]) == 2
    _one_line(capsys.readouterr().err, "hold the same samples (a copy?)")
    index = json.loads((copy / "index.json").read_text())
    for change in ({"num_shards": None}, {"shards": ["s.safetensors"]}, {"fingerprint": 3}):
        (copy / "index.json").write_text(json.dumps({**index, **change}))
        assert main([*argv, "--cache", str(copy)]) == 2
        _one_line(capsys.readouterr().err, f"{copy / 'index.json'} is damaged")
    ckpt = tmp_path / "ckpt"  # a checkpoint whose state file was edited by hand
    ckpt.mkdir()
    for text, says in (("[1]", "a JSON list"), ('{"global_step": "six", "task": "dynamics"}', 'global_step "six"'),
                       ('{"task": "dynamics"}', "global_step null")):
        (ckpt / "trainer_state.json").write_text(text)
        with pytest.raises(ModelError, match=rf"trainer_state.json is not a worldboot checkpoint's state \({says}\)"):
            checkpoints.read_state(ckpt, "dynamics")


def test_caches_of_two_tokenizers_are_named(tiny_dir, cache_dir, tmp_path, capsys):
    from helpers import square_triplets
    from worldboot.data.tokenize import build_cache
    from worldboot.models import load_backbone
    from worldboot.models.tiny import TinyChameleonSpec, save_tiny_chameleon

    other = save_tiny_chameleon(tmp_path / "other-model", TinyChameleonSpec(image_size=32))
    cache = tmp_path / "other-cache"
    build_cache(square_triplets(tmp_path / "images", 8, seed=2), load_backbone(other), cache, progress=False)
    capsys.readouterr()
    assert main(["train", "dynamics", "--config", CDM, "--base", str(tiny_dir), "--cache", str(cache_dir),
                 "--cache", str(cache), "--out", str(tmp_path / "o"), "max_steps=1"]) == 2
    _one_line(capsys.readouterr().err, f"the caches {cache_dir} and {cache} were made with different tokenizers")
