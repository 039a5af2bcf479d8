"""A human study's mistakes that were once hidden: votes naming models not in the study (a
renamed model) dropped or counted silently, and study keys of the wrong type coerced
(``shuffle_items: "no"`` read as true) or reported as a folder not found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from helpers import STUDY_MODELS, make_study
from worldboot.cli import main
from worldboot.errors import ConfigError, DataError
from worldboot.study.analysis import ALL, analyse_votes, format_markdown
from worldboot.study.spec import default_db_path, load_study
from worldboot.study.votes import VoteStore

MODELS = STUDY_MODELS


# -- votes naming models not in the study -------------------------------------------------------------


@pytest.fixture()
def renamed(tmp_path):
    """A study of A, B, R whose R was called OLD when two of the three votes were cast."""
    path = make_study(tmp_path, {"i1": "s", "i2": "s"})
    study = load_study(path)
    store = VoteStore(default_db_path(path), study.name)
    store.record("x", "i1", "A", "R", ["A", "B", "R"])
    store.record("y", "i1", "OLD", "A", ["A", "B", "OLD"])
    store.record("x", "i2", "B", "GONE", ["A", "B", "GONE"])
    return study, store


def test_votes_naming_models_not_in_the_study_are_skipped_and_counted(renamed):
    study, store = renamed
    table = analyse_votes(store.path, study)
    assert table.n_votes == 1 and table.n_annotators == 1
    assert (table.foreign_votes, table.foreign_models) == (2, ["GONE", "OLD"])
    # Only the vote on the study's own models counts: A best, R worst, B neither.
    assert [table.cells[(ALL, m)].mean for m in ("A", "B", "R")] == [1.0, 0.0, -1.0]
    assert all(table.cells[(ALL, m)].n_votes == 1 for m in ("A", "B", "R"))
    md = format_markdown(table)
    assert "2 vote(s) naming models not in the study (GONE, OLD; renamed or removed?) were skipped" in md
    as_json = table.to_json()
    assert as_json["foreign_votes"] == 2 and as_json["foreign_models"] == ["GONE", "OLD"]


def test_evaluate_human_prints_the_skipped_votes(renamed, tmp_path, capsys):
    study, store = renamed
    out = tmp_path / "report"
    assert main(["evaluate", "human", str(study.path), "--db", str(store.path), "--out", str(out)]) == 0
    assert "2 vote(s) naming models not in the study (GONE, OLD" in capsys.readouterr().out
    assert json.loads((out / "human_eval.json").read_text())["foreign_votes"] == 2


def test_only_votes_naming_other_models_is_one_clear_error(tmp_path, capsys):
    path = make_study(tmp_path, {"i1": "s"})
    study = load_study(path)
    store = VoteStore(default_db_path(path), study.name)
    store.record("y", "i1", "OLD", "A", ["A", "B", "OLD"])
    with pytest.raises(DataError, match=r"no votes on the items of study 'human' \(1 name models not in it: OLD\)"):
        analyse_votes(store.path, study)
    assert main(["evaluate", "human", str(path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# -- study keys of the wrong type -------------------------------------------------------------------


def _with(path: Path, drop: tuple[str, ...] = (), **changes) -> Path:
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump({k: v for k, v in data.items() if k not in drop}, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"shuffle_items": "no"}, r"config key 'shuffle_items': expected true or false, got 'no'"),
        ({"shuffle_items": 1}, r"config key 'shuffle_items': expected true or false, got 1"),
        ({"name": ["x"]}, r"config key 'name': \['x'\] is not a str"),
        ({"title": {"a": 1}}, r"config key 'title': \{'a': 1\} is not a str"),
        ({"reference": 3}, r"config key 'reference': 3 is not a str"),
        ({"root": ["a"]}, r"`root` must be a path string, got \['a'\]"),
        ({"manifest": ["bench.jsonl"]}, r"`manifest` must be a path string, got \['bench.jsonl'\]"),
    ],
)
def test_wrong_types_are_config_errors_naming_file_line_and_key(tmp_path, changes, message):
    path = make_study(tmp_path, {"i1": "s"})
    key = next(iter(changes))
    _with(path, drop=("items",) if key == "manifest" else (), **changes)
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if text.startswith(f"{key}:"))
    with pytest.raises(ConfigError, match=rf"^{path}:{line}: {message}"):
        load_study(path)


def test_a_model_folder_or_path_given_as_a_list_is_not_a_folder_not_found(tmp_path, capsys):
    path = make_study(tmp_path, {"i1": "s"})
    _with(path, models={"A": {"dir": ["A"]}, "B": "B", "R": "R"})
    with pytest.raises(ConfigError, match=r"study.yaml:\d+: model 'A': `dir` must be a path string, got \['A'\]"):
        load_study(path)
    _with(path, models={"A": {"paths": {"i1": ["A/i1.png"]}}, "B": "B", "R": "R"})
    with pytest.raises(ConfigError, match=r"model 'A': `paths.i1` must be a path string, got \['A/i1.png'\]"):
        load_study(path)
    _with(path, models={m: m for m in "ABR"}, shuffle_items="no")
    assert main(["evaluate", "human", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "shuffle_items" in err[0] and str(path) in err[0]


def test_an_item_source_of_the_wrong_type_is_a_problem_of_its_line(tmp_path):
    path = make_study(tmp_path, {"i1": "s", "i2": "s"})
    data = yaml.safe_load(path.read_text())
    data["items"][1]["source"] = ["src/i2.png"]
    path.write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    study = load_study(path)
    assert [item.id for item in study.items] == ["i1"]
    (problem,) = study.problems
    assert problem.reason == "wrong type: field 'source' must be a path string, got list" and problem.line > 0
    with pytest.raises(DataError, match=rf"{path}:{problem.line}: wrong type: field 'source'"):
        load_study(path, strict=True)


def test_good_flags_and_null_text_still_load(tmp_path):
    path = make_study(tmp_path, {"i1": "s"})
    _with(path, shuffle_items=True, title=None, seed=3)
    assert "title: null" in path.read_text()
    study = load_study(path)
    assert study.shuffle_items is True and study.seed == 3 and study.title == "Which predicted observation is best?"
