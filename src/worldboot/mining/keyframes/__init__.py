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

Modules: :mod:`.config` (settings and records), :mod:`.select` (which frames; pure),
:mod:`.videos` (finding videos), :mod:`.flow` (one video's motion scores),
:mod:`.runner` (a run: per-video results, resume, pairs, process pool or Ray Data).
"""

from worldboot.mining.keyframes.config import (
    RESULT_VERSION,
    TRUNCATED_SHARE,
    VIDEO_EXTENSIONS,
    KeyframeConfig,
    MiningSummary,
    VideoTask,
)
from worldboot.mining.keyframes.flow import FlowScorer, VideoScan, scan_video, small_grey
from worldboot.mining.keyframes.runner import (
    assemble,
    load_result,
    mine_video,
    mine_videos,
    pair_rows,
    result_path,
)
from worldboot.mining.keyframes.select import (
    action_overlap_rate,
    buffer_size,
    consecutive_pairs,
    evenly_spaced_frames,
    greedy_keyframes,
    keyframe_hit_rate,
)
from worldboot.mining.keyframes.videos import find_videos

__all__ = [
    "FlowScorer",
    "KeyframeConfig",
    "MiningSummary",
    "RESULT_VERSION",
    "TRUNCATED_SHARE",
    "VIDEO_EXTENSIONS",
    "VideoScan",
    "VideoTask",
    "action_overlap_rate",
    "assemble",
    "buffer_size",
    "consecutive_pairs",
    "evenly_spaced_frames",
    "find_videos",
    "greedy_keyframes",
    "keyframe_hit_rate",
    "load_result",
    "mine_video",
    "mine_videos",
    "pair_rows",
    "result_path",
    "scan_video",
    "small_grey",
]
