"""A demo rerun resumes only a run made with the same settings."""

from __future__ import annotations

import json

import pytest

from worldboot.cli import main
from worldboot.config import dump_yaml
from worldboot.demo import Demo, DemoConfig, TrainRecipe
from worldboot.errors import ConfigError


def _finished_stage(out, cfg: DemoConfig) -> None:
    """What a killed run leaves: its config and one finished stage."""
    out.mkdir(parents=True)
    (out / "meta.json").write_text(json.dumps({"stage": "demo", "status": "running"}))
    (out / "config.yaml").write_text(dump_yaml(cfg))
    (out / "stages.json").write_text(json.dumps({"base": {"result": {"path": "x"}, "seconds": 1.0}}))


def _recording(ran: list[str]) -> type[Demo]:
    """A Demo whose stages only record, in ``ran``, that they ran."""

    class Recording(Demo):
        def __getattribute__(self, attr):
            if attr.startswith("stage_"):
                return lambda: ran.append(attr[6:]) or {}
            return super().__getattribute__(attr)

    return Recording


def test_a_run_with_other_settings_is_refused_before_any_stage(tmp_path):
    out = tmp_path / "run"
    _finished_stage(out, DemoConfig())
    said: list[str] = []
    changed = DemoConfig(cwm=TrainRecipe("configs/demo/cwm.yaml", ["max_steps=61"]), torch_threads=1)
    with pytest.raises(ConfigError, match=r"other settings \(cwm\.overrides: \[\] -> \['max_steps=61'\]; "
                       r"torch_threads: 0 -> 1\).*--fresh"):
        Demo(changed, out, say=said.append).run()
    assert said == []  # no stage started
    Demo(DemoConfig(), out).check_resume()  # the same settings resume


def test_a_cdm_measured_without_transition_success_is_measured_again(tmp_path):
    """A run whose CDM stage an older worldboot measured (no transition success) runs it again,
    and the stages after it."""
    from worldboot.demo import STAGES

    out = tmp_path / "run"
    cfg = DemoConfig()
    _finished_stage(out, cfg)
    (out / "stages.json").write_text(json.dumps({s: {"result": {}, "seconds": 1.0} for s in STAGES}))
    ran: list[str] = []
    Recording = _recording(ran)

    Recording(cfg, out, say=lambda _line: None).run()
    assert ran == list(STAGES[STAGES.index("cdm"):])


def test_keys_an_older_run_lacks_are_not_compared(tmp_path):
    out = tmp_path / "run"
    _finished_stage(out, DemoConfig())
    saved = (out / "config.yaml").read_text()
    (out / "config.yaml").write_text(saved.split("rl:")[0] + "torch_threads: 0\n")  # written before rl existed
    Demo(DemoConfig(), out).check_resume()


def test_the_command_says_it_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    _finished_stage(out, DemoConfig(base_preset="smoke"))
    assert main(["demo", "--out", str(out), "cwm.max_steps=7"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cwm.overrides: " in err and "Traceback" not in err


def test_a_stage_that_runs_makes_the_later_ones_run_again(tmp_path):
    """A run made before a stage existed (here ``dpo``) trains it on resume, and the stages after
    it (the predictions) run again, so the new model reaches the tables."""
    from worldboot.demo import STAGES

    out = tmp_path / "run"
    cfg = DemoConfig()
    _finished_stage(out, cfg)
    done = {s: {"result": {}, "seconds": 1.0} for s in STAGES if s != "dpo"}
    done["cdm"]["result"] = {"CDM": {"transition_success": 0.0}}  # measured by this worldboot
    (out / "stages.json").write_text(json.dumps(done))
    ran: list[str] = []
    Recording = _recording(ran)

    said: list[str] = []
    Recording(cfg, out, say=said.append).run()
    assert ran == ["dpo", "predict", "report"]
    assert "[dpo] runs, so predict will run again after it" in said
    assert set(json.loads((out / "stages.json").read_text())) == set(STAGES)
