"""A run's checkpoint bookkeeping, without a model: which checkpoint a resume takes, what it refuses."""

import json

import pytest

from worldboot.errors import ConfigError, ModelError
from worldboot.train import checkpoints
from worldboot.train.config import STATE_FILE


def _checkpoint(out, step, task="dynamics", data="fp", finished=True):
    path = checkpoints.checkpoint_dir(out, step)
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    if finished:
        checkpoints.write_state(path, step, task, "base", data)
    return path


def test_a_resume_takes_the_newest_finished_checkpoint_never_a_killed_save(tmp_path):
    assert checkpoints.resume_path(tmp_path, True) is None
    _checkpoint(tmp_path, 10)
    newest = _checkpoint(tmp_path, 20)
    _checkpoint(tmp_path, 30, finished=False)  # killed while saving: no state file
    assert checkpoints.resume_path(tmp_path, True) == newest
    assert checkpoints.resume_path(tmp_path, str(tmp_path / "elsewhere")) == tmp_path / "elsewhere"
    assert json.loads((newest / STATE_FILE).read_text())["global_step"] == 20


def test_pruning_keeps_the_newest_finished_checkpoints(tmp_path):
    paths = [_checkpoint(tmp_path, s) for s in (1, 2, 3, 4)]
    killed = _checkpoint(tmp_path, 5, finished=False)
    checkpoints.prune(tmp_path, 2)
    assert [p.exists() for p in paths] == [False, False, True, True]
    assert killed.exists()  # not a checkpoint yet: the next save of that step overwrites it
    checkpoints.prune(tmp_path, 0)  # at least one is always kept
    assert checkpoints.finished_checkpoints(tmp_path) == [paths[3]]


def test_an_unfinished_checkpoint_or_one_of_another_task_is_refused(tmp_path):
    with pytest.raises(ModelError, match="not a finished checkpoint"):
        checkpoints.read_state(_checkpoint(tmp_path, 1, finished=False), "dynamics")
    with pytest.raises(ModelError, match="is a world run, not dynamics"):
        checkpoints.read_state(_checkpoint(tmp_path, 2, task="world"), "dynamics")
    assert checkpoints.read_state(_checkpoint(tmp_path, 3), "dynamics")["global_step"] == 3


def test_a_resume_on_other_data_is_refused_an_old_checkpoint_without_a_record_is_not(tmp_path):
    path = _checkpoint(tmp_path, 1, data="a")
    checkpoints.check_resume_data(path, "a")
    with pytest.raises(ConfigError, match="trained on other data"):
        checkpoints.check_resume_data(path, "b")
    old = checkpoints.checkpoint_dir(tmp_path, 2)
    old.mkdir()
    (old / STATE_FILE).write_text(json.dumps({"global_step": 2, "task": "dynamics"}))
    checkpoints.check_resume_data(old, "b")
    checkpoints.check_resume_data(None, "b")  # nothing to resume: the restore says so


def test_metrics_logged_after_the_checkpoint_are_dropped(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    rows = [{"step": 5, "loss": 1.0}, {"step": 10, "loss": 0.9}, {"step": 15, "loss": 0.8}, {"final": True}]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    checkpoints.drop_metrics_after(metrics, 10)
    assert [json.loads(line) for line in metrics.read_text().splitlines()] == rows[:2]
    checkpoints.drop_metrics_after(tmp_path / "absent.jsonl", 10)  # no metrics yet: nothing to do
