"""The EPIC-style CSV loader on inputs that once went wrong: videos that share a stem, frames
left by an earlier run, empty or absent cells, tab-separated files and repeated ids."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from worldboot.cli import main
from worldboot.data.epic import MAX_FOLDER_CHARS, frames_folder_name, load_epic_csv
from worldboot.data.formats import detect_format, load_any
from worldboot.data.schema import Problems, read_manifest, write_manifest
from worldboot.errors import DataError

HEADER = "narration_id,video,start_frame,stop_frame,narration\n"


def _video(path: Path, base: int = 0, frames: int = 10) -> None:
    """An MJPG video whose frame i is flat grey at level ``base + 8*i``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((24, 32, 3), base + 8 * i, np.uint8))
    writer.release()


def _level(path: str | Path) -> float:
    return float(np.asarray(Image.open(path)).mean())


def _load(csv_path: Path, **kwargs) -> tuple[list, dict[int, str]]:
    problems = Problems()
    triplets = load_epic_csv(csv_path, problems=problems, **kwargs)
    return triplets, {p.line: p.reason for p in problems}


# -- one frames folder per video --------------------------------------------------------------


def test_frames_folder_names_never_meet():
    paths = [
        "clip.mp4", "clip.avi", "a/clip.mp4", "b/clip.mp4", "a__clip.mp4", "a/b/c.mp4", "a__b/c.mp4",
        "a b.mp4", "a_b.mp4", "é.mp4", "_.mp4", ".hidden.mp4", "x" * 300 + ".mp4", "y/" + "x" * 300 + ".mp4",
        "/abs/clip.mp4", "x\udcff.mp4",
    ]
    # A plain name that looks hashed is hashed itself, so it cannot take a hashed name's place.
    hashed = frames_folder_name("a/clip.mp4")
    paths.append(hashed)
    names = [frames_folder_name(p) for p in paths]
    assert len(set(names)) == len(names)
    assert frames_folder_name("P01_01.MP4") == "P01_01.MP4" and frames_folder_name("clip.avi") == "clip.avi"
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) and len(name) <= MAX_FOLDER_CHARS + 13


def test_videos_with_one_stem_get_their_own_frames(tmp_path: Path):
    _video(tmp_path / "a" / "clip.avi", base=0)
    _video(tmp_path / "b" / "clip.avi", base=100)
    _video(tmp_path / "x.avi", base=40)
    _video(tmp_path / "x.mov", base=140)
    csv_path = tmp_path / "ann.csv"
    csv_path.write_text(
        HEADER + "n1,a/clip.avi,1,5,open\nn2,b/clip.avi,1,5,close\nn3,x.avi,1,5,cut\nn4,x.mov,1,5,wash\n"
    )
    triplets, reasons = _load(csv_path)
    assert reasons == {}
    levels = {t.id: round(_level(t.source)) for t in triplets}
    assert all(abs(levels[k] - v) < 4 for k, v in {"n1": 0, "n2": 100, "n3": 40, "n4": 140}.items())
    assert len({Path(t.source).parent for t in triplets}) == 4
    assert all(abs(_level(t.target) - _level(t.source) - 32) < 4 for t in triplets)


def test_frames_of_another_video_or_an_older_run_are_not_reused(tmp_path: Path):
    _video(tmp_path / "x.avi", base=0)
    csv_path = tmp_path / "ann.csv"
    csv_path.write_text(HEADER + "n1,x.avi,1,5,open\n")
    folder = tmp_path / "ann-frames" / "x.avi"
    # A folder an earlier run left without saying whose frames it holds (the old naming by stem
    # let x.avi.mp4 and x.avi meet): its frames are not this video's.
    folder.mkdir(parents=True)
    for name in ("frame_0000000001.jpg", "frame_0000000005.jpg", "frame_0000000009.jpg"):
        Image.new("RGB", (32, 24), (200, 200, 200)).save(folder / name)
    (t,), reasons = _load(csv_path)
    assert reasons == {} and abs(_level(t.source)) < 4 and abs(_level(t.target) - 32) < 4
    assert not (folder / "frame_0000000009.jpg").exists()  # another video's frame, gone
    # The same folder, now claimed by x.avi, is left alone by a rerun...
    before = {p: p.stat().st_mtime_ns for p in folder.glob("*.jpg")}
    load_epic_csv(csv_path)
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*.jpg")} == before
    # ... until the video is replaced by another one.
    _video(tmp_path / "x.avi", base=120, frames=8)
    (t,), reasons = _load(csv_path)
    assert reasons == {} and abs(_level(t.source) - 120) < 4
    # A frames folder shared by two roots holds the frames of the video last read, never a mix.
    _video(tmp_path / "other" / "x.avi", base=60)
    frames = tmp_path / "ann-frames"
    (t,), _ = _load(csv_path, root=tmp_path / "other", frames_dir=frames)
    assert abs(_level(t.source) - 60) < 4
    (t,), _ = _load(csv_path, frames_dir=frames)
    assert abs(_level(t.source) - 120) < 4


@pytest.mark.parametrize("bad", [b"junk", b"", "half"])
def test_a_reused_frame_that_does_not_decode_is_extracted_again(tmp_path: Path, bad):
    _video(tmp_path / "x.avi", base=40)
    csv_path = tmp_path / "ann.csv"
    csv_path.write_text(HEADER + "n1,x.avi,1,5,open\n")
    (t,), _ = _load(csv_path)
    source = Path(t.source)
    data = source.read_bytes()
    source.write_bytes(data[: len(data) // 2] if bad == "half" else bad)
    (again,), reasons = _load(csv_path)
    assert reasons == {} and again.source == t.source
    assert source.read_bytes() == data and abs(_level(source) - 40) < 4


# -- rows with empty or absent cells ------------------------------------------------------------


@pytest.mark.parametrize("column", ["video", "video_id", "video,video_id"])
def test_a_row_without_a_video_is_a_problem_with_its_line(tmp_path: Path, column: str):
    _video(tmp_path / "v.avi")
    cells = {"video": "v.avi", "video_id": "v", "video,video_id": "v.avi,v"}[column]
    empty = {"video": "", "video_id": "", "video,video_id": ","}[column]
    csv_path = tmp_path / "ann.csv"
    csv_path.write_text(f"{column},start_frame,stop_frame,narration\n{cells},1,10,open it\n{empty},1,10,close it\n")
    triplets, reasons = _load(csv_path)
    assert [t.meta["line"] for t in triplets] == [2] and reasons == {3: "missing video"}


def test_empty_absent_and_extra_cells_are_problems_with_lines(tmp_path: Path):
    _video(tmp_path / "v.avi")
    csv_path = tmp_path / "ann.csv"
    csv_path.write_text(
        HEADER
        + "n1,v.avi,1,10,open\n"
        + "n2,v.avi,,10,open\n"  # 3
        + "n3,v.avi,1,,open\n"  # 4
        + "n4,v.avi,1,10\n"  # 5: no narration cell
        + "n5,v.avi,1\n"  # 6: no stop_frame cell
        + "n6\n"  # 7
        + "n7,v.avi,1,10,open fridge, then close it\n"  # 8: a comma in an unquoted narration
        + "n8,v.avi,1_0,10,open\n"  # 9
        + "\n"  # 10: blank, skipped
        + 'n9,v.avi,1,10,"open\n'  # 11: a quote left open swallows the lines after it
        + "n10,v.avi,1,10,close\n"
    )
    triplets, reasons = _load(csv_path)
    assert [t.id for t in triplets] == ["n1"]
    assert reasons == {
        3: "missing start_frame",
        4: "missing stop_frame",
        5: "empty action",
        6: "empty action",
        7: "empty action",
        8: "6 cells where the header has 5 (a comma in an unquoted cell?)",
        9: "bad frame number: start_frame '1_0'",
        11: "line break inside a cell (the row runs to line 12: a quote left open?)",
    }


def test_a_row_without_a_video_is_one_line_on_the_command_line(tmp_path: Path, capsys):
    _video(tmp_path / "a" / "clip.avi")
    csv_path = tmp_path / "empty_video.csv"
    csv_path.write_text("video,start_frame,stop_frame,narration\na/clip.avi,1,10,open it\n,1,10,close it\n")
    assert main(["data", "inspect", str(csv_path)]) == 0
    out = capsys.readouterr().out
    assert f"{csv_path}:3: missing video" in out and "Traceback" not in out
    assert main(["data", "inspect", str(csv_path), "--strict"]) == 2
    captured = capsys.readouterr()
    assert f"{csv_path}:3: missing video" in captured.out and "Traceback" not in captured.err


def test_a_repeated_column_is_refused(tmp_path: Path):
    csv_path = tmp_path / "ann.csv"
    csv_path.write_text("video,start_frame,stop_frame,narration,narration\nv.avi,1,10,a,b\n")
    with pytest.raises(DataError, match=r"ann.csv:1: repeated column: narration"):
        load_epic_csv(csv_path)


# -- tab-separated files ----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "sep"), [("ann.tsv", "\t"), ("ann.csv", "\t"), ("ann.tsv", ","), ("ann.csv", ",")])
def test_tab_and_comma_separated_files(tmp_path: Path, name: str, sep: str):
    _video(tmp_path / "v.avi")
    path = tmp_path / name
    narration = "open the fridge, then close it" if sep == "\t" else '"open the fridge, then close it"'
    path.write_text(sep.join(["video", "start_frame", "stop_frame", "narration"]) + "\n"
                    + sep.join(["v.avi", "1", "10", narration]) + "\n")
    assert detect_format(path) == "epic"
    problems = Problems()
    (t,) = load_any(path, problems=problems)
    assert not problems and t.action == "open the fridge, then close it" and t.meta["stop_frame"] == 10


def test_a_tsv_without_the_columns_names_them(tmp_path: Path):
    path = tmp_path / "ann.tsv"
    path.write_text("video\tstart\tstop_frame\tnarration\n")
    with pytest.raises(DataError, match=r"ann.tsv:1: missing column: start_frame$"):
        load_epic_csv(path)


# -- repeated narration ids -------------------------------------------------------------------


def test_a_repeated_narration_id_is_a_problem_naming_the_first_line(tmp_path: Path):
    _video(tmp_path / "v.avi")
    csv_path = tmp_path / "ann.csv"
    csv_path.write_text(
        HEADER
        + "n0,v.avi,9,3,open\n"  # 2: bad range, so its id is not taken
        + "n0,v.avi,1,5,open\n"  # 3
        + "n1,v.avi,1,5,cut\n"  # 4
        + "n1,v.avi,2,6,wash\n"  # 5
        + "ann-7,v.avi,1,5,dry\n"  # 6
        + ",v.avi,1,5,stir\n"  # 7: its id is ann-7, taken on line 6
        + " n1 ,v.avi,1,5,cut\n"  # 8
    )
    triplets, reasons = _load(csv_path)
    assert [t.id for t in triplets] == ["n0", "n1", "ann-7"]
    assert reasons == {
        2: "bad frame range: 9..3",
        5: "duplicate id: n1 (first on line 4)",
        7: "duplicate id: ann-7 (first on line 6)",
        8: "duplicate id: n1 (first on line 4)",
    }
    manifest = tmp_path / "ann.jsonl"
    write_manifest(manifest, triplets)
    problems = Problems()
    assert len(read_manifest(manifest, problems, check_images=True)) == 3 and not problems
    assert [json.loads(line)["id"] for line in manifest.read_text().splitlines()] == ["n0", "n1", "ann-7"]
