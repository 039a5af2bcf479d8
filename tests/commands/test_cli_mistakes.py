"""Mistakes in configs and arguments, each answered in one line before any work: keys given
twice, keys that are not names, text fields given number-like text, weight types and devices
this machine lacks, out-of-range demo sizes, a --fresh that would delete a folder that is not
a demo run, and figure outputs."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from worldboot.cli import main
from worldboot.config import load_config
from worldboot.errors import DataError
from worldboot.infer.generate import GenerateConfig


def _one_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"worldboot {command}: error: ") and "Traceback" not in err[0], err
    return err[0]


@pytest.mark.parametrize(("text", "says"), [
    ("optim: {lr: 0.1}\nmax_steps: 3\noptim: {weight_decay: 0.1}\n", "bad.yaml:3: not valid YAML (key 'optim' given twice"),
    ("1: 2\n", "unknown config key '1'"),
    ("optim: {null: 2}\n", "unknown config key 'optim.None'"),
    ("false\n", "a config must be a mapping"),
])
def test_yaml_mistakes(text, says, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text(text)
    assert main(["train", "dynamics", "--base", "b", "--cache", "c", "--out", str(tmp_path / "o"),
                 "--config", str(tmp_path / "bad.yaml")]) == 2
    assert says in _one_line(capsys, "train")


def test_text_fields_take_number_like_text_and_hints_are_close():
    assert load_config(GenerateConfig, overrides=["out=2024", "seed=3"]).out == "2024"
    assert load_config(GenerateConfig, overrides=["out=1e3"]).out == "1e3"
    assert load_config(GenerateConfig, overrides=["out=on"]).out == "on"
    from worldboot.errors import ConfigError

    with pytest.raises(ConfigError, match="known keys") as err:
        load_config(GenerateConfig, overrides=["bogus.key=1"])
    assert "did you mean" not in str(err.value)
    with pytest.raises(ConfigError, match="did you mean 'seed'"):
        load_config(GenerateConfig, overrides=["sed=1"])


def test_weight_types_devices_and_tasks_the_model_cannot_take(tiny_dir, tmp_path, capsys):
    Image.new("RGB", (16, 16), (200, 30, 30)).save(tmp_path / "a.png")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "subset": "squares", "source": "a.png", "action": "push"}) + "\n")
    base = ["generate", str(manifest), "--world", str(tiny_dir), "--out", str(tmp_path / "p")]
    assert main([*base, "--dtype", "float17"]) == 2
    assert "unknown dtype 'float17'; choose from float32, bfloat16, float16" in _one_line(capsys, "generate")
    if not torch.cuda.is_available():
        assert main([*base, "--device", "cuda"]) == 2
        assert "no CUDA GPU" in _one_line(capsys, "generate")
    assert main([*base, "--actors", "2"]) == 2
    assert "--actors applies to --engine ray, and this run's engine is local" in _one_line(capsys, "generate")
    assert main([*base, "--task", "world/nope"]) == 2
    assert "no entries for task world/nope (tasks in the file: squares)" in _one_line(capsys, "generate")
    assert not (tmp_path / "p").exists()
    with pytest.raises(DataError):  # --debug after the command, as --verbose: the error is raised
        main([*base, "--task", "world/nope", "--debug"])


def test_demo_sizes_and_fresh(tmp_path, capsys):
    for word, says in (("cdm.max_steps=-1", "cdm (configs/demo/cdm.yaml): max_steps must be at least 0"),
                       ("torch_threads=-1", "torch_threads"), ("best_of=[0]", "best_of: sizes of at least 1"),
                       ("cwm.loss.uniform_mix=2", "cwm (configs/demo/cwm.yaml): loss.uniform_mix"),
                       ("base_preset=nosuch", "unknown base preset 'nosuch'; choose from smoke, paper")):
        assert main(["demo", word, "--out", str(tmp_path / "d")]) == 2
        assert says in _one_line(capsys, "demo")
        assert not (tmp_path / "d").exists()  # refused before the run folder is made
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "thesis.tex").write_text("years of work")
    assert main(["demo", "--fresh", "--out", str(keep)]) == 2
    assert "is not a demo run" in _one_line(capsys, "demo")
    assert (keep / "thesis.tex").read_text() == "years of work"


def test_demo_fresh_through_a_link_empties_the_linked_run(tmp_path, monkeypatch, capsys):
    from worldboot.demo import Demo

    run = tmp_path / "scratch" / "demo"
    (run / "cdm").mkdir(parents=True)
    (run / "stages.json").write_text("{}")
    (run / "cdm" / "adapter.bin").write_text("old")
    link = tmp_path / "demo"
    link.symlink_to(run, target_is_directory=True)
    monkeypatch.setattr(Demo, "run", lambda self: self.out / "report.md")  # the stages are not under test
    assert main(["demo", "--fresh", "--out", str(link)]) == 0, capsys.readouterr().err
    assert link.is_symlink() and run.is_dir() and list(run.iterdir()) == []  # a traceback before


def test_probe_batch_size_and_figure_outputs(tmp_path, capsys):
    assert main(["probe", "m.jsonl", "--model", "x", "--out", str(tmp_path / "p"), "batch_size=0"]) == 2
    assert "batch_size must be at least 1" in _one_line(capsys, "probe")
    assert main(["figures", "weights", str(tmp_path), "--out", str(tmp_path / "f.jpgx")]) == 2
    assert "cannot write .jpgx images" in _one_line(capsys, "figures")
    with pytest.raises(SystemExit):  # argparse: "argument --n: must be at least 1"
        main(["figures", "weights", str(tmp_path), "--n", "0"])
    assert "argument --n: must be at least 1, got 0" in capsys.readouterr().err


def test_model_folders_that_are_not_one(tmp_path, capsys):
    (tmp_path / "weights.bin").write_bytes(b"")
    assert main(["info", "--model", str(tmp_path / "weights.bin")]) == 2
    assert "is a file: give the model's folder" in _one_line(capsys, "info")
    release = tmp_path / "anole"
    (release / "models" / "7b").mkdir(parents=True)
    (release / "models" / "7b" / "params.json").write_text("{}")
    assert main(["info", "--model", str(release)]) == 2
    assert "worldboot convert anole" in _one_line(capsys, "info")


def _loop(at) -> None:
    """A symbolic link loop at ``at`` (``ln -s a b; ln -s b a``)."""
    at.with_name(at.name + "-other").symlink_to(at.name)
    at.symlink_to(at.name + "-other")


#: A symbolic link loop (``{loop}``) named wherever a command takes a path: each is one line
#: naming it, exit 2 (a loop as a data file's image is a problem of its entry: tests/data/).
LOOPED = {
    "data file": ["data", "inspect", "{loop}"],
    "data root": ["data", "convert", "{manifest}", "--root", "{loop}", "--out", "{out}/m.jsonl", "--strict"],
    "output folder": ["data", "convert", "{manifest}", "--out", "{loop}/m.jsonl"],
    "config": ["generate", "{manifest}", "--world", "{model}", "--out", "{out}/p", "--config", "{loop}"],
    "model": ["info", "--model", "{loop}"],
    "backbone": ["tokenize", "{manifest}", "--backbone", "{loop}", "--out", "{out}/c"],
    "world": ["rollout", "{image}", "--world", "{loop}", "--action", "push", "--out", "{out}/r"],
    "verifier": ["rollout", "{image}", "--world", "{model}", "--verifier", "{loop}", "--action", "push",
                 "--out", "{out}/r"],
    "image": ["rollout", "{loop}", "--world", "{model}", "--action", "push", "--out", "{out}/r"],
    "videos": ["keyframes", "{loop}", "--out", "{out}/kf"],
    "video list": ["keyframes", "{list}", "--out", "{out}/kf"],
    "pairs": ["annotate", "{loop}", "--cdm", "{model}", "--out", "{out}/a"],
    "annotated": ["select", "{loop}", "--out", "{out}/s"],
    "predictions": ["evaluate", "{loop}", "--bench", "{manifest}", "--out", "{out}/r", "--judge", "none"],
}


@pytest.mark.parametrize("case", list(LOOPED))
def test_a_symlink_loop_named_anywhere_is_one_line(case, tiny_dir, tmp_path, capsys):
    _loop(tmp_path / "loop")
    Image.new("RGB", (16, 16), (200, 30, 30)).save(tmp_path / "a.png")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "source": "a.png", "target": "a.png", "action": "push"}) + "\n")
    (tmp_path / "videos.txt").write_text("loop\n")
    (tmp_path / "out").mkdir()
    words = [w.format(loop=tmp_path / "loop", manifest=manifest, out=tmp_path / "out", model=tiny_dir,
                      image=tmp_path / "a.png", list=tmp_path / "videos.txt") for w in LOOPED[case]]
    assert main(words) == 2
    line = _one_line(capsys, words[0])
    # The loop itself, or the file and line that name it (a data root, a list of videos).
    assert f"{tmp_path / 'loop'}" in line or ":1: " in line and "symbolic link loop" in line, line


@pytest.mark.parametrize("seed", ["-1", "4294967296", "100000000000000000000"])
def test_a_seed_no_random_generator_takes_is_refused_in_one_line(seed, tmp_path, capsys):
    """numpy's default_rng raised a traceback for a negative seed, and for one beyond 2**32 - 1."""
    base = ["--out", str(tmp_path / "o"), f"seed={seed}"]
    assert main(["train", "dynamics", "--config", "configs/demo/cdm.yaml", "--base", str(tmp_path), *base]) == 2
    assert "seed must be" in _one_line(capsys, "train")
    assert main(["demo", *base]) == 2
    assert "seed must be" in _one_line(capsys, "demo")
    for argv in (["world", "triplets", "--n-per-subset", "1"], ["world", "clips", "--n", "1"],
                 ["figures", "weights", str(tmp_path)], ["generate", "m.jsonl", "--world", "w"]):
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--out", str(tmp_path / "o"), "--seed", seed])
        assert exit_.value.code == 2
        assert f"argument --seed: {seed} is not between 0 and 4294967295" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
