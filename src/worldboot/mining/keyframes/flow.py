"""One video's motion scores: decoding, downscaling and optical flow, keeping only the frames that can still become key-frames."""

from __future__ import annotations

import heapq
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from worldboot.errors import ConfigError, DataError
from worldboot.mining.keyframes.config import TRUNCATED_SHARE, KeyframeConfig
from worldboot.mining.keyframes.select import buffer_size

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

        flow = None
        if self.method == "dis":
            try:
                flow = self._dis.calc(prev, nxt, None)
            except cv2.error:
                # DIS refuses frames too small for its patch pyramid (OpenCV 5.1: 13x13, 16x9 or
                # 100x10, yet 640x8 passes): such a video is scored by Farneback, every pair alike.
                flow = None
        if flow is None:
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
