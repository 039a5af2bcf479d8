"""Motion key-frames of unlabelled videos, paired for CDM annotation (paper, Section 3.2).

For each video a motion score is computed per frame from dense optical flow (OpenCV's DIS,
or Farneback) between downscaled grey frames: the mean flow magnitude between frames
``t - stride`` and ``t``, in pixels per frame. The top ``K_f`` frames at least ``I_f`` frames
apart are chosen greedily by score, and consecutive key-frames (in time order) become
(source, target) pairs.

Layout of a run directory::

    RUN/videos/<video_id>.json     one result per video, written atomically after its frames
    RUN/frames/<video_id>/<frame>.jpg   key-frame images (each saved once; or .png)
    RUN/pairs.jsonl                assembled from the per-video results: id, video, label,
                                   source, target (image paths relative to RUN), source_frame,
                                   target_frame, source_score, target_score, and the
                                   key-frames' times and the video's duration in seconds
    RUN/problems.jsonl             videos skipped, with the reason
    RUN/summary.json               counts

A rerun skips videos whose result exists with the same settings and the same source file
(size and mtime), so a killed run resumes and never duplicates rows.

Decoding is the largest cost, but on small videos not by far (``benchmarks/bench_mining.py``):
frames the flow does not need are skipped with ``grab()`` (no colour conversion; the flow runs
on every second frame by default), frames are downscaled before the flow, only the frames that
can still become key-frames are kept in memory (see :func:`buffer_size`), in buffers reused
from frame to frame, so each video is decoded once; key-frames are written as JPEG.
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from worldboot.data.schema import Problems
from worldboot.errors import ConfigError, DataError, UserError
from worldboot.progress import progress_bar
from worldboot.runs import RunDir, write_atomic

#: File name endings taken as videos when a directory is scanned.
VIDEO_EXTENSIONS = (
    ".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ogv",
)  # fmt: skip

#: Bumped when the per-video result format or the scoring changes: older results are redone.
RESULT_VERSION = 2

#: A video is reported as truncated when it decodes fewer than this share of the frames its
#: header announces (headers of variable-frame-rate files are estimates, hence the slack).
TRUNCATED_SHARE = 0.75


@dataclass
class KeyframeConfig:
    """Settings of ``worldboot keyframes``.

    Attributes:
        k: Key-frames per video, K_f (paper: 6).
        interval: Minimum distance between two key-frames in frames, I_f (paper: 20).
        flow: ``dis`` (OpenCV DIS, ultrafast preset: ~10x faster) or ``farneback``.
        size: Longer side of the grey frames the flow runs on, in pixels (DIS costs in
            proportion to the area; at 128 the key-frames match those at 160 within 2 frames).
        stride: Flow between frames ``t - stride`` and ``t`` for every ``stride``-th frame;
            only those frames are converted to pixels, the others are grabbed and skipped.
            1 scores every frame; the default 2 (a score every 1/12 s at 25 fps, well below
            I_f) halves the flow's cost, which on small videos rivals the decoding's.
        min_score: Frames whose motion score is not above this are never key-frames (with
            the default 0, frames identical to their predecessor are excluded).
        image_max_side: Save key-frames with the longer side at most this (0: as decoded).
            Also bounds the memory of the frames kept while a video is scanned.
        image_format: ``jpg`` (default; what video frame datasets such as Something-Something
            ship) or ``png`` (lossless, for rendered videos; about 6x slower to write, which
            on a 720p video costs as much as decoding it).
        jpeg_quality: JPEG quality, 1-100.
        workers: Videos decoded in parallel (processes or Ray tasks).
        engine: ``local`` (a process pool) or ``ray`` (Ray Data, for clusters).
        strict: Stop at the first unreadable video instead of reporting and skipping it.
    """

    k: int = 6
    interval: int = 20
    flow: Literal["dis", "farneback"] = "dis"
    size: int = 128
    stride: int = 2
    min_score: float = 0.0
    image_max_side: int = 0
    image_format: Literal["jpg", "png"] = "jpg"
    jpeg_quality: int = 95
    workers: int = 1
    engine: Literal["local", "ray"] = "local"
    strict: bool = False

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values that make no sense."""
        if self.k < 1:
            raise ConfigError(f"k must be at least 1, got {self.k}")
        if self.interval < 1:
            raise ConfigError(f"interval must be at least 1 frame, got {self.interval}")
        if self.size < 16:
            raise ConfigError(f"size must be at least 16 pixels, got {self.size}")
        if self.stride < 1:
            raise ConfigError(f"stride must be at least 1, got {self.stride}")
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}")
        if self.image_format not in ("jpg", "png"):
            raise ConfigError(f"image_format must be jpg or png, got {self.image_format!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality must be 1-100, got {self.jpeg_quality}")
        if self.image_max_side < 0:
            raise ConfigError(f"image_max_side must be 0 (off) or positive, got {self.image_max_side}")

    def settings(self) -> dict[str, Any]:
        """The fields that change a video's result (a result with other settings is redone)."""
        return {
            "version": RESULT_VERSION,
            "k": self.k,
            "interval": self.interval,
            "flow": self.flow,
            "size": self.size,
            "stride": self.stride,
            "min_score": self.min_score,
            "image_max_side": self.image_max_side,
            "image_format": self.image_format,
            "jpeg_quality": self.jpeg_quality if self.image_format == "jpg" else None,
        }


@dataclass
class VideoTask:
    """One video to mine.

    Attributes:
        path: Absolute path of the file.
        video: Its name in the outputs: the path relative to the input directory or list.
        video_id: File-system-safe unique id (names the result file and frame folder).
        label: Class label (parent folder name, or the list's ``label`` column).
    """

    path: str
    video: str
    video_id: str
    label: str | None


@dataclass
class MiningSummary:
    """What a keyframes run produced.

    Attributes:
        videos: Videos found.
        mined: Videos with a result (now or from an earlier run).
        resumed: Of those, results reused from an earlier run.
        problems: Videos skipped, with reasons in ``problems.jsonl``.
        short: Mined videos with fewer than K_f key-frames (too short or too still).
        no_pairs: Mined videos with fewer than two key-frames (no pair).
        keyframes: Key-frames saved.
        pairs: Rows of ``pairs.jsonl``.
    """

    videos: int = 0
    mined: int = 0
    resumed: int = 0
    problems: int = 0
    short: int = 0
    no_pairs: int = 0
    keyframes: int = 0
    pairs: int = 0
    problem_reasons: dict[str, int] = field(default_factory=dict)


# -- selection (pure) ---------------------------------------------------------------------------


def greedy_keyframes(
    scores: Mapping[int, float] | Iterable[tuple[int, float]], k: int, interval: int
) -> list[int]:
    """Top-``k`` frames by score, each at least ``interval`` frames from every other one.

    Greedy: frames in order of decreasing score (ties: earlier frame first) are taken when
    no taken frame lies closer than ``interval``, until ``k`` are taken.

    Args:
        scores: Frame index -> motion score (a mapping or ``(frame, score)`` pairs).
        k: Most frames to take.
        interval: Minimum distance in frames.

    Returns:
        The chosen frame indices in time order.
    """
    items = scores.items() if isinstance(scores, Mapping) else scores
    chosen: list[int] = []
    for frame, _ in sorted(items, key=lambda fs: (-fs[1], fs[0])):
        if len(chosen) >= k:
            break
        if all(abs(frame - c) >= interval for c in chosen):
            chosen.append(frame)
    return sorted(chosen)


def buffer_size(k: int, interval: int, stride: int = 1) -> int:
    """How many of the best-scored frames must be kept so that :func:`greedy_keyframes` over
    them equals the greedy over all frames.

    Why this bound holds: a frame ``f`` is taken only if the greedy over the frames scored
    above it took fewer than ``k``. Then every one of those frames lies within
    ``interval - 1`` of one of at most ``k - 1`` taken frames, and such a window holds at most
    ``w = 2 * floor((interval - 1) / stride) + 1`` scored frames; so more than ``(k - 1) * w``
    better frames rule ``f`` out. Frames below that rank can be dropped while decoding.
    """
    window = 2 * ((interval - 1) // stride) + 1
    return (k - 1) * window + 1


def evenly_spaced_frames(n_frames: int, k: int) -> list[int]:
    """``k`` frame indices spread evenly over ``0..n_frames-1``, the baseline key-frames."""
    if n_frames <= 0 or k <= 0:
        return []
    if k == 1 or n_frames == 1:
        return [0]
    return sorted({round(i * (n_frames - 1) / (k - 1)) for i in range(k)})


def consecutive_pairs(frames: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive frames in time order as (source, target) pairs."""
    ordered = sorted(frames)
    return list(zip(ordered[:-1], ordered[1:], strict=True))


def _gt_key(video: str, gt: Mapping[str, Any]) -> str | None:
    if video in gt:
        return video
    for cand in (Path(video).name, Path(video).stem):
        if cand in gt:
            return cand
    return None


def action_overlap_rate(
    pairs: Iterable[Mapping[str, Any]], ground_truth: Mapping[str, Sequence[Sequence[int]]]
) -> float:
    """Share of pairs whose frame span overlaps a true action span of their video.

    A pair spans frames ``[source_frame, target_frame]``; an action span ``(start, end)`` is
    inclusive. Spans overlap when they share at least one frame.

    Args:
        pairs: Rows with ``video``, ``source_frame`` and ``target_frame``.
        ground_truth: Video (its name as in the rows, or its file name or stem) -> action
            spans. Pairs of videos absent here are not counted.

    Returns:
        The share in [0, 1] (0.0 when no pair is counted).
    """
    hits = total = 0
    for row in pairs:
        key = _gt_key(str(row["video"]), ground_truth)
        if key is None:
            continue
        s, t = sorted((int(row["source_frame"]), int(row["target_frame"])))
        total += 1
        hits += any(int(a) <= t and s <= int(b) for a, b in ground_truth[key])
    return hits / total if total else 0.0


def keyframe_hit_rate(
    pairs: Iterable[Mapping[str, Any]], ground_truth: Mapping[str, Sequence[Sequence[int]]]
) -> float:
    """Share of the pairs' distinct key-frames that lie inside a true action span.

    A stricter companion of :func:`action_overlap_rate`: when actions are frequent, almost any
    pair of frames 20 or more apart straddles one, so the overlap rate saturates for every
    choice of frames, while this rate still tells frames taken during actions from the rest.

    Args:
        pairs: Rows with ``video``, ``source_frame`` and ``target_frame``.
        ground_truth: As for :func:`action_overlap_rate`.

    Returns:
        The share in [0, 1] (0.0 when no key-frame is counted).
    """
    frames: set[tuple[str, int]] = set()
    for row in pairs:
        key = _gt_key(str(row["video"]), ground_truth)
        if key is not None:
            frames.update(((key, int(row["source_frame"])), (key, int(row["target_frame"]))))
    hits = sum(any(int(a) <= f <= int(b) for a, b in ground_truth[key]) for key, f in frames)
    return hits / len(frames) if frames else 0.0


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


# -- one video ------------------------------------------------------------------------------------


class FlowScorer:
    """Mean optical-flow magnitude between two grey frames, in pixels per frame.

    Args:
        method: ``dis`` (ultrafast preset) or ``farneback``.
    """

    def __init__(self, method: str) -> None:
        import cv2

        self.method = method
        if method == "dis":
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        elif method != "farneback":
            raise ConfigError(f"unknown flow method {method!r}; choose dis or farneback")

    def __call__(self, prev, nxt) -> float:
        import cv2
        import numpy as np

        if self.method == "dis":
            flow = self._dis.calc(prev, nxt, None)
        else:
            # OpenCV's documented example parameters: 3 pyramid levels, 15-px window.
            flow = cv2.calcOpticalFlowFarneback(prev, nxt, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        # numpy, not cv2.magnitude/cv2.mean: OpenCV's SIMD paths depend on the buffers' memory
        # alignment (fused multiply-add in the vector part only), so the same video gave scores
        # differing in the last bits from run to run, and near-ties then picked other frames.
        # Every second row and column: DIS densifies its field from overlapping 8x8 patches,
        # so the subsample's mean matches the full one within 1% at half the cost.
        sub = flow[::2, ::2]
        fx, fy = sub[..., 0], sub[..., 1]
        return float(np.sqrt(fx * fx + fy * fy).mean(dtype=np.float64))


def small_grey(frame, size: int):
    """BGR frame -> grey frame whose longer side is at most ``size``.

    Bilinear resizing of the colour frame before the grey conversion was the cheapest order
    measured (0.07 ms for 640x272 against 0.28 ms for grey then area averaging); its aliasing
    only adds noise that the mean over the flow field smooths out.
    """
    import cv2

    h, w = frame.shape[:2]
    longer = max(h, w)
    if longer > size:
        scale = size / longer
        frame = cv2.resize(
            frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_LINEAR
        )
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame


def _fit_side(frame, max_side: int):
    import cv2

    h, w = frame.shape[:2]
    if max_side <= 0 or max(h, w) <= max_side:
        return frame
    scale = max_side / max(h, w)
    return cv2.resize(
        frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )


class _FramePool:
    """Frame buffers reused from one ``VideoCapture.read`` to the next, and across videos.

    A scan keeps up to :func:`buffer_size` full frames (196 with the paper's settings), so
    a fresh buffer per decoded frame means the allocator maps new memory for most frames and
    the kernel zeroes it: on short videos that cost a fifth of the decoding time. Buffers of
    frames that are dropped go back here and the next read decodes into one of them; the pool
    outlives a video (one per worker process, for the last frame size seen), since a mining
    run decodes many videos of the same size. It holds at most ``limit + 2`` buffers.
    No library offers this: OpenCV's ``read`` only accepts a destination array.
    """

    _current: _FramePool | None = None

    def __init__(self, shape: tuple[int, ...], limit: int) -> None:
        self.shape = shape
        self.limit = limit + 2
        self.free: list[Any] = []

    @classmethod
    def for_capture(cls, cap: Any, limit: int) -> _FramePool:
        import cv2

        shape = (int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), 3)
        pool = cls._current
        if pool is None or pool.shape != shape:
            pool = cls(shape, limit)
            cls._current = pool
        pool.limit = max(pool.limit, limit + 2)
        return pool

    def take(self) -> Any:
        """A free buffer, or ``None`` (OpenCV then allocates one)."""
        return self.free.pop() if self.free else None

    @classmethod
    def recycle(cls, frames: Iterable[Any]) -> None:
        """Return the kept frames of a finished scan to the current pool."""
        if cls._current is not None:
            for frame in frames:
                cls._current.give(frame)

    def give(self, frame: Any) -> None:
        """Return a buffer no longer needed (``None`` and frames of another size are ignored)."""
        if frame is not None and frame.shape == self.shape and len(self.free) < self.limit:
            self.free.append(frame)


@dataclass
class VideoScan:
    """What decoding one video gave.

    Attributes:
        n_frames: Frames decoded.
        claimed_frames: Frame count the container announces (0 when unknown).
        fps: Frames per second (from the container, else from the timestamps).
        duration: Seconds.
        scores: ``(frame, score)`` for every scored frame, in time order.
        kept: ``frame -> (score, time in seconds, BGR image)`` of the frames still able to
            become key-frames (the best :func:`buffer_size` ones).
    """

    n_frames: int
    claimed_frames: int
    fps: float
    duration: float
    scores: list[tuple[int, float]]
    kept: dict[int, tuple[float, float, Any]]


def scan_video(path: str | os.PathLike[str], cfg: KeyframeConfig) -> VideoScan:
    """Decode a video once, scoring motion and keeping the frames that can become key-frames.

    Raises:
        DataError: When the file cannot be opened or no frame decodes.
    """
    import cv2

    path = str(path)
    # FFmpeg's own messages ("moov atom not found") would garble the progress bar; the
    # reason reaches problems.jsonl anyway. Set the variable to 24 to see them.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    # One decoding thread: parallelism comes from running videos side by side.
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    if not cap.isOpened():
        cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise DataError("cannot open: not a video, or a codec OpenCV cannot decode")
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        claimed = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        scorer = FlowScorer(cfg.flow)
        stride = cfg.stride
        limit = buffer_size(cfg.k, cfg.interval, stride)
        heap: list[tuple[float, int]] = []  # (score, -frame): the worst kept frame on top
        kept: dict[int, tuple[float, float, Any]] = {}
        scores: list[tuple[int, float]] = []
        pool = _FramePool.for_capture(cap, limit)
        prev = None
        first_ts = last_ts = None
        t = 0
        while True:
            if t % stride:
                if not cap.grab():
                    break
            else:
                ok, frame = cap.read(pool.take())
                if not ok or frame is None:
                    break
                grey = small_grey(frame, cfg.size)
                if prev is not None:
                    if grey.shape != prev.shape:  # resolution change mid-stream
                        grey = cv2.resize(
                            grey, (prev.shape[1], prev.shape[0]), interpolation=cv2.INTER_LINEAR
                        )
                    score = scorer(prev, grey) / stride
                    scores.append((t, score))
                    if score > cfg.min_score and (len(heap) < limit or (score, -t) > heap[0]):
                        ts = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                        image = _fit_side(frame, cfg.image_max_side)
                        kept[t] = (score, ts, image)
                        if image is not frame:
                            pool.give(frame)
                        frame = None
                        heapq.heappush(heap, (score, -t))
                        if len(heap) > limit:
                            _, neg = heapq.heappop(heap)
                            pool.give(kept.pop(-neg)[2])
                pool.give(frame)
                prev = grey
            ts = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            first_ts = ts if first_ts is None else first_ts
            last_ts = ts
            t += 1
    finally:
        cap.release()
    if t == 0:
        raise DataError("no frame decodes: corrupt or truncated file")
    if claimed > 0 and t < TRUNCATED_SHARE * claimed:
        raise DataError(f"truncated or corrupt: decoded {t} of {claimed} frames")
    span = (last_ts - first_ts) if (first_ts is not None and last_ts is not None) else 0.0
    if not (math.isfinite(fps) and 0 < fps < 1000):
        # Variable frame rate or a broken header: derive the rate from the timestamps.
        fps = (t - 1) / span if span > 0 else 0.0
    # The last timestamp plus one mean frame interval; from the frame count without timestamps.
    duration = span * t / (t - 1) if span > 0 and t > 1 else (t / fps if fps > 0 else 0.0)
    for frame_idx, (score, ts, image) in list(kept.items()):
        if not (ts > 0 or frame_idx == 0) and fps > 0:
            kept[frame_idx] = (score, frame_idx / fps, image)
    return VideoScan(t, claimed, fps, duration, scores, kept)


def _encode_image(image, fmt: str, quality: int) -> bytes:
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpg" else []
    ok, buf = cv2.imencode(f".{fmt}", image, params)
    if not ok:
        raise DataError(f"cannot encode a key-frame as {fmt.upper()}")
    return buf.tobytes()


def _source_stat(path: str) -> tuple[int | None, float | None]:
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    return st.st_size, st.st_mtime


def result_path(run_dir: str | os.PathLike[str], video_id: str) -> Path:
    """Where a video's result JSON lives."""
    return Path(run_dir) / "videos" / f"{video_id}.json"


def mine_video(task: Mapping[str, Any], run_dir: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Mine one video and write its result: key-frame PNGs first, then its JSON, atomically.

    This is the unit of work of both engines (a process pool and Ray Data): it takes and
    returns plain data. A video that cannot be read gets a result with ``status: problem``
    and the reason, so that it is reported, and not retried, by later runs.

    Args:
        task: A :class:`VideoTask` as a dict.
        run_dir: The run directory.
        cfg: A :class:`KeyframeConfig` as a dict.

    Returns:
        The result that was written.
    """
    import cv2

    cv2.setNumThreads(1)
    conf = KeyframeConfig(**cfg)
    video_id = task["video_id"]
    frames_rel = Path("frames") / video_id
    frames_dir = Path(run_dir) / frames_rel
    size, mtime = _source_stat(task["path"])
    record: dict[str, Any] = {
        "video_id": video_id,
        "video": task["video"],
        "path": task["path"],
        "label": task["label"],
        "settings": conf.settings(),
        "source_size": size,
        "source_mtime": mtime,
        "status": "ok",
        "reason": None,
        "n_frames": 0,
        "fps": 0.0,
        "duration": 0.0,
        "keyframes": [],
        "scores": [],
    }
    # Frames of a killed earlier attempt are stale: start the folder afresh.
    shutil.rmtree(frames_dir, ignore_errors=True)
    try:
        if size is None:
            raise DataError("file not found or unreadable")
        if size == 0:
            raise DataError("empty file (0 bytes)")
        scan = scan_video(task["path"], conf)
    except DataError as err:
        record.update(status="problem", reason=str(err))
    else:
        chosen = greedy_keyframes({f: s for f, (s, _, _) in scan.kept.items()}, conf.k, conf.interval)
        frames_dir.mkdir(parents=True, exist_ok=True)
        keyframes = []
        for frame_idx in chosen:
            score, ts, image = scan.kept[frame_idx]
            rel = (frames_rel / f"{frame_idx:06d}.{conf.image_format}").as_posix()
            out = Path(run_dir) / rel
            write_atomic(out, _encode_image(image, conf.image_format, conf.jpeg_quality))
            keyframes.append({"frame": frame_idx, "score": score, "time": ts, "image": rel})
        _FramePool.recycle(image for _, _, image in scan.kept.values())
        record.update(
            n_frames=scan.n_frames,
            claimed_frames=scan.claimed_frames,
            fps=scan.fps,
            duration=scan.duration,
            keyframes=keyframes,
            scores=[[f, s] for f, s in scan.scores],
        )
    write_atomic(result_path(run_dir, video_id), json.dumps(record))
    return record


def _ray_mine(row: dict[str, Any], run_dir: str, cfg: dict[str, Any]) -> dict[str, Any]:
    # Rows travel as Arrow tables: a JSON string avoids schema trouble with nested lists and Nones.
    record = mine_video(json.loads(row["task"]), run_dir, cfg)
    return {"record": json.dumps(record)}


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


# -- a run ------------------------------------------------------------------------------------------


def load_result(
    run_dir: str | os.PathLike[str], task: VideoTask, cfg: KeyframeConfig
) -> dict[str, Any] | None:
    """A finished result of ``task`` with the same settings and source file, else None."""
    path = result_path(run_dir, task.video_id)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if (
        not isinstance(record, dict)
        or record.get("settings") != cfg.settings()
        or record.get("path") != task.path
    ):
        return None
    size, mtime = _source_stat(task.path)
    if (record.get("source_size"), record.get("source_mtime")) != (size, mtime):
        return None
    if record.get("status") == "ok":
        for kf in record.get("keyframes", []):
            if not (Path(run_dir) / kf["image"]).is_file():
                return None
    return record


def pair_rows(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``pairs.jsonl`` rows of one video's result: consecutive key-frames in time order."""
    if record.get("status") != "ok":
        return []
    kfs = sorted(record["keyframes"], key=lambda kf: kf["frame"])
    rows = []
    for a, b in zip(kfs[:-1], kfs[1:], strict=True):
        rows.append(
            {
                "id": f"{record['video_id']}/{a['frame']:06d}-{b['frame']:06d}",
                "video": record["video"],
                "label": record["label"],
                "source": a["image"],
                "target": b["image"],
                "source_frame": a["frame"],
                "target_frame": b["frame"],
                "source_score": a["score"],
                "target_score": b["score"],
                "source_time": a["time"],
                "target_time": b["time"],
                "duration": record["duration"],
            }
        )
    return rows


def _run_local(
    tasks: list[VideoTask], run_dir: str, cfg: KeyframeConfig, on_done: Callable[[dict[str, Any]], None]
) -> None:
    cfg_dict = asdict(cfg)
    if cfg.workers == 1:
        _init_worker_logging_only()
        for task in tasks:
            on_done(mine_video(asdict(task), run_dir, cfg_dict))
        return
    import multiprocessing as mp

    # spawn: forking a process that runs a progress-bar thread can deadlock.
    with ProcessPoolExecutor(
        cfg.workers, mp_context=mp.get_context("spawn"), initializer=_init_worker
    ) as pool:
        pending = {pool.submit(mine_video, asdict(t), run_dir, cfg_dict) for t in tasks}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    on_done(fut.result())
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


def _init_worker_logging_only() -> None:
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def _run_ray(
    tasks: list[VideoTask], run_dir: str, cfg: KeyframeConfig, on_done: Callable[[dict[str, Any]], None]
) -> None:
    try:
        import ray
        import ray.data
    except ImportError:
        raise UserError("--engine ray needs Ray Data: pip install 'ray[data]'") from None
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=False)  # join the cluster RAY_ADDRESS names
        else:
            ray.init(num_cpus=cfg.workers, include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours counts videos
    ds = ray.data.from_items([{"task": json.dumps(asdict(t))} for t in tasks], override_num_blocks=len(tasks))
    ds = ds.map(_ray_mine, fn_kwargs={"run_dir": run_dir, "cfg": asdict(cfg)}, num_cpus=1)
    for row in ds.iter_rows():
        on_done(json.loads(row["record"]))


def assemble(
    run_dir: str | os.PathLike[str], tasks: Sequence[VideoTask], cfg: KeyframeConfig
) -> MiningSummary:
    """Write ``pairs.jsonl``, ``problems.jsonl`` and ``summary.json`` from the per-video results."""
    run = Path(run_dir)
    summary = MiningSummary(videos=len(tasks))
    problems = Problems()
    lines: list[str] = []
    for task in tasks:
        record = load_result(run, task, cfg)
        if record is None:
            problems.add(task.path, 0, "no result (the run was interrupted): rerun to finish")
            continue
        if record["status"] != "ok":
            problems.add(task.path, 0, record["reason"])
            continue
        summary.mined += 1
        n_kf = len(record["keyframes"])
        summary.keyframes += n_kf
        summary.short += n_kf < cfg.k
        summary.no_pairs += n_kf < 2
        for row in pair_rows(record):
            lines.append(json.dumps(row) + "\n")
    summary.pairs = len(lines)
    summary.problems = len(problems)
    summary.problem_reasons = dict(problems.counts())
    write_atomic(run / "pairs.jsonl", "".join(lines))
    problems.write(run / "problems.jsonl")
    return summary


def mine_videos(
    source: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    cfg: KeyframeConfig | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
) -> MiningSummary:
    """Mine every video of ``source`` into ``run_dir`` (resuming an earlier run there).

    Args:
        source: A directory of videos, or a list (see :func:`find_videos`).
        run_dir: The output directory.
        cfg: Settings (defaults: the paper's K_f = 6, I_f = 20, DIS flow).
        on_result: Called in this process with each new result, as soon as it is written.
        progress: Show a progress bar.

    Returns:
        Counts; ``pairs.jsonl`` and ``problems.jsonl`` are in ``run_dir``.

    Raises:
        DataError: For a missing or empty source, or (``strict``) the first bad video.
    """
    cfg = cfg or KeyframeConfig()
    cfg.validate()
    list_problems = Problems(strict=cfg.strict)
    tasks = find_videos(source, list_problems)
    run = Path(run_dir)
    with RunDir(run, cfg, "keyframes") as rd:
        (run / "videos").mkdir(parents=True, exist_ok=True)
        for stale in (run / "videos").glob(".*.tmp*"):
            stale.unlink(missing_ok=True)
        todo = [t for t in tasks if load_result(run, t, cfg) is None]
        rd.log(f"{len(tasks)} videos, {len(tasks) - len(todo)} already mined, engine {cfg.engine}")
        bar = progress_bar("keyframes", progress, info=True)
        with bar:
            job = bar.add_task("videos", total=len(tasks), completed=len(tasks) - len(todo), info="")
            skipped = 0

            def on_done(record: dict[str, Any]) -> None:
                nonlocal skipped
                if record["status"] != "ok":
                    skipped += 1
                    rd.log(f"skipped {record['video']}: {record['reason']}")
                    if cfg.strict:
                        raise DataError(f"{record['path']}: {record['reason']}")
                bar.update(job, advance=1, info=f"{skipped} skipped" if skipped else "")
                if on_result is not None:
                    on_result(record)

            if todo:
                engine = _run_ray if cfg.engine == "ray" else _run_local
                engine(todo, str(run), cfg, on_done)
        summary = assemble(run, tasks, cfg)
        summary.resumed = len(tasks) - len(todo)
        summary.problems += len(list_problems)
        for p in list_problems:
            summary.problem_reasons[p.reason] = summary.problem_reasons.get(p.reason, 0) + 1
        if len(list_problems):
            # List problems (malformed lines, duplicates) join the per-video ones.
            existing = (run / "problems.jsonl").read_text()
            extra = "".join(json.dumps(asdict(p)) + "\n" for p in list_problems)
            write_atomic(run / "problems.jsonl", extra + existing)
        write_atomic(run / "summary.json", json.dumps(asdict(summary), indent=2))
        rd.log(f"{summary.pairs} pairs from {summary.mined} videos, {summary.problems} problems")
    return summary
