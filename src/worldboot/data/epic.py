"""Loader for EPIC-Kitchens-style action CSVs: the first and last frame of each clip and its narration.

The paper trains the dynamics model on EPIC-Kitchens' action-recognition clips with the first
frame as o_s, the last frame as o_t and the narration as a. A CSV row names a video, a start
and a stop frame, and the narration. Columns (EPIC-100's own names work as they are):

* the video: ``video`` (a path under the root), or ``video_id`` with optional
  ``participant_id`` (looked up as ``ROOT/VIDEO_ID.MP4``, ``ROOT/PARTICIPANT/VIDEO_ID.MP4`` or
  ``ROOT/PARTICIPANT/videos/VIDEO_ID.MP4``, any common extension);
* ``start_frame``, ``stop_frame``: frame numbers, 1-based by default as in EPIC's annotations
  (whose frame 1 is the first frame of the video); ``frame_base=0`` for 0-based numbers;
* ``narration``: the action text; ``narration_id`` becomes the triplet id when present.

Frames are extracted once with OpenCV into a frames folder (``FRAMES/VIDEO/frame_NNNNNNNNNN.jpg``,
numbered as in the CSV) and written atomically, so a rerun reuses them and a killed run never
leaves half a JPEG behind.
"""

from __future__ import annotations

import csv
import io
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from worldboot.data.schema import Problems, Triplet, action_text_problem, resolve_under
from worldboot.errors import DataError, resolve_path, unless_loop
from worldboot.runs import write_atomic

#: Video extensions tried when a row gives a ``video_id`` rather than a path.
VIDEO_EXTENSIONS = (".MP4", ".mp4", ".avi", ".mkv", ".webm", ".mov", ".MOV")
#: Columns that become Triplet fields; every other column is kept in ``meta``.
_USED = {"video", "video_id", "start_frame", "stop_frame", "narration", "narration_id"}


def default_frames_dir(csv_path: str | os.PathLike[str]) -> Path:
    """Where frames go unless told otherwise: ``CSV_STEM-frames/`` beside the CSV."""
    csv_path = Path(csv_path)
    return csv_path.with_name(f"{csv_path.stem}-frames")


def _find_video(root: Path, row: dict[str, str]) -> Path:
    """The video file of a row, resolved under ``root``.

    Raises:
        DataError: The path escapes the root, or no candidate file exists.
    """
    if row.get("video"):
        path = resolve_under(root, row["video"])
        if not path.is_file():
            raise DataError(f"missing video: {row['video']}")
        return path
    video_id = row["video_id"]
    participant = row.get("participant_id") or ""
    folders = [Path(".")]
    if participant:
        folders += [Path(participant), Path(participant) / "videos"]
    for folder in folders:
        for ext in VIDEO_EXTENSIONS:
            candidate = resolve_under(root, str(folder / f"{video_id}{ext}"))
            if candidate.is_file():
                return candidate
    raise DataError(f"missing video: no file for video_id {video_id} under {root}")


def _write_frame_atomic(path: Path, frame) -> None:
    """Encode a BGR frame as JPEG and write it through a temporary file."""
    import cv2

    ok, buf = cv2.imencode(path.suffix, frame, [int(cv2.IMWRITE_JPEG_QUALITY), 95])
    if not ok:
        raise DataError(f"cannot encode frame as {path.suffix}: {path}")
    write_atomic(path, buf.tobytes())


def extract_frames(video: Path, frames: dict[int, Path], number_base: int = 0) -> dict[int, str]:
    """Write the requested 0-based frames of ``video`` to their paths, skipping those already there.

    Args:
        video: The video file.
        frames: 0-based frame index -> output image path.
        number_base: Added to a frame index in messages, to name frames as the user's file does.

    Returns:
        Frame index -> reason, for the frames that could not be extracted.
    """
    import cv2

    todo = sorted(i for i, p in frames.items() if not p.is_file())
    if not todo:
        return {}
    failed: dict[int, str] = {}
    cap = cv2.VideoCapture(str(video))
    try:
        if not cap.isOpened():
            return dict.fromkeys(todo, f"cannot open video: {video}")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        position = 0
        for index in todo:
            if count > 0 and index >= count:
                failed[index] = (
                    f"frame {index + number_base} is past the end of {video.name} ({count} frames)"
                )
                continue
            # Reading forward is exact and cheap for nearby frames; a seek is needed for far ones
            # (OpenCV's FFmpeg backend seeks to the previous key frame and decodes forward).
            if index < position or index - position > 32:
                cap.set(cv2.CAP_PROP_POS_FRAMES, index)
                position = index
            while position < index and cap.grab():
                position += 1
            ok, frame = cap.read() if position == index else (False, None)
            if not ok or frame is None:
                failed[index] = f"cannot decode frame {index + number_base} of {video.name}"
                position = -1  # unknown: force a seek next time
                continue
            position = index + 1
            _write_frame_atomic(frames[index], frame)
    finally:
        cap.release()
    return failed


def load_epic_csv(
    path: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    frames_dir: str | os.PathLike[str] | None = None,
    problems: Problems | None = None,
    subset: str = "epic",
    frame_base: int = 1,
) -> list[Triplet]:
    """Load an EPIC-Kitchens-style CSV, extracting first and last frames of every clip.

    Args:
        path: The CSV file (header row first).
        root: Folder the videos are looked up in (default: the CSV's folder).
        frames_dir: Where the extracted frames go (default: :func:`default_frames_dir`).
        problems: Filled with bad rows (file, CSV line, reason).
        subset: Subset name of every triplet.
        frame_base: The number of a video's first frame in the CSV (1 in EPIC's annotations).

    Returns:
        Triplets ``(first frame, narration, last frame)`` with the other columns, the video and
        the frame numbers in ``meta``.

    Raises:
        DataError: A missing file or a header without the required columns.
    """
    path = Path(path)
    if not path.is_file():
        raise unless_loop(path, DataError(f"file not found: {path}"))
    root = Path(root) if root is not None else path.parent
    frames_root = Path(frames_dir) if frames_dir is not None else default_frames_dir(path)
    problems = problems if problems is not None else Problems()
    rows = _read_rows(path)
    clips = _plan_clips(path, rows, root, frames_root, frame_base, problems)
    # Each video is opened once, for every frame its clips need.
    per_video: dict[Path, dict[int, Path]] = defaultdict(dict)
    for clip in clips:
        per_video[clip.video].update({clip.start: clip.first, clip.stop: clip.last})
    failures: dict[tuple[Path, int], str] = {}
    for video, frames in per_video.items():
        for index, reason in extract_frames(video, frames, frame_base).items():
            failures[(video, index)] = reason
    out: list[Triplet] = []
    for clip in clips:
        reason = failures.get((clip.video, clip.start)) or failures.get((clip.video, clip.stop))
        if reason:
            problems.add(path, clip.line, reason)
            continue
        out.append(_clip_triplet(path, clip, root, subset, frame_base))
    return out


def _read_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """The CSV's rows with their line numbers, once its header has the required columns.

    Raises:
        DataError: Not UTF-8, a missing column or a malformed line.
    """
    rows: list[tuple[int, dict[str, str]]] = []
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (save the CSV as UTF-8)") from None
    with io.StringIO(text, newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in ("start_frame", "stop_frame", "narration") if c not in header]
        if "video" not in header and "video_id" not in header:
            missing.append("video (or video_id)")
        if missing:
            raise DataError(f"{path}:1: missing column: {', '.join(missing)}")
        try:
            for row in reader:
                rows.append((reader.line_num, row))
        except csv.Error as err:
            raise DataError(f"{path}:{reader.line_num}: malformed CSV: {err}") from None
    return rows


@dataclass
class _Clip:
    """A valid CSV row: its video, its first and last frame (0-based) and their image files."""

    line: int
    row: dict[str, str]
    video: Path
    start: int
    stop: int
    first: Path
    last: Path


def _plan_clips(
    path: Path,
    rows: list[tuple[int, dict[str, str]]],
    root: Path,
    frames_root: Path,
    frame_base: int,
    problems: Problems,
) -> list[_Clip]:
    """The rows with a valid narration, frame range and video, as clips; the others are reported."""
    clips: list[_Clip] = []
    for lineno, row in rows:
        narration = (row.get("narration") or "").strip()
        bad_action = action_text_problem(narration)
        if bad_action:
            problems.add(path, lineno, bad_action)
            continue
        try:
            start = int(str(row["start_frame"]).strip()) - frame_base
            stop = int(str(row["stop_frame"]).strip()) - frame_base
        except (TypeError, ValueError):
            problems.add(
                path, lineno, f"bad frame number: {row.get('start_frame')!r}, {row.get('stop_frame')!r}"
            )
            continue
        if start < 0 or stop <= start:
            problems.add(path, lineno, f"bad frame range: {row['start_frame']}..{row['stop_frame']}")
            continue
        try:
            video = _find_video(root, row)
        except DataError as err:
            problems.add(path, lineno, str(err))
            continue
        folder = frames_root / video.stem
        first = folder / f"frame_{start + frame_base:010d}.jpg"
        last = folder / f"frame_{stop + frame_base:010d}.jpg"
        clips.append(_Clip(lineno, row, video, start, stop, first, last))
    return clips


def _clip_triplet(path: Path, clip: _Clip, root: Path, subset: str, frame_base: int) -> Triplet:
    """A clip whose frames were extracted, as a triplet; the CSV's other columns go to ``meta``."""
    row = clip.row
    meta = {k: v for k, v in row.items() if k not in _USED and k is not None}
    meta.update(
        video=os.path.relpath(clip.video, resolve_path(root))
        if resolve_path(root) in clip.video.parents
        else str(clip.video),
        start_frame=clip.start + frame_base,
        stop_frame=clip.stop + frame_base,
        line=clip.line,
    )
    return Triplet(
        id=(row.get("narration_id") or "").strip() or f"{path.stem}-{clip.line}",
        subset=subset,
        source=str(resolve_path(clip.first)),
        action=row["narration"].strip(),
        target=str(resolve_path(clip.last)),
        meta=meta,
    )
