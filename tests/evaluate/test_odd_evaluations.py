"""evaluate actions and evaluate spatial on inputs that do not fit: predictions of another
benchmark, wrongly typed or repeated multiple-choice fields, a prompt with another placeholder."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from worldboot.cli import main
from worldboot.data.schema import Problems
from worldboot.errors import ConfigError
from worldboot.evaluate.spatial import SpatialConfig, read_mc


def test_actions_of_another_benchmark_are_refused_before_the_report(tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"id": "k-1", "subset": "s", "source": "a.png", "target": "a.png", "action": "push"}) + "\n")
    preds = tmp_path / "acts.jsonl"
    preds.write_text(json.dumps({"id": "other-7", "action": "push"}) + "\n")
    out = tmp_path / "report"
    assert main(["evaluate", "actions", str(preds), "--bench", str(bench), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no id of its 1 actions is in" in err[0] and "'k-1'" in err[0]
    assert not out.exists()


def test_multiple_choice_lines_that_cannot_be_scored_are_problems(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    rows = [
        {"image": "a.png", "question": "where?", "choices": ["left", "right"], "answer": 0},
        {"image": 5, "question": "where?", "choices": ["left", "right"], "answer": 0},
        {"image": "a.png", "question": None, "choices": ["left", "right"], "answer": 0},
        {"image": "a.png", "question": "where?", "choices": ["same", "same"], "answer": 1},
    ]
    path = tmp_path / "mc.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    problems = Problems()
    assert len(read_mc(path, problems)) == 1
    assert [(p.line, p.reason) for p in problems] == [
        (2, "image and question must be text"), (3, "image and question must be text"),
        (4, "choices must differ (two equal choices cannot both be scored)")]
    with pytest.raises(ConfigError, match=r"the only placeholder is \{question\}"):
        SpatialConfig(prompt="Q: {q}")


def test_a_question_too_long_for_the_model_is_a_problem_not_a_score(tiny_dir, tmp_path):
    """A question or a choice beyond the model's positions was scored (6000 tokens against 512)
    and counted in the accuracy."""
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    rows = [
        {"image": "a.png", "question": "where?", "choices": ["left", "right"], "answer": 0},
        {"image": "a.png", "question": "q " * 3000, "choices": ["left", "right"], "answer": 0},
        {"image": "a.png", "question": "where?", "choices": ["left", "x " * 3000], "answer": 0},
    ]
    path = tmp_path / "mc.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "report"
    assert main(["evaluate", "spatial", str(path), "--model", str(tiny_dir), "--out", str(out)]) == 0
    problems = [json.loads(line) for line in (out / "problems.jsonl").read_text().splitlines()]
    assert [(p["line"], "does not fit the model's" in p["reason"]) for p in problems] == [(2, True), (3, True)]
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["line"] for r in results] == [1]


def test_one_file_given_twice_is_scored_once(tiny_dir, tmp_path, monkeypatch):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    path = tmp_path / "mc.jsonl"
    path.write_text(json.dumps({"image": "a.png", "question": "where?", "choices": ["left", "right"], "answer": 0}) + "\n")
    other = tmp_path / "b.jsonl"
    other.write_text(path.read_text())
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "report"
    assert main(["evaluate", "spatial", "mc.jsonl", str(path), "./mc.jsonl", "b.jsonl", "--model", str(tiny_dir),
                 "--out", str(out)]) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 2  # mc once, b once
    assert list(json.loads((out / "table.json").read_text())["files"]) == ["mc", "b"]
