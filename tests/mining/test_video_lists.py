"""Video lists and ids as other tools write them: spreadsheets' CSVs (a byte-order mark, another
encoding), long and unusual file names, videos added to a mined folder, and --strict on a rerun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from worldboot.errors import DataError
from worldboot.mining.keyframes import KeyframeConfig, find_videos, mine_videos
from worldboot.mining.select import SelectConfig, select_synthetic


def _touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")


def test_csv_and_text_lists_from_spreadsheets(tmp_path):
    _touch(tmp_path, "a.mp4", "b.mp4")
    bom_csv = tmp_path / "bom.csv"
    bom_csv.write_bytes("\ufeffvideo,label\na.mp4,push\n".encode())
    assert [(t.video, t.label) for t in find_videos(bom_csv)] == [("a.mp4", "push")]
    bom_txt = tmp_path / "list.txt"
    bom_txt.write_bytes("\ufeffa.mp4\nb.mp4\n".encode())
    assert [t.video for t in find_videos(bom_txt)] == ["a.mp4", "b.mp4"]
    latin = tmp_path / "latin.csv"
    latin.write_bytes("video,label\na.mp4,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.csv: not UTF-8 text"):
        find_videos(latin)


def test_ids_stay_when_videos_are_added_and_long_names_are_cut(tmp_path):
    _touch(tmp_path, "x/a b.mp4", "x/clean.mp4", "y/" + "v" * 240 + ".avi")
    before = {t.video: t.video_id for t in find_videos(tmp_path)}
    assert before["x/clean.mp4"] == "x__clean"
    assert before["x/a b.mp4"].startswith("x__a_b-")  # a changed name carries its path's hash
    long_id = before["y/" + "v" * 240 + ".avi"]
    assert len(long_id) <= 89 and long_id.startswith("y__vvv")
    _touch(tmp_path, "x/a_b.mp4", "x/clean.avi")
    after = {t.video: t.video_id for t in find_videos(tmp_path)}
    assert after["x/a b.mp4"] == before["x/a b.mp4"] and after["x/a_b.mp4"] == "x__a_b"
    assert len(set(after.values())) == len(after) == 5
    assert after["x/clean.mp4"] != after["x/clean.avi"]  # one stem, two videos: both hashed


def test_long_file_names_are_mined_not_a_crash(tmp_path):
    folder = tmp_path / "v"
    _touch(folder, "c/" + "v" * 240 + ".avi")
    summary = mine_videos(folder, tmp_path / "run", KeyframeConfig(), progress=False)
    assert summary.problems == 1  # an empty file: skipped and counted under its long name


def test_hidden_videos_are_left_out_and_counted_not_failed(tmp_path, capsys):
    from worldboot.cli import main

    folder = tmp_path / "v"
    _touch(folder, "a/.clip.mp4", "._b.MP4", ".git/c.mp4", "a/notes.txt")
    hidden: list[Path] = []
    with pytest.raises(DataError, match="no videos found"):
        find_videos(folder, hidden=hidden)
    # The files with a hidden name are named; a hidden folder is not walked.
    assert sorted(p.name for p in hidden) == ["._b.MP4", ".clip.mp4"]
    _touch(folder, "a/empty.mp4")
    summary = mine_videos(folder, tmp_path / "run", KeyframeConfig(strict=False), progress=False)
    assert (summary.videos, summary.hidden, summary.problems) == (1, 2, 1)
    assert main(["keyframes", str(folder), "--out", str(tmp_path / "run2"), "--no-progress"]) == 0
    assert "left out 2 video files with hidden names" in capsys.readouterr().err


def test_strict_rerun_fails_on_a_video_an_earlier_run_skipped(tmp_path):
    folder = tmp_path / "v"
    _touch(folder, "empty.mp4")
    run = tmp_path / "run"
    assert mine_videos(folder, run, KeyframeConfig(), progress=False).problems == 1
    with pytest.raises(DataError, match=r"empty.mp4: empty file \(0 bytes\) \(found by an earlier run"):
        mine_videos(folder, run, KeyframeConfig(strict=True), progress=False)


def test_select_checks_images_against_annotates_root_and_types(tmp_path):
    frames = tmp_path / "mining" / "keyframes" / "frames"
    frames.mkdir(parents=True)
    for name in ("s.png", "t.png"):
        Image.new("RGB", (8, 8), (9, 9, 9)).save(frames / name)
    annotated = tmp_path / "elsewhere" / "deep" / "annotated"  # not beside the key-frames
    annotated.mkdir(parents=True)
    row = {"id": "p0", "source": str(frames / "s.png"), "target": str(frames / "t.png"), "action": "push it",
           "score_mean": -1.0, "score_sum": -3.0, "label": "push"}
    bad = [row | {"id": "p1", "score_mean": True}, row | {"id": "p2", "action": ["push"]}, row | {"id": ["p3"]}]
    (annotated / "annotated.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [row, *bad]))
    with pytest.raises(DataError, match=r"no usable annotated rows; 4 skipped, the first \(.*annotated.jsonl:1\): source image path escapes"):
        select_synthetic(annotated, tmp_path / "sel0", SelectConfig(k=5))
    (annotated / "meta.json").write_text(json.dumps({"stage": "annotate", "data_root": str(frames.parent)}))
    summary = select_synthetic(annotated, tmp_path / "sel", SelectConfig(k=5))
    assert summary.selected == 1 and summary.problems == 3
    reasons = [json.loads(x)["reason"] for x in (tmp_path / "sel" / "problems.jsonl").read_text().splitlines()]
    assert reasons == ["field 'score_mean' must be a number, got bool", "field 'action' must be text, got list",
                       "field 'id' must be text or an integer, got list"]


def test_select_accepts_key_frames_linked_into_the_root(tmp_path):
    real = tmp_path / "disk2" / "frames"
    real.mkdir(parents=True)
    for name in ("s.png", "t.png"):
        Image.new("RGB", (8, 8), (9, 9, 9)).save(real / name)
    run = tmp_path / "mining"
    (run / "annotated").mkdir(parents=True)
    (run / "frames").symlink_to(real, target_is_directory=True)
    row = {"id": "p0", "source": "../frames/s.png", "target": "../frames/t.png", "action": "push it",
           "score_mean": -1.0, "score_sum": -3.0, "label": "push"}
    escape = row | {"id": "p1", "source": "../../disk2/frames/s.png"}
    (run / "annotated" / "annotated.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(escape) + "\n")
    summary = select_synthetic(run / "annotated", tmp_path / "sel", SelectConfig(k=5))
    assert summary.selected == 1 and summary.problems == 1  # the link is inside, the '..' path is not


def test_hidden_names_in_a_video_folder_are_not_videos(tmp_path):
    """macOS sidecars (``._a.mp4``), hidden folders and a write cut short are left out."""
    _touch(tmp_path, "x/a.mp4", "x/._a.mp4", ".cache/b.mp4", "x/.c.tmp99.avi")
    assert [t.video for t in find_videos(tmp_path)] == ["x/a.mp4"]


def test_linked_video_folders_are_walked_each_real_folder_once(tmp_path):
    """Videos kept elsewhere and linked in are found (they were left out without a word); a
    link back up the tree, or a second link to one folder, neither loops nor lists twice."""
    store, videos = tmp_path / "store", tmp_path / "videos"
    _touch(store, "walk/a.mp4", "walk/b.avi")
    _touch(videos, "run/c.mp4")
    (videos / "walk").symlink_to(store / "walk", target_is_directory=True)
    (videos / "walk-again").symlink_to(store / "walk", target_is_directory=True)
    (videos / "run" / "up").symlink_to(videos, target_is_directory=True)  # a loop
    found = [(t.video, t.label) for t in find_videos(videos)]
    assert found == [("run/c.mp4", "run"), ("walk/a.mp4", "walk"), ("walk/b.avi", "walk")]  # "walk" sorts first
