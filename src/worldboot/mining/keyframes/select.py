"""Which frames become key-frames, and how well pairs match true actions (pure functions)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

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
