"""Finding the videos of a run: a folder, a video, a text list or a CSV, with stable ids."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from pathlib import Path

from worldboot.data.schema import Problems, visible_files
from worldboot.errors import DataError, resolve_path, unless_loop
from worldboot.mining.keyframes.config import VIDEO_EXTENSIONS, VideoTask

# -- listing videos -----------------------------------------------------------------------------


#: Longest video id: it names a frames folder and files in it, and file systems allow 255
#: bytes a name.
MAX_ID_CHARS = 80


#: A video found: its path, its name in the outputs, its label, and the list file and line
#: that name it ("" and 0 for a folder or a single file).
_Item = tuple[str, str, str | None, str, int]


def _safe_id(rel: str) -> tuple[str, bool]:
    """The id of the video at ``rel`` (its path in the run's input, without the extension), and
    whether it is the path itself (only ``/`` written ``__``): an id that had to change or be
    cut carries a hash of the path, so it cannot take the plain id of another video."""
    stem = rel.rsplit(".", 1)[0] if "." in Path(rel).name else rel
    flat = stem.replace("/", "__")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", flat).strip("._") or "video"
    if safe == flat and len(safe) <= MAX_ID_CHARS:
        return safe, True
    return f"{safe[:MAX_ID_CHARS]}-{_path_hash(rel)}", False


def _path_hash(rel: str) -> str:
    # surrogateescape: a file name that is not UTF-8 (Python holds its bytes as surrogates).
    return hashlib.sha1(rel.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def _assign_ids(items: list[_Item]) -> list[VideoTask]:
    """``(path, video, label, list file, line)`` -> tasks with unique ids that stay when videos are added: a
    path that is a valid id is its own id; any other gets a hash of its path (see
    :func:`_safe_id`). Two plain ids meet only for one stem with two extensions (``a.mp4``,
    ``a.avi``) or a folder spelt out (``x/a.mp4``, ``x__a.mp4``); both then take the hash."""
    ids = [_safe_id(item[1]) for item in items]
    seen: dict[str, int] = {}
    for i, _ in ids:
        seen[i] = seen.get(i, 0) + 1
    tasks = []
    for (path, video, label, listed_in, line), (vid, plain) in zip(items, ids, strict=True):
        if seen[vid] > 1 and plain:
            vid = f"{vid}-{_path_hash(video)}"
        tasks.append(VideoTask(path=path, video=video, video_id=vid, label=label, listed_in=listed_in, line=line))
    return tasks


def find_videos(
    source: str | os.PathLike[str], problems: Problems | None = None, hidden: list[Path] | None = None
) -> list[VideoTask]:
    """The videos to mine, sorted by name.

    Args:
        source: A directory (searched recursively for :data:`VIDEO_EXTENSIONS`, hidden names
            left out: :func:`~worldboot.data.schema.visible_files`; the label
            is the parent folder's name), one video file, a CSV with a ``video`` and optional
            ``label`` column, or a text file with one path per line (``#`` starts a comment).
            Paths in lists are relative to the list's folder.
        problems: Receives malformed list lines and repeated videos.
        hidden: When given, receives the hidden video files a directory's walk left out (not a
            problem, as a macOS sidecar is not a video, but counted: a user's ``.clip.mp4``).

    Raises:
        DataError: When ``source`` does not exist or holds no video.
    """
    src = Path(source)
    problems = problems if problems is not None else Problems()
    items: list[_Item] = []
    if src.is_dir():
        root = resolve_path(src)
        for path in visible_files(root, VIDEO_EXTENSIONS, hidden):
            rel = path.relative_to(root).as_posix()
            items.append((str(path), rel, path.parent.name, "", 0))
        if not items:
            raise DataError(
                f"no videos found under {src} (looked for {', '.join(VIDEO_EXTENSIONS)}, recursively)"
            )
    elif src.is_file():
        base = resolve_path(src).parent
        if src.suffix.lower() in VIDEO_EXTENSIONS:
            items = [(str(resolve_path(src)), src.name, base.name, "", 0)]
        elif src.suffix.lower() == ".csv":
            items = _read_csv_list(src, base, problems)
        else:
            try:
                text = src.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark is not a path
            except UnicodeDecodeError:
                raise DataError(
                    f"{src}: neither a video ({', '.join(VIDEO_EXTENSIONS)}) nor a text list of videos"
                ) from None
            for lineno, raw in enumerate(text.splitlines(), start=1):
                line = raw.split("#", 1)[0].strip()
                path = _listed(base, line, src, lineno, problems) if line else None
                if path is not None:
                    items.append((str(path), Path(line).as_posix(), path.parent.name, str(src), lineno))
        if not items:
            bad = next((p for p in problems if p.file == str(src)), None)  # every line was bad
            raise DataError(f"{bad} (the list names no other video)" if bad else f"{src}: the list names no video")
    else:
        raise unless_loop(src, DataError(f"video directory or list not found: {src}"))
    unique: list[_Item] = []
    seen: set[str] = set()
    for item in items:
        try:
            item[0].encode("utf-8")
        except UnicodeEncodeError:  # bytes Python holds as surrogates: OpenCV crashes on such a str
            shown = item[0].encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            problems.add(shown, 0, "the file name is not UTF-8 text, which OpenCV cannot open: rename the file")
            continue
        if item[0] in seen:
            where = (item[3], item[4]) if item[3] else (item[0], 0)
            problems.add(*where, f"listed twice: mined once: {item[1]}")
            continue
        seen.add(item[0])
        unique.append(item)
    unique.sort(key=lambda it: it[1])
    return _assign_ids(unique)


def _listed(base: Path, video: str, src: Path, lineno: int, problems: Problems) -> Path | None:
    """The video a list names on line ``lineno``, resolved from the list's folder ``base``; None,
    with the line in ``problems``, when its path runs into a symbolic link loop."""
    try:
        return resolve_path(base / video)
    except OSError:  # only a loop: resolve_path lets a missing path through
        problems.add(src, lineno, f"video path runs into a symbolic link loop: {video}")
        return None


def _read_csv_list(src: Path, base: Path, problems: Problems) -> list[_Item]:
    try:
        # -sig: spreadsheet programs start a UTF-8 CSV with a byte-order mark.
        text = src.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{src}: not UTF-8 text (byte {err.start + 1}); save the CSV as UTF-8") from None
    items: list[_Item] = []
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or "video" not in reader.fieldnames:
        raise DataError(f"{src}:1: a video list CSV needs a header with a 'video' column (and 'label')")
    for row in reader:
        lineno = reader.line_num
        video = (row.get("video") or "").strip()
        if not video:
            problems.add(src, lineno, "malformed line: no video path")
            continue
        label = (row.get("label") or "").strip() or None
        path = _listed(base, video, src, lineno, problems)
        if path is None:
            continue
        items.append(
            (str(path), Path(video).as_posix(), label if label is not None else path.parent.name, str(src), lineno)
        )
    return items
