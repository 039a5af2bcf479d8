"""Dataclass configs: presets, dotted overrides, clear errors, run directories."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from worldboot.config import dump_yaml, load_config
from worldboot.errors import ConfigError


@dataclass
class Optim:
    lr: float = 1e-3
    warmup: int = 10
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class Root:
    name: str = "run"
    steps: int = 100
    weighting: Literal["none", "l2"] = "l2"
    bf16: bool = False
    train: Optim = field(default_factory=Optim)
    note: str | None = None


def test_defaults_file_and_overrides(tmp_path):
    path = tmp_path / "preset.yaml"
    path.write_text("steps: 5\ntrain:\n  lr: 0.01\n")
    cfg = load_config(Root, path, ["train.lr=1e-4", "weighting=none", "note=hello", "train.betas=[0.8, 0.9]"])
    assert cfg.steps == 5 and cfg.train.lr == pytest.approx(1e-4) and cfg.train.warmup == 10
    assert cfg.weighting == "none" and cfg.note == "hello" and cfg.train.betas == [0.8, 0.9]


def test_unknown_key_names_it_and_suggests(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.lrr'.*did you mean 'train\.lr'"):
        load_config(Root, None, ["train.lrr=1"])
    with pytest.raises(ConfigError, match="'stepz'.*'steps'"):
        load_config(Root, None, ["stepz=1"])


def test_wrong_types_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="'steps'.*integer"):
        load_config(Root, None, ["steps=many"])
    with pytest.raises(ConfigError, match="'weighting'.*one of"):
        load_config(Root, None, ["weighting=l1"])
    with pytest.raises(ConfigError, match="'bf16'"):
        load_config(Root, None, ["bf16=3"])


def test_a_wrong_value_in_the_file_names_the_file_and_a_folder_is_no_file(tmp_path):
    path = tmp_path / "preset.yaml"
    path.write_text("steps: many\n")
    with pytest.raises(ConfigError, match=r"preset.yaml: config key 'steps': expected an integer"):
        load_config(Root, path)
    with pytest.raises(ConfigError, match="config key 'steps'") as err:  # from an override: no file named
        load_config(Root, None, ["steps=many"])
    assert "preset.yaml" not in str(err.value)
    # A value the user replaces with an override or a flag is not refused.
    assert load_config(Root, path, ["steps=5"]).steps == 5
    assert load_config(Root, path, flags={"steps": 6}).steps == 6
    with pytest.raises(ConfigError, match=r"preset.yaml: config key 'steps'"):  # a flag left unset
        load_config(Root, path, flags={"steps": None})
    with pytest.raises(ConfigError, match=r"preset.yaml: config key 'steps'"):  # another key replaced
        load_config(Root, path, ["name=x"])
    with pytest.raises(ConfigError, match="config file .* is a folder: give a YAML file"):
        load_config(Root, tmp_path)


def test_bad_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("steps: 5\ntrain: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+"):
        load_config(Root, path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(Root, tmp_path / "missing.yaml")


def test_dump_round_trips(tmp_path):
    cfg = load_config(Root, None, ["train.lr=0.5"])
    path = tmp_path / "c.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_config(Root, path) == cfg


def test_one_precedence_defaults_preset_file_overrides_flags(tmp_path):
    path = tmp_path / "file.yaml"
    path.write_text("steps: 2\nname: file\ntrain:\n  lr: 0.2\n  warmup: 2\n")
    base = {"steps": 1, "name": "preset", "note": "preset", "train": {"lr": 0.1, "warmup": 1}}
    cfg = load_config(Root, path, ["steps=3", "train.lr=0.3"], base=base,
                      flags={"steps": 4, "train.warmup": None, "weighting": "none"})
    # flags > overrides > file > preset > defaults; a None flag (not given) changes nothing
    assert (cfg.steps, cfg.train.lr, cfg.train.warmup, cfg.name, cfg.note) == (4, 0.3, 2, "file", "preset")
    assert cfg.weighting == "none" and cfg.bf16 is False
    with pytest.raises(ConfigError, match="nope"):
        load_config(Root, None, [], flags={"train.nope": 1})


@pytest.mark.parametrize(("override", "message"), [
    ("batch_size=0", "batch_size must be at least 1, got 0"),
    ("max_steps=-5", "max_steps must be at least 0, got -5"),
    ("optim.lr=.nan", "optim.lr must be a finite number"),
    ("optim.lr=0", "optim.lr must be greater than 0"),
    ("lora.dropout=1.5", "lora.dropout must be at most 1"),
    ("data.eval_fraction=-0.1", "data.eval_fraction must be at least 0"),
])
def test_training_config_ranges_are_checked_where_configs_load(override, message, capsys):
    from worldboot.cli import main
    from worldboot.train.config import TrainConfig

    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(TrainConfig, None, [override])
    # Every command gets the check: one line, exit 2, before any model is loaded.
    assert main(["train", "dynamics", "--base", "nowhere", "--cache", "nowhere", override]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["--port", "99999"], ["--port", "x"], ["--max-upload-mb", "-1"],
                                  ["--samples", "0"], ["--temperature", "nan"]])
def test_serve_numbers_are_checked_by_argparse(argv, capsys):
    from worldboot.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("worldboot serve: error: argument")


def test_config_and_study_files_that_are_not_utf8_or_yaml_are_one_line(tmp_path, capsys):
    from worldboot.cli import main
    from worldboot.errors import DataError
    from worldboot.study.spec import load_study

    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"batch_size: 4\nname: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:2: not UTF-8 text"):
        load_config(Root, bad)
    assert main(["train", "world", "--config", str(bad)]) == 2
    assert "bad.yaml:2: not UTF-8" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"bad.yaml:2: not UTF-8 text"):
        load_study(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("items: [\n  - a\nmodels: {\n")
    with pytest.raises(DataError, match=r"broken.yaml:\d+: not valid YAML \(") as err:
        load_study(broken)
    assert "\n" not in str(err.value)


def test_a_shipped_preset_path_works_from_any_folder(tmp_path, monkeypatch):
    """``--config configs/demo/dynamics_rl.yaml`` as the examples write it: from a folder
    without ``configs/`` it is the package's preset; a file of that name here wins; a path that
    is neither stays a one-line error naming it."""
    from worldboot.train.resolve import resolve_train_config

    monkeypatch.chdir(tmp_path)
    assert resolve_train_config("configs/demo/dynamics_rl.yaml").task == "dynamics-rl"
    (tmp_path / "configs" / "demo").mkdir(parents=True)
    (tmp_path / "configs" / "demo" / "dynamics_rl.yaml").write_text("task: world\n")
    assert resolve_train_config("configs/demo/dynamics_rl.yaml").task == "world"
    with pytest.raises(ConfigError, match="config file not found: configs/demo/nothing.yaml"):
        resolve_train_config("configs/demo/nothing.yaml")
