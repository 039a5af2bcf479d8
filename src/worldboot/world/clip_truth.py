"""What a clip truly shows between two of its frames, and how often mined labels say it.

The miner picks key-frame pairs by optical flow and the CDM labels each pair; the world's clip
generator knows each clip's scenes (``ground_truth.jsonl``), so the label of a pair can be
checked: does the labelled action, applied by the world's rules to the scene of the source
frame, give the scene of the target frame (:func:`~worldboot.world.transition.text_transition`)?
The share of such labels is the *label precision* the report states beside Table 5.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from worldboot.world.scene import Scene
from worldboot.world.transition import text_transition


def scene_at(truth: Mapping[str, Any], frame: int) -> Scene | None:
    """The scene a clip's ``frame`` shows, or None for a frame inside an action's animation.

    Args:
        truth: The clip's ground-truth row (:meth:`~worldboot.world.gen.ClipPlan.truth`): its
            ``initial_scene`` and ``actions`` with inclusive ``start``..``end`` frame spans, the
            ``end`` frame drawing the scene after the action.
        frame: A frame index.
    """
    scene = Scene.from_json(truth["initial_scene"])
    for action in truth["actions"]:
        if frame >= action["end"]:
            scene = Scene.from_json(action["scene_after"])
        elif frame >= action["start"]:
            return None
    return scene


def pair_change(truth: Mapping[str, Any], source: int, target: int) -> str:
    """What the frames ``source`` < ``target`` of a clip span: ``"one action"``, ``"no change"``,
    ``"several actions"`` or ``"mid-action"`` (a frame inside an action's animation)."""
    if scene_at(truth, source) is None or scene_at(truth, target) is None:
        return "mid-action"
    n = sum(1 for a in truth["actions"] if source < a["end"] <= target)
    return {0: "no change", 1: "one action"}.get(n, "several actions")


def label_is_right(truth: Mapping[str, Any], source: int, target: int, text: str) -> bool:
    """Whether the action ``text`` leads from the scene of frame ``source`` to that of
    ``target`` (False when either frame is inside an action's animation)."""
    before, after = scene_at(truth, source), scene_at(truth, target)
    if before is None or after is None:
        return False
    return text_transition(before, text, after)


def label_precision(
    labelled: Iterable[tuple[str, int, int, str]], truth: Iterable[Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Label precision of mined pairs, per clip family and over all (``"all"``).

    Args:
        labelled: ``(video, source frame, target frame, action text)`` per pair, ``video`` as the
            ground truth names it (``label/clip_NNNNN.mp4``).
        truth: The clips' ground-truth rows.

    Returns:
        Per family: ``pairs``, ``right`` (labels whose transition matches the clip's change),
        ``precision`` and ``spans`` (how many pairs span one action, none, several or sit
        mid-action, :func:`pair_change`).

    Raises:
        KeyError: For a pair whose video the ground truth lacks (naming it).
    """
    by_video = {row["video"]: row for row in truth}
    pairs: Counter[str] = Counter()
    right: Counter[str] = Counter()
    spans: dict[str, Counter[str]] = {}
    for video, source, target, text in labelled:
        if video not in by_video:
            raise KeyError(f"no ground truth for the mined video {video!r}")
        row = by_video[video]
        for key in (row["family"], "all"):
            pairs[key] += 1
            right[key] += label_is_right(row, source, target, text)
            spans.setdefault(key, Counter())[pair_change(row, source, target)] += 1
    return {key: {"pairs": pairs[key], "right": right[key], "precision": right[key] / pairs[key],
                  "spans": dict(spans[key])} for key in sorted(pairs, key=lambda k: (k == "all", k))}
