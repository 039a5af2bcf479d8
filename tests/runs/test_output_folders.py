"""Every stage's ``--out``: a user's own folder, a file, an empty name or another stage's run is
refused before anything is written, and the stage's own earlier run is taken up again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import square_triplets

from worldboot.cli import main
from worldboot.errors import UsageError


def _users_folder(path: Path) -> dict[str, str]:
    """A folder of a user's files whose names a stage writes (config.yaml, a manifest...)."""
    path.mkdir(parents=True)
    files = {"config.yaml": "mine: 1\n", "manifest.jsonl": "{}\n", "summary.json": "{}"}
    for name, text in files.items():
        (path / name).write_text(text)
    return files


def _untouched(path: Path, files: dict[str, str]) -> bool:
    return sorted(p.name for p in path.iterdir()) == sorted(files) and all(
        (path / n).read_text() == t for n, t in files.items())


def test_world_commands_refuse_a_users_folder_and_take_up_their_own(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "mine"
    files = _users_folder(mine)
    for argv in (["world", "triplets", "--n-per-subset", "1"], ["world", "clips", "--n", "1", "--size", "32"]):
        assert main([*argv, "--out", str(mine)]) == 2
        assert "mine holds files that no worldboot run wrote ('config.yaml' and 2 more)" in capsys.readouterr().err
        assert _untouched(mine, files)
        assert main([*argv, "--out", ""]) == 2
        assert "is empty: name a folder" in capsys.readouterr().err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # nothing written in the current folder
    (tmp_path / "file").write_text("x")
    assert main(["world", "clips", "--n", "1", "--out", "file"]) == 2
    assert "file is a file: give world-clips a folder" in capsys.readouterr().err
    assert main(["world", "triplets", "--n-per-subset", "1", "--out", "t"]) == 0
    assert json.loads((tmp_path / "t" / "meta.json").read_text())["stage"] == "world-triplets"
    first = (tmp_path / "t" / "manifest.jsonl").read_text()
    assert main(["world", "triplets", "--n-per-subset", "1", "--out", "t"]) == 0  # its own run: made again
    assert (tmp_path / "t" / "manifest.jsonl").read_text() == first
    assert main(["world", "clips", "--n", "1", "--out", "t"]) == 2
    assert "t holds a run of world-triplets" in capsys.readouterr().err


def test_train_refuses_an_empty_out_and_a_users_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "mine"
    files = _users_folder(mine)
    args = ["train", "dynamics", "--base", str(tmp_path / "nowhere"), "--cache", str(tmp_path / "nowhere")]
    assert main([*args, "--out", ""]) == 2  # not the preset's runs/train
    assert "the output folder of train-dynamics is empty" in capsys.readouterr().err
    assert main([*args, "--out", str(mine)]) == 2
    assert "mine holds files that no worldboot run wrote" in capsys.readouterr().err
    assert _untouched(mine, files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_generate_refuses_a_users_folder_before_loading_anything(tmp_path, capsys):
    mine = tmp_path / "mine"
    files = _users_folder(mine)
    square_triplets(tmp_path / "bench", 2)
    code = main(["generate", str(tmp_path / "bench" / "manifest.jsonl"), "--world", str(tmp_path / "nowhere"),
                 "--out", str(mine)])
    err = capsys.readouterr().err
    assert code == 2 and "mine holds files that no worldboot run wrote" in err, err
    assert _untouched(mine, files)


def test_evaluate_refuses_a_users_folder_before_the_judge_cache(tmp_path, capsys):
    square_triplets(tmp_path / "bench", 2)
    mine = tmp_path / "mine"
    files = _users_folder(mine)
    code = main(["evaluate", "--bench", str(tmp_path / "bench" / "manifest.jsonl"),
                 "--judge", "none", "--out", str(mine)])
    err = capsys.readouterr().err
    assert code == 2 and "mine holds files that no worldboot run wrote" in err, err
    assert _untouched(mine, files)  # no judge_cache.sqlite either


def test_tokenize_refuses_an_empty_out(tmp_path, monkeypatch, capsys):
    from worldboot.data.tokenize import build_cache

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="the output folder of tokenize is empty"):
        build_cache([], None, "")
    assert list(tmp_path.iterdir()) == []
