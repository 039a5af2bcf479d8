"""Loaders of real formats: AURORA-BENCH, AURORA train, EPIC-style CSV, JSONL manifests."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from helpers import json_entry_lines
from worldboot.data.aurora import load_aurora_bench, load_aurora_train
from worldboot.data.epic import load_epic_csv
from worldboot.data.schema import Problems, read_manifest
from worldboot.errors import DataError


def _png(path: Path, colour: tuple[int, int, int] = (200, 30, 30)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 16), colour).save(path)
    return str(path)


# -- AURORA-BENCH -----------------------------------------------------------------------------


def test_real_aurora_bench_loads_all_but_the_two_missing_targets(aurora_bench: Path):
    problems, skipped = Problems(), Counter()
    triplets = load_aurora_bench(aurora_bench / "test.json", problems=problems, skipped=skipped)
    assert Counter(t.subset for t in triplets) == {"kubric": 50, "something": 48}
    # Entries 36 and 48; each problem names the line its entry's "{" is on.
    text = (aurora_bench / "test.json").read_text().splitlines()
    assert [(text[p.line - 1].strip(), text[p.line].strip(), p.reason) for p in problems] == [
        ("{", '"id": "214831",', "missing target image: data/something/images/214831/last.jpg"),
        ("{", '"id": "213316",', "missing target image: data/something/images/213316/last.jpg"),
    ]
    assert all(p.file == str(aurora_bench / "test.json") for p in problems)
    assert not skipped  # every entry of these two subsets has an output
    first = triplets[0]
    assert first.id == "something-1" and first.action == "Make remote fall down"
    assert first.meta["id"] == "36" and first.meta["entry"] == 1
    assert Path(first.source).is_file() and Path(first.target).is_file()
    assert len({t.id for t in triplets}) == len(triplets)
    kubric = load_aurora_bench(aurora_bench / "test.json", tasks="kubric")
    assert len(kubric) == 50 and {t.subset for t in kubric} == {"kubric"}


@pytest.fixture()
def mini_aurora(tmp_path: Path) -> Path:
    """A small AURORA-shaped repository with every kind of entry the benchmark has, and bad ones."""
    root = tmp_path / "aurora"
    a = _png(root / "data/ag/images/a_left.png")
    _png(root / "data/ag/images/a_right.png", (10, 200, 10))
    _png(root / "data/clevr/images/c.png")
    _png(tmp_path / "outside.png")
    (root / "data/ag/images/broken.png").write_bytes(b"not a png at all")
    entries = [
        {
            "input": "data/ag/images/a_left.png",
            "output": "data/ag/images/a_right.png",
            "instruction": "Open it",
            "task": "ag",
        },
        {
            "input": "data/ag/images/a_left.png",
            "output": "data/ag/images/a_right.png",
            "prompt": " Close it ",
            "task": "whatsup",
            "caption": "c",
        },
        {"input": "data/clevr/images/c.png", "prompt": "add a cube", "task": "clevr", "id": "007"},
        {
            "input": "data/ag/images/a_left.png",
            "output": "data/ag/images/a_right.png",
            "instruction": "  ",
            "task": "ag",
        },
        {"input": "../outside.png", "output": "data/ag/images/a_right.png", "instruction": "x", "task": "ag"},
        {"input": a, "output": str(tmp_path / "outside.png"), "instruction": "x", "task": "ag"},
        {
            "input": "data/ag/images/broken.png",
            "output": "data/ag/images/a_right.png",
            "instruction": "x",
            "task": "ag",
        },
        "not an object",
        {"input": "data/ag/images/a_left.png", "output": "data/ag/images/a_right.png", "task": "ag"},
    ]
    (root / "test.json").write_text(json.dumps(entries, indent=2))
    return root


def test_bench_problems_name_the_line_the_entry_starts_on(mini_aurora: Path):
    problems, skipped = Problems(), Counter()
    triplets = load_aurora_bench(mini_aurora / "test.json", problems=problems, skipped=skipped)
    assert [t.id for t in triplets] == ["ag-1", "whatsup-2"]  # ids keep the entry index
    assert triplets[1].action == "Close it" and triplets[1].meta["caption"] == "c"
    assert skipped == {"clevr": 1}  # no output: counted, not a problem
    # The file is indented two spaces: an entry starts where a line opens at that depth.
    text = (mini_aurora / "test.json").read_text().splitlines()
    start = [n for n, line in enumerate(text, start=1) if re.match(r"  [{\"]", line)]
    assert len(start) == 9 and triplets[1].meta["line"] == start[1]
    by_entry = {start.index(p.line) + 1: p.reason for p in problems}
    assert by_entry[4] == "empty action"
    assert by_entry[5].startswith("path escapes the data root")
    assert by_entry[6].startswith("path escapes the data root")  # absolute, elsewhere
    assert by_entry[7].startswith("unreadable source image: data/ag/images/broken.png")
    assert by_entry[8].startswith("not an object")
    assert by_entry[9].startswith("missing field: instruction")
    assert sorted(by_entry) == [4, 5, 6, 7, 8, 9]


@pytest.mark.parametrize("layout", ["one line", "crlf", "cr"])
def test_bench_problem_lines_in_other_layouts(tmp_path: Path, layout: str):
    _png(tmp_path / "a.png")
    good = {"input": "a.png", "output": "a.png", "instruction": "x", "task": "ag"}
    entries = [good, {**good, "instruction": " "}, good, {**good, "output": "gone.png"}]
    text = json.dumps(entries) if layout == "one line" else json.dumps(entries, indent=1)
    newline = {"one line": "\n", "crlf": "\r\n", "cr": "\r"}[layout]
    (tmp_path / "test.json").write_bytes(text.replace("\n", newline).encode())
    problems = Problems()
    load_aurora_bench(tmp_path / "test.json", problems=problems)
    # indent=1: each entry is "{", 4 fields and "}": six lines, the first entry on line 2.
    lines = [1, 1] if layout == "one line" else [8, 20]
    assert [(p.line, p.reason.split(":")[0]) for p in problems] == list(
        zip(lines, ["empty action", "missing target image"], strict=True))


def test_bench_keeps_generation_only_entries_on_request(mini_aurora: Path):
    triplets = load_aurora_bench(mini_aurora / "test.json", tasks=["clevr"], require_target=False)
    assert len(triplets) == 1
    assert triplets[0].target is None and triplets[0].meta["id"] == "007"


def test_bench_strict_and_bad_files(mini_aurora: Path, tmp_path: Path):
    with pytest.raises(DataError, match=r"test.json:21: empty action"):  # entry 4 starts on line 21
        load_aurora_bench(mini_aurora / "test.json", problems=Problems(strict=True))
    with pytest.raises(DataError, match="no entries for task emu"):
        load_aurora_bench(mini_aurora / "test.json", tasks="ag,emu")
    bad = tmp_path / "bad.json"
    bad.write_text('[\n {"input": 1,\n')
    with pytest.raises(DataError, match=r"bad.json:3: malformed JSON"):
        load_aurora_bench(bad)
    bad.write_text('{"input": "x"}')
    with pytest.raises(DataError, match="expected a JSON list"):
        load_aurora_bench(bad)
    with pytest.raises(DataError, match="file not found"):
        load_aurora_bench(tmp_path / "nope.json")
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(DataError, match="folder.json is a folder: give the JSON file"):
        load_aurora_bench(tmp_path / "folder.json")


# -- AURORA train -----------------------------------------------------------------------------


def test_aurora_train_magicbrush_and_something_shapes(tmp_path: Path):
    root = tmp_path / "AURORA"
    _png(root / "data/magicbrush/images/0-input.png")
    _png(root / "data/magicbrush/images/0-output.png", (1, 2, 3))
    train = root / "data/magicbrush/train.json"
    entries = [
        {
            "input": "data/magicbrush/images/0-input.png",
            "mask": "0-mask.png",
            "output": "data/magicbrush/images/0-output.png",
            "instruction": "change the table for a dog",
            "img_id": "327726",
        },
        {"input": "data/magicbrush/images/0-input.png", "instruction": "no output here"},
        {
            "input": "data/magicbrush/images/0-input.png",
            "output": "data/magicbrush/images/0-output.png",
            "prompt": "a prompt instead",
        },
        {
            "input": "data/magicbrush/images/9-input.png",
            "output": "data/magicbrush/images/0-output.png",
            "instruction": "x",
        },
    ]
    train.write_text(json.dumps(entries, indent=1))
    starts = json_entry_lines(entries)
    problems = Problems()
    triplets = load_aurora_train(train, problems=problems)  # root found from data/TASK/train.json
    assert [t.id for t in triplets] == ["magicbrush-1", "magicbrush-3"]
    assert triplets[0].subset == "magicbrush"
    assert triplets[0].meta == {"mask": "0-mask.png", "img_id": "327726", "entry": 1, "line": 2}
    assert triplets[1].action == "a prompt instead"
    assert [(p.line, p.reason.split(":")[0]) for p in problems] == [
        (starts[1], "missing field"),
        (starts[3], "missing source image"),
    ]


# -- EPIC-style CSV ---------------------------------------------------------------------------


def _video(path: Path, frames: int = 30) -> None:
    """An MJPG video whose frame i is flat grey at level 8*i: frames are told apart by their mean."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((24, 32, 3), 8 * i, np.uint8))
    writer.release()


def _level(path: str) -> float:
    return float(np.asarray(Image.open(path)).mean())


def test_epic_csv_extracts_first_and_last_frames_once(tmp_path: Path):
    videos = tmp_path / "videos"
    _video(videos / "kitchen.avi")
    _video(videos / "P01" / "videos" / "P01_01.avi")
    csv_path = tmp_path / "actions.csv"
    csv_path.write_text(
        "narration_id,participant_id,video_id,video,start_frame,stop_frame,narration,verb\n"
        "a1,,,kitchen.avi,1,11,open fridge,open\n"  # 1-based: video frames 0 and 10
        "a2,P01,P01_01,,5,30,cut onion,cut\n"  # EPIC layout ROOT/P01/videos/P01_01.*
        "a3,,,kitchen.avi,3,9,   ,take\n"
        "a4,,,kitchen.avi,9,3,close fridge,close\n"
        "a5,,,kitchen.avi,2,99,wash plate,wash\n"
        "a6,,,missing.avi,1,2,dry plate,dry\n"
        "a7,,,../escape.avi,1,2,dry plate,dry\n"
    )
    frames = tmp_path / "frames"
    problems = Problems()
    triplets = load_epic_csv(csv_path, root=videos, frames_dir=frames, problems=problems)
    assert [t.id for t in triplets] == ["a1", "a2"]
    a1, a2 = triplets
    assert a1.action == "open fridge" and a1.subset == "epic"
    assert a1.meta["start_frame"] == 1 and a1.meta["stop_frame"] == 11 and a1.meta["verb"] == "open"
    assert a1.meta["video"] == "kitchen.avi" and a1.meta["line"] == 2
    assert abs(_level(a1.source) - 0) < 4 and abs(_level(a1.target) - 80) < 4
    assert abs(_level(a2.source) - 32) < 4 and abs(_level(a2.target) - 232) < 4
    assert Path(a1.source) == frames / "kitchen.avi" / "frame_0000000001.jpg"
    reasons = {p.line: p.reason for p in problems}
    assert reasons[4] == "empty action"
    assert reasons[5].startswith("bad frame range")
    assert reasons[6].startswith("frame 99 is past the end of kitchen.avi (30 frames)")
    assert reasons[7].startswith("missing video")
    assert reasons[8].startswith("path escapes the data root")
    assert sorted(reasons) == [4, 5, 6, 7, 8]

    # Written once: a second load reuses the frames (same bytes, untouched files).
    before = {p: p.stat().st_mtime_ns for p in frames.rglob("*.jpg")}
    again = load_epic_csv(csv_path, root=videos, frames_dir=frames)
    assert [t.source for t in again] == [t.source for t in triplets]
    assert {p: p.stat().st_mtime_ns for p in frames.rglob("*.jpg")} == before
    assert not list(frames.rglob(".*tmp*"))


def test_epic_csv_zero_based_and_missing_columns(tmp_path: Path):
    _video(tmp_path / "v.avi", frames=12)
    csv_path = tmp_path / "a.csv"
    csv_path.write_text("video,start_frame,stop_frame,narration\nv.avi,0,11,stir\n")
    (t,) = load_epic_csv(csv_path, frame_base=0)
    assert t.id == "a-2" and abs(_level(t.target) - 88) < 4
    assert Path(t.source).parent.parent == tmp_path / "a-frames"
    csv_path.write_text("video,start,stop_frame,narration\nv.avi,0,11,stir\n")
    with pytest.raises(DataError, match=r"a.csv:1: missing column: start_frame"):
        load_epic_csv(csv_path)


# -- JSONL manifests --------------------------------------------------------------------------


def test_manifest_image_check_reports_lines(tmp_path: Path):
    _png(tmp_path / "s.png")
    _png(tmp_path / "t.png")
    rows = [
        {"id": "1", "source": "s.png", "action": "push", "target": "t.png"},
        {"id": "2", "source": "s.png", "action": "push", "target": "gone.png"},
        {"id": "3", "source": "s.png", "action": "push"},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(read_manifest(manifest)) == 3  # unchanged default: no image check
    problems = Problems()
    triplets = read_manifest(manifest, problems, check_images=True)
    assert [t.id for t in triplets] == ["1", "3"]
    assert [(p.line, p.reason) for p in problems] == [(2, "missing target image: gone.png")]


def test_jsonl_lines_that_are_not_utf8_are_reported_by_line(tmp_path: Path):
    from worldboot.data.schema import iter_jsonl

    f = tmp_path / "m.jsonl"
    f.write_bytes(b'{"id": "a"}\n{"id": "\xff\xfe"}\n\n{"id": "c"}\n')
    problems = Problems()
    assert [(n, r["id"]) for n, r in iter_jsonl(f, problems)] == [(1, "a"), (4, "c")]
    assert [str(p) for p in problems] == [f"{f}:2: not UTF-8 text (byte 9 of the line)"]
    with pytest.raises(DataError, match=r"m.jsonl:2: not UTF-8"):
        list(iter_jsonl(f, Problems(strict=True)))


def test_manifest_field_types_and_duplicate_ids_are_problems_with_lines(tmp_path: Path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    rows = [
        {"id": "ok", "source": "a.png", "action": "push"},
        {"id": "ok", "source": "a.png", "action": "pull"},
        {"id": "n", "source": None, "action": "push"},
        {"id": "l", "source": ["a.png"], "action": "push"},
        {"id": "m", "source": "a.png", "action": "push", "meta": [1, 2]},
        {"id": True, "source": "a.png", "action": "push"},
        {"id": 7, "source": "a.png", "action": 3},
        {"id": 8, "source": "a.png", "action": "go", "target": None},
    ]
    f = tmp_path / "m.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    problems = Problems()
    got = read_manifest(f, problems)
    assert [t.id for t in got] == ["ok", "8"] and got[1].target is None
    assert [(p.line, p.reason.split(" (")[0].split(",")[0]) for p in problems] == [
        (2, "duplicate id: ok"),
        (3, "field 'source' must be a path string"),
        (4, "field 'source' must be a path string"),
        (5, "field 'meta' must be an object"),
        (6, "field 'id' must be a string"),
        (7, "field 'action' must be a string"),
    ]
    assert "first on line 1" in problems.items[0].reason


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(
    st.fixed_dictionaries({}, optional={k: JSON for k in ("id", "source", "target", "action", "subset", "meta")}),
    max_size=5,
))
def test_any_manifest_records_load_or_become_problems(tmp_path: Path, records):
    """Whatever JSON a manifest line holds, reading it gives triplets or problems with a line
    number: never an exception."""
    f = tmp_path / "h.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in records))
    problems = Problems()
    got = read_manifest(f, problems)
    assert len(got) + len(problems) == len(records)
    assert all(1 <= p.line <= len(records) for p in problems)
    assert all(isinstance(t.source, str) and isinstance(t.action, str) and t.action for t in got)


def test_epic_csv_that_is_not_utf8_names_its_line(tmp_path: Path):
    f = tmp_path / "ann.csv"
    f.write_bytes(b"\xef\xbb\xbfvideo_id,start_frame,stop_frame,narration\nv1,1,10,open\nv1,1,10,caf\xe9\n")
    with pytest.raises(DataError, match=r"ann.csv:3: not UTF-8 text"):
        load_epic_csv(f, tmp_path)
