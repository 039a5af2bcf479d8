"""A demo rerun resumes only a run made with the same settings."""

from __future__ import annotations

import json

import pytest

from worldboot.cli import main
from worldboot.config import dump_yaml
from worldboot.demo import Demo, DemoConfig, FineTuneSettings
from worldboot.errors import ConfigError


def _finished_stage(out, cfg: DemoConfig) -> None:
    """What a killed run leaves: its config and one finished stage."""
    out.mkdir(parents=True)
    (out / "config.yaml").write_text(dump_yaml(cfg))
    (out / "stages.json").write_text(json.dumps({"base": {"result": {"path": "x"}, "seconds": 1.0}}))


def test_a_run_with_other_settings_is_refused_before_any_stage(tmp_path):
    out = tmp_path / "run"
    _finished_stage(out, DemoConfig())
    said: list[str] = []
    changed = DemoConfig(cwm=FineTuneSettings(steps=61), torch_threads=1)
    with pytest.raises(ConfigError, match=r"other settings \(cwm\.steps: 60 -> 61; torch_threads: 0 -> 1\).*--fresh"):
        Demo(changed, out, say=said.append).run()
    assert said == []  # no stage started
    Demo(DemoConfig(), out).check_resume()  # the same settings resume


def test_keys_an_older_run_lacks_are_not_compared(tmp_path):
    out = tmp_path / "run"
    _finished_stage(out, DemoConfig())
    saved = (out / "config.yaml").read_text()
    (out / "config.yaml").write_text(saved.split("rl:")[0] + "torch_threads: 0\n")  # written before rl existed
    Demo(DemoConfig(), out).check_resume()


def test_the_command_says_it_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    _finished_stage(out, DemoConfig(base_preset="smoke"))
    assert main(["demo", "--out", str(out), "cwm.steps=7"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cwm.steps: " in err and "Traceback" not in err
