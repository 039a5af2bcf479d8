"""Key-frame mining settings (:class:`KeyframeConfig`) and the records a run writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from worldboot.errors import ConfigError

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
        listed_in: The list file that names the video ("" for a folder or a single file): its
            problems name that file and line.
        line: The 1-based line of ``listed_in`` (0 without a list).
    """

    path: str
    video: str
    video_id: str
    label: str | None
    listed_in: str = ""
    line: int = 0


@dataclass
class MiningSummary:
    """What a keyframes run produced.

    Attributes:
        videos: Videos found.
        mined: Videos with a result (now or from an earlier run).
        resumed: Of those, results reused from an earlier run.
        problems: Problems in ``problems.jsonl``: the videos skipped, and what was skipped while
            the videos were listed (a list's malformed lines, loops and repeats; a file name
            OpenCV cannot open).
        listing_problems: Of ``problems``, those found while the videos were listed.
        hidden: Video files a directory's walk left out for their hidden names (a leading dot:
            a macOS sidecar, an unfinished copy); not problems, so ``--strict`` passes them.
        short: Mined videos with fewer than K_f key-frames (too short or too still).
        no_pairs: Mined videos with fewer than two key-frames (no pair).
        fewer_frames: Mined videos that decoded fewer frames than their header announces (and
            more than :data:`TRUNCATED_SHARE` of them): a frame that does not decode is
            skipped by the decoder, so the frame numbers after it are off by the gap; with a
            variable frame rate the header's count is an estimate.
        keyframes: Key-frames saved.
        pairs: Rows of ``pairs.jsonl``.
    """

    videos: int = 0
    mined: int = 0
    resumed: int = 0
    problems: int = 0
    listing_problems: int = 0
    hidden: int = 0
    short: int = 0
    no_pairs: int = 0
    fewer_frames: int = 0
    keyframes: int = 0
    pairs: int = 0
    problem_reasons: dict[str, int] = field(default_factory=dict)
