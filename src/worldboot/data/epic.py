"""Loader for EPIC-Kitchens-style action CSVs: the first and last frame of each clip and its narration.

The paper trains the dynamics model on EPIC-Kitchens' action-recognition clips with the first
frame as o_s, the last frame as o_t and the narration as a. A row names a video, a start and a
stop frame, and the narration. The file is comma-separated, or tab-separated (a ``.tsv``, or
any file whose header only reads with tabs). Columns (EPIC-100's own names work as they are):

* the video: ``video`` (a path under the root), or ``video_id`` with optional
  ``participant_id`` (looked up as ``ROOT/VIDEO_ID.MP4``, ``ROOT/PARTICIPANT/VIDEO_ID.MP4`` or
  ``ROOT/PARTICIPANT/videos/VIDEO_ID.MP4``, any common extension);
* ``start_frame``, ``stop_frame``: frame numbers, 1-based by default as in EPIC's annotations
  (whose frame 1 is the first frame of the video); ``frame_base=0`` for 0-based numbers;
* ``narration``: the action text; ``narration_id`` becomes the triplet id when present.

A row with an empty or absent required cell, more cells than the header, a line break inside a
cell (a quote left open swallows the lines after it), or the id of an earlier row is reported
with its line and skipped.

Frames are extracted once with OpenCV into ``FRAMES/VIDEO/frame_NNNNNNNNNN.jpg`` (numbered as
in the CSV; ``VIDEO`` named by :func:`frames_folder_name`), atomically, so a rerun reuses them
and a killed run leaves no half JPEG. A folder's ``.video`` file records whose frames it holds:
those of another or a changed video, or unrecorded, are deleted, never reused; a reused frame
is decoded first, and extracted again when it does not decode.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from worldboot.data.schema import Problems, Triplet, action_text_problem, image_problem, resolve_under
from worldboot.errors import DataError, resolve_path, unless_loop
from worldboot.runs import write_atomic

#: Video extensions tried when a row gives a ``video_id`` rather than a path.
VIDEO_EXTENSIONS = (".MP4", ".mp4", ".avi", ".mkv", ".webm", ".mov", ".MOV")
#: Columns that become Triplet fields; every other column is kept in ``meta``.
_USED = {"video", "video_id", "start_frame", "stop_frame", "narration", "narration_id"}
#: Longest frames-folder name made from a video's path, before its hash (a file system allows
#: 255 bytes a name).
MAX_FOLDER_CHARS = 80
#: How a hashed frames-folder name ends (see :func:`frames_folder_name`).
_HASHED = re.compile(r"-[0-9a-f]{12}$")
#: The file in a frames folder that names the video its frames come from.
_SOURCE_FILE = ".video"


def default_frames_dir(csv_path: str | os.PathLike[str]) -> Path:
    """Where frames go unless told otherwise: ``CSV_STEM-frames/`` beside the CSV."""
    csv_path = Path(csv_path)
    return csv_path.with_name(f"{csv_path.stem}-frames")


def frames_folder_name(rel: str) -> str:
    """The name of a video's frames folder, from its path under the root (or its absolute path
    when it lies elsewhere).

    A file name at the root that is a safe folder name is used as it is (``P01_01.MP4``). Any
    other path is made safe (``/`` written ``__``, other characters ``_``, cut to
    :data:`MAX_FOLDER_CHARS`) and given a hash of the path (``a__clip.mp4-1f2e3d4c5b6a``); a
    plain name never ends like that, so two videos never share a folder: not ``a/clip.mp4`` and
    ``b/clip.mp4``, nor ``x.mp4`` and ``x.avi``.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", rel.replace(os.sep, "/").replace("/", "__")).strip("._")
    if safe == rel and len(safe) <= MAX_FOLDER_CHARS and not _HASHED.search(safe):
        return safe
    # surrogateescape: a file name that is not UTF-8 (Python holds its bytes as surrogates).
    digest = hashlib.sha1(rel.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return f"{safe[-MAX_FOLDER_CHARS:].lstrip('._-') or 'video'}-{digest}"


def _video_rel(video: Path, root: Path) -> str:
    """A resolved video's path under the (resolved) root, or its absolute path when outside it."""
    real_root = resolve_path(root)
    return os.path.relpath(video, real_root) if real_root in video.parents else str(video)


def _claim_folder(folder: Path, video: Path) -> None:
    """Make ``folder`` the frames folder of ``video`` as it is now: unless the folder records
    just that (path, size and modification time), its frames are deleted first (they are of
    another video, of an older copy of this one, or of a run that did not record its video)."""
    stat = video.stat()
    stamp = json.dumps({"video": str(video), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}) + "\n"
    marker = folder / _SOURCE_FILE
    try:
        if marker.read_text(encoding="utf-8") == stamp:
            return
    except (OSError, UnicodeDecodeError):  # none yet
        pass
    for old in folder.glob("frame_*.jpg"):
        old.unlink()
    write_atomic(marker, stamp)


def _find_video(root: Path, row: dict[str, str]) -> Path:
    """The video file of a row, resolved under ``root``.

    Raises:
        DataError: The row names no video, the path escapes the root, or no candidate file exists.
    """
    if (row.get("video") or "").strip():
        path = resolve_under(root, row["video"])
        if not path.is_file():
            raise DataError(f"missing video: {row['video']}")
        return path
    video_id = (row.get("video_id") or "").strip()
    if not video_id:
        raise DataError("missing video")
    participant = (row.get("participant_id") or "").strip()
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


def extract_frames(
    video: Path, frames: dict[int, Path], number_base: int = 0, check_images: bool = True
) -> dict[int, str]:
    """Write the requested 0-based frames of ``video`` to their paths, skipping those already there.

    Args:
        video: The video file.
        frames: 0-based frame index -> output image path.
        number_base: Added to a frame index in messages, to name frames as the user's file does.
        check_images: Decode a frame already there before reusing it, and extract it again when
            it does not decode (else that it is a file is enough).

    Returns:
        Frame index -> reason, for the frames that could not be extracted.
    """
    import cv2

    def usable(path: Path) -> bool:
        return image_problem(path) is None if check_images else path.is_file()

    todo = sorted(i for i, p in frames.items() if not usable(p))
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
    check_images: bool = True,
) -> list[Triplet]:
    """Load an EPIC-Kitchens-style CSV (or TSV), extracting first and last frames of every clip.

    Args:
        path: The CSV file (header row first).
        root: Folder the videos are looked up in (default: the CSV's folder).
        frames_dir: Where the extracted frames go (default: :func:`default_frames_dir`).
        problems: Filled with bad rows (file, CSV line, reason).
        subset: Subset name of every triplet.
        frame_base: The number of a video's first frame in the CSV (1 in EPIC's annotations).
        check_images: Decode each frame an earlier run extracted before reusing it.

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
    rows = _read_rows(path, problems)
    clips = _plan_clips(path, rows, root, frames_root, frame_base, problems)
    # Each video is opened once, for every frame its clips need.
    per_video: dict[Path, dict[int, Path]] = defaultdict(dict)
    for clip in clips:
        per_video[clip.video].update({clip.start: clip.first, clip.stop: clip.last})
    failures: dict[tuple[Path, int], str] = {}
    for video, frames in per_video.items():
        _claim_folder(next(iter(frames.values())).parent, video)
        for index, reason in extract_frames(video, frames, frame_base, check_images).items():
            failures[(video, index)] = reason
    out: list[Triplet] = []
    first_line: dict[str, int] = {}
    for clip in clips:
        reason = failures.get((clip.video, clip.start)) or failures.get((clip.video, clip.stop))
        if reason:
            problems.add(path, clip.line, reason)
            continue
        triplet = _clip_triplet(path, clip, root, subset, frame_base)
        if triplet.id in first_line:
            first = first_line[triplet.id]
            problems.add(path, clip.line, f"duplicate id: {triplet.id} (first on line {first})")
            continue
        first_line[triplet.id] = clip.line
        out.append(triplet)
    return out


def _records(path: Path, text: str, delimiter: str) -> Iterator[tuple[int, int, list[str]]]:
    """``(first line, last line, cells)`` of each record of the file's text; blank lines are left out.

    Raises:
        DataError: A malformed line.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    end = 0
    try:
        for cells in reader:
            start, end = end + 1, reader.line_num
            if cells:
                yield start, end, cells
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV: {err}") from None


def _read_rows(path: Path, problems: Problems) -> list[tuple[int, dict[str, str]]]:
    """The rows with the line each starts on, once the header has the required columns.

    The delimiter is a tab for a ``.tsv``, else a comma; the other one when only it gives the
    header its columns. A row with more cells than the header, or one that runs over several
    lines, is reported and left out; a row's absent cells are absent from its dict.

    Raises:
        DataError: Not UTF-8, a missing or repeated column, or a malformed line.
    """
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (save the CSV as UTF-8)") from None
    preferred = "\t" if path.suffix.lower() == ".tsv" else ","
    refusal = ""
    for delimiter in (preferred, "," if preferred == "\t" else "\t"):
        records = _records(path, text, delimiter)
        header_line, _, header = next(records, (1, 1, []))
        header = [name.strip() for name in header]
        missing = [c for c in ("start_frame", "stop_frame", "narration") if c not in header]
        if "video" not in header and "video_id" not in header:
            missing.append("video (or video_id)")
        if not missing:
            break
        refusal = refusal or f"{path}:{header_line}: missing column: {', '.join(missing)}"
    else:
        raise DataError(refusal)
    repeated = sorted({name for name in header if name and header.count(name) > 1})
    if repeated:
        raise DataError(f"{path}:{header_line}: repeated column: {', '.join(repeated)}")
    separator = "tab" if delimiter == "\t" else "comma"
    rows: list[tuple[int, dict[str, str]]] = []
    for start, end, cells in records:
        if end > start:
            reason = f"line break inside a cell (the row runs to line {end}: a quote left open?)"
            problems.add(path, start, reason)
        elif len(cells) > len(header):
            problems.add(
                path,
                start,
                f"{len(cells)} cells where the header has {len(header)} (a {separator} in an unquoted cell?)",
            )
        else:
            rows.append((start, dict(zip(header, cells, strict=False))))
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


def _frame_range(row: dict[str, str], frame_base: int) -> tuple[int, int] | str:
    """A row's first and last frame, 0-based, or why it has none."""
    numbers = []
    for name in ("start_frame", "stop_frame"):
        cell = (row.get(name) or "").strip()
        if not cell:
            return f"missing {name}"
        # Not int() alone: it also takes "1_000" and other scripts' digits.
        if not re.fullmatch(r"[+-]?[0-9]{1,18}", cell):
            return f"bad frame number: {name} {cell!r}"
        numbers.append(int(cell) - frame_base)
    start, stop = numbers
    if start < 0 or stop <= start:
        return f"bad frame range: {row['start_frame'].strip()}..{row['stop_frame'].strip()}"
    return start, stop


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
        bad = action_text_problem((row.get("narration") or "").strip())
        frames = _frame_range(row, frame_base)
        if bad or isinstance(frames, str):
            problems.add(path, lineno, bad or str(frames))
            continue
        start, stop = frames
        try:
            video = _find_video(root, row)
        except DataError as err:
            problems.add(path, lineno, str(err))
            continue
        folder = frames_root / frames_folder_name(_video_rel(video, root))
        first = folder / f"frame_{start + frame_base:010d}.jpg"
        last = folder / f"frame_{stop + frame_base:010d}.jpg"
        clips.append(_Clip(lineno, row, video, start, stop, first, last))
    return clips


def _clip_triplet(path: Path, clip: _Clip, root: Path, subset: str, frame_base: int) -> Triplet:
    """A clip whose frames were extracted, as a triplet; the CSV's other columns go to ``meta``."""
    row = clip.row
    meta = {k: v for k, v in row.items() if k not in _USED and k}
    meta.update(
        video=_video_rel(clip.video, root),
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
