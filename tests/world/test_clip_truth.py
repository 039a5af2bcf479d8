"""What a clip shows between two frames, and the label precision of mined pairs."""

from __future__ import annotations

import pytest

from worldboot.world.actions import Action
from worldboot.world.clip_truth import label_is_right, label_precision, pair_change, scene_at
from worldboot.world.gen import ClipSpec, clip_frames, plan_clip
from worldboot.world.render import parse_scene
from worldboot.world.scene import Scene
from worldboot.world.text import canonical_text

CUTS = ClipSpec(size=64, fps=12, actions=(3, 3), idle=(22, 24), jitter=0)
ANIMATED = ClipSpec(size=64, fps=12, actions=(3, 3), transition=(6, 6), idle=(22, 24), jitter=0)


@pytest.mark.parametrize("spec", [CUTS, ANIMATED], ids=["cuts", "animated"])
def test_scene_at_is_what_each_frame_shows(spec):
    """Every frame outside an animation parses to scene_at's scene; frames inside one have none."""
    plan = plan_clip(2, 7, spec)
    truth = plan.truth(spec)
    inside = {f for s in plan.steps for f in range(s.start, s.end)}
    for f, frame in enumerate(clip_frames(plan, spec)):
        scene = scene_at(truth, f)
        assert (scene is None) == (f in inside)
        if scene is not None:
            assert parse_scene(frame) == scene, f


def test_pair_change_and_labels_on_a_planned_clip():
    plan = plan_clip(0, 3, ANIMATED)
    truth = plan.truth(ANIMATED)
    a, b, c = plan.steps
    right, other = canonical_text(b.action), canonical_text(a.action)
    assert pair_change(truth, a.end, b.end) == "one action"
    assert label_is_right(truth, a.end, b.end, right)
    assert label_is_right(truth, a.end + 1, b.end + 2, right)  # any still frames around it
    assert not label_is_right(truth, a.end, b.end, other)
    assert not label_is_right(truth, a.end, b.end, "dance with the purple cloud")  # no action: wrong
    assert pair_change(truth, a.end, a.end + 5) == "no change"
    assert pair_change(truth, 0, c.end) == "several actions"
    assert pair_change(truth, a.start, b.end) == "mid-action"
    assert not label_is_right(truth, a.start, b.end, canonical_text(a.action))


def test_label_precision_counts_per_family_and_names_an_unknown_video():
    truths = [plan_clip(i, 1, CUTS).truth(CUTS) for i in range(2)]
    labelled = []
    for row in truths:
        first, second = row["actions"][0], row["actions"][1]
        good = canonical_text(Action.from_json(second["action"]))
        labelled += [(row["video"], first["end"], second["end"], good),
                     (row["video"], first["end"], second["end"], "remove the purple cloud")]
    got = label_precision(labelled, truths)
    families = {row["family"] for row in truths}
    assert set(got) == families | {"all"} and list(got)[-1] == "all"
    assert got["all"] == {"pairs": 4, "right": 2, "precision": 0.5, "spans": {"one action": 4}}
    with pytest.raises(KeyError, match="clip_00099"):
        label_precision([("moving_things/clip_00099.mp4", 0, 30, "x")], truths)
    assert Scene.from_json(truths[0]["initial_scene"]) == scene_at(truths[0], 0)
