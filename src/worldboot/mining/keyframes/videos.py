"""Finding the videos of a run: a folder, a video, a text list or a CSV, with stable ids."""

from __future__ import annotations

import csv
import hashlib
import os
import re
from pathlib import Path

from worldboot.data.schema import Problems
from worldboot.errors import DataError
from worldboot.mining.keyframes.config import VIDEO_EXTENSIONS, VideoTask

# -- listing videos -----------------------------------------------------------------------------


def _safe_id(rel: str) -> str:
    stem = rel.rsplit(".", 1)[0] if "." in Path(rel).name else rel
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem.replace("/", "__")).strip("._") or "video"


def _assign_ids(items: list[tuple[str, str, str | None]]) -> list[VideoTask]:
    """``(path, video, label)`` -> tasks with unique ids (a short hash settles collisions)."""
    ids = [_safe_id(video) for _, video, _ in items]
    seen: dict[str, int] = {}
    for i in ids:
        seen[i] = seen.get(i, 0) + 1
    tasks = []
    for (path, video, label), vid in zip(items, ids, strict=True):
        if seen[vid] > 1:
            vid = f"{vid}-{hashlib.sha1(video.encode()).hexdigest()[:8]}"
        tasks.append(VideoTask(path=path, video=video, video_id=vid, label=label))
    return tasks


def find_videos(source: str | os.PathLike[str], problems: Problems | None = None) -> list[VideoTask]:
    """The videos to mine, sorted by name.

    Args:
        source: A directory (searched recursively for :data:`VIDEO_EXTENSIONS`; the label
            is the parent folder's name), one video file, a CSV with a ``video`` and optional
            ``label`` column, or a text file with one path per line (``#`` starts a comment).
            Paths in lists are relative to the list's folder.
        problems: Receives malformed list lines and repeated videos.

    Raises:
        DataError: When ``source`` does not exist or holds no video.
    """
    src = Path(source)
    problems = problems if problems is not None else Problems()
    items: list[tuple[str, str, str | None]] = []
    if src.is_dir():
        root = src.resolve()
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() in VIDEO_EXTENSIONS and (path.is_file() or path.is_symlink()):
                rel = path.relative_to(root).as_posix()
                items.append((str(path), rel, path.parent.name))
        if not items:
            raise DataError(
                f"no videos found under {src} (looked for {', '.join(VIDEO_EXTENSIONS)}, recursively)"
            )
    elif src.is_file():
        base = src.resolve().parent
        if src.suffix.lower() in VIDEO_EXTENSIONS:
            items = [(str(src.resolve()), src.name, base.name)]
        elif src.suffix.lower() == ".csv":
            items = _read_csv_list(src, base, problems)
        else:
            try:
                text = src.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise DataError(
                    f"{src}: neither a video ({', '.join(VIDEO_EXTENSIONS)}) nor a text list of videos"
                ) from None
            for raw in text.splitlines():
                line = raw.split("#", 1)[0].strip()
                if line:
                    path = (base / line).resolve()
                    items.append((str(path), Path(line).as_posix(), path.parent.name))
        if not items:
            raise DataError(f"{src}: the list names no video")
    else:
        raise DataError(f"video directory or list not found: {src}")
    unique: list[tuple[str, str, str | None]] = []
    seen: set[str] = set()
    for item in items:
        if item[0] in seen:
            problems.add(item[0], 0, "listed twice: mined once")
            continue
        seen.add(item[0])
        unique.append(item)
    unique.sort(key=lambda it: it[1])
    return _assign_ids(unique)


def _read_csv_list(src: Path, base: Path, problems: Problems) -> list[tuple[str, str, str | None]]:
    items: list[tuple[str, str, str | None]] = []
    with open(src, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "video" not in reader.fieldnames:
            raise DataError(f"{src}:1: a video list CSV needs a header with a 'video' column (and 'label')")
        for row in reader:
            lineno = reader.line_num
            video = (row.get("video") or "").strip()
            if not video:
                problems.add(src, lineno, "malformed line: no video path")
                continue
            label = (row.get("label") or "").strip() or None
            path = (base / video).resolve()
            items.append(
                (str(path), Path(video).as_posix(), label if label is not None else path.parent.name)
            )
    return items
