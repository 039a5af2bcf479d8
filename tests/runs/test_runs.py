"""Run directories and their files: atomic writes, JSONL rows that survive a kill, shards, locks."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass

import pytest
import yaml

from worldboot.errors import ConfigError, UsageError
from worldboot.runs import (
    RunDir,
    append_jsonl,
    atomic_path,
    done_ids,
    file_lock,
    parse_shard,
    read_jsonl,
    repair_tail,
    shard_items,
    shard_of,
    write_atomic,
)


@dataclass
class Root:
    steps: int = 100


def test_run_dir_writes_config_and_meta(tmp_path):
    cfg = Root()
    with RunDir(tmp_path / "run", cfg, "unit") as run:
        run.log("hello")
        meta = json.loads((tmp_path / "run" / "meta.json").read_text())
        assert meta["status"] == "running" and meta["end_time"] is None
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["status"] == "ok" and meta["end_time"] and meta["start_time"]
    assert meta["versions"]["torch"] and "git_sha" in meta
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["steps"] == 100
    assert "hello" in (tmp_path / "run" / "log.txt").read_text()
    with pytest.raises(RuntimeError), RunDir(tmp_path / "run2", cfg, "unit"):
        raise RuntimeError("boom")
    assert json.loads((tmp_path / "run2" / "meta.json").read_text())["status"].startswith("failed")


def test_run_dir_refuses_an_empty_path_and_another_stages_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("mine: 1\n")
    for empty in ("", " "):
        with pytest.raises(UsageError, match="the output folder of unit is empty"):
            RunDir(empty, Root(), "unit")
    assert (tmp_path / "config.yaml").read_text() == "mine: 1\n" and not (tmp_path / "meta.json").exists()
    with RunDir(tmp_path / "run", Root(), "keyframes"):
        pass
    (tmp_path / "run" / "problems.jsonl").write_text("{}\n")
    with pytest.raises(UsageError, match=r"run holds a run of keyframes \(its meta.json\): give annotate a folder"):
        RunDir(tmp_path / "run", Root(), "annotate")
    assert json.loads((tmp_path / "run" / "meta.json").read_text())["stage"] == "keyframes"
    with RunDir(tmp_path / "run", Root(steps=5), "keyframes"):  # the same stage resumes there
        pass
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "meta.json").write_text("not ours")  # another tool's file: no run of ours
    with pytest.raises(UsageError, match=r"theirs holds files that no worldboot run wrote \('meta.json'\)"):
        RunDir(tmp_path / "theirs", Root(), "unit")
    assert (tmp_path / "theirs" / "meta.json").read_text() == "not ours"


def test_run_dir_refuses_a_folder_of_files_no_run_wrote(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("config.yaml", "summary.json", "notes.txt"):
        (mine / name).write_text(name)
    with pytest.raises(UsageError, match=r"mine holds files that no worldboot run wrote \('config.yaml' and 2 more\)"):
        RunDir(mine, Root(), "rollout")
    assert sorted(p.name for p in mine.iterdir()) == ["config.yaml", "notes.txt", "summary.json"]
    assert (mine / "config.yaml").read_text() == "config.yaml"
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / ".DS_Store").write_text("x")  # hidden files are no one's outputs
    with RunDir(hidden, Root(), "rollout"):
        pass
    with RunDir(mine / "sub", Root(), "rollout"):  # a new folder inside is the user's choice
        pass
    # Another process of a launched run finds the writer's files there: it does not check.
    RunDir(mine, Root(), "rollout", writer=False)


def test_write_atomic_text_bytes_and_failures(tmp_path):
    path = tmp_path / "sub" / "a.json"
    write_atomic(path, "é\n")
    assert path.read_text(encoding="utf-8") == "é\n"
    write_atomic(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    with pytest.raises(OSError), atomic_path(tmp_path / "b.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_text("half")
        raise OSError("disk full")
    # Neither the target nor a temporary file is left behind by a failed write.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]
    assert os.listdir(tmp_path / "sub") == ["a.json"]
    # A failure on the temporary file names the file the user asked for.
    (tmp_path / "ro").mkdir()
    with pytest.raises(OSError) as err, atomic_path(tmp_path / "ro" / "c.json") as tmp:
        raise OSError(28, "No space left on device", str(tmp))
    assert err.value.filename == str(tmp_path / "ro" / "c.json") and err.value.errno == 28


def test_repair_tail_keeps_whole_parseable_lines(tmp_path):
    f = tmp_path / "rows.jsonl"
    f.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "act')
    assert repair_tail(f) == len('{"id": "c", "act')
    assert f.read_text() == '{"id": "a"}\n{"id": "b"}\n'
    assert repair_tail(f) == 0
    # A line cut where a newline happens to sit inside it is not parseable either: dropped.
    f.write_text('{"id": "a"}\n{"id": "b", "x": "1\n')
    assert repair_tail(f) == len('{"id": "b", "x": "1\n')
    f.write_text('{"id": "a"')  # nothing whole
    repair_tail(f)
    assert f.read_text() == ""
    assert repair_tail(tmp_path / "missing.jsonl") == 0


def test_read_append_and_done_ids(tmp_path):
    f = tmp_path / "rows.jsonl"
    assert append_jsonl(f, [{"id": "a"}, {"id": 2}]) == 2
    assert append_jsonl(f, []) == 0
    with open(f, "ab") as fh:
        fh.write(b"not json\n[1, 2]\n\xff\xfe\n")
    append_jsonl(f, [{"id": "d", "text": "\u00e9"}])
    assert [(n, r["id"]) for n, r in read_jsonl(f)] == [(1, "a"), (2, 2), (6, "d")]
    other = tmp_path / "other.jsonl"
    other.write_text('{"id": "e"}\n{"no": "id"}\n')
    assert done_ids([f, other, tmp_path / "missing.jsonl"]) == {"a", "2", "d", "e"}
    assert list(read_jsonl(tmp_path / "missing.jsonl")) == []


def test_shards_are_stable_and_cover_every_item_once():
    ids = [f"clip-{i:05d}" for i in range(300)]
    parts = [shard_items(ids, i, 3, key=str) for i in range(3)]
    assert sorted(sum(parts, [])) == ids
    assert all(60 < len(p) < 140 for p in parts)  # a hash that does not lump similar ids
    assert all(shard_of(x, 3) == i for i, p in enumerate(parts) for x in p)
    # Another order of the input gives every item the same shard.
    assert shard_items(list(reversed(ids)), 1, 3, key=str) == list(reversed(parts[1]))
    assert shard_items(ids, 0, 1, key=str) == ids
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "1", "a/b", "-1/2", "0/0"):
        with pytest.raises(ConfigError):
            parse_shard(bad)


def test_file_lock_excludes_other_holders(tmp_path):
    lock_path = tmp_path / "deep" / ".lock"
    events = []

    def other() -> None:
        with file_lock(lock_path):
            events.append("other")

    with file_lock(lock_path):
        t = threading.Thread(target=other)
        t.start()
        t.join(0.3)
        events.append("first")
    t.join()
    assert events == ["first", "other"]
