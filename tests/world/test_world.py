"""The procedural world: scenes, actions, texts, rendering and parsing, and its generators."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from worldboot import world as w
from worldboot.cli import main
from worldboot.data.schema import read_manifest
from worldboot.errors import DataError
from worldboot.images import open_image
from worldboot.world.actions import Action
from worldboot.world.gen import (
    CLIP_CLASSES,
    ClipSpec,
    clip_frames,
    generate_clips,
    generate_triplets,
    plan_clip,
    read_clip_truth,
    sample_pair,
)
from worldboot.world.render import parse_scene, render
from worldboot.world.scene import InvalidAction, Obj, Ref, Scene
from worldboot.world.text import TEMPLATES, action_text, normalise_text, parse_action, templates_for


def _scene(*objs: Obj) -> Scene:
    return Scene(tuple(objs))


RED_SQ = Obj("square", "red", "large", 1, 1)
BLUE_BOTTLE = Obj("bottle", "blue", "small", 2, 2, "upright")
GREEN_BOX = Obj("box", "green", "large", 0, 3, "closed")


# ------------------------------------------------------------------------------------ scenes


def test_scene_json_roundtrip_and_canonical_order():
    scene = _scene(GREEN_BOX, BLUE_BOTTLE, RED_SQ)
    assert scene.objects[0] == GREEN_BOX  # sorted by (row, col)
    again = Scene.from_json(json.loads(json.dumps(scene.to_json())))
    assert again == scene and again == _scene(RED_SQ, GREEN_BOX, BLUE_BOTTLE)
    with pytest.raises(DataError):
        Scene.from_json({"objects": [{"shape": "square"}]})


def test_sampled_scenes_follow_the_rules():
    rng = random.Random(0)
    for _ in range(500):
        scene = w.sample_scene(rng)
        assert scene.problems() == []
        assert 2 <= len(scene.objects) <= w.MAX_OBJECTS
    bad = _scene(RED_SQ, Obj("square", "red", "small", 0, 0), Obj("circle", "blue", "small", 1, 1))
    assert any("share a cell" in p for p in bad.problems())
    assert any("colour and shape" in p for p in bad.problems())
    assert any("state" in p for p in _scene(Obj("square", "red", "large", 0, 0, "open")).problems())


# ------------------------------------------------------------------------------------ actions


def test_apply_each_family():
    scene = _scene(RED_SQ, BLUE_BOTTLE, GREEN_BOX)
    red = Ref("red", "square")
    moved = w.apply(scene, Action("move", "left", red, steps=1))
    assert moved.find(red).cell == (1, 0)
    assert w.apply(scene, Action("move", "down", red, steps=2)).find(red).cell == (3, 1)
    assert w.apply(scene, Action("move", "up", red, steps=1)).find(red).cell == (0, 1)
    with pytest.raises(InvalidAction, match="off the table"):
        w.apply(scene, Action("move", "left", red, steps=2))
    # "on" is the cell directly above the anchor, "under" directly below.
    on = w.apply(scene, Action("relation", "on", red, anchor=Ref("blue", "bottle")))
    assert on.find(red).cell == (1, 2)
    under = w.apply(scene, Action("relation", "under", red, anchor=Ref("green", "box")))
    assert under.find(red).cell == (1, 3)
    with pytest.raises(InvalidAction, match="already holds"):
        w.apply(on, Action("relation", "on", red, anchor=Ref("blue", "bottle")))
    added = w.apply(
        scene, Action("count", "add", Ref("cyan", "circle"), anchor=red, where="right_of", value="small")
    )
    assert added.find(Ref("cyan", "circle")) == Obj("circle", "cyan", "small", 1, 2)
    with pytest.raises(InvalidAction, match="there already is"):
        w.apply(
            scene, Action("count", "add", red, anchor=Ref("blue", "bottle"), where="left_of", value="small")
        )
    assert len(w.apply(scene, Action("count", "remove", red)).objects) == 2
    with pytest.raises(InvalidAction, match="last object"):
        w.apply(_scene(RED_SQ), Action("count", "remove", red))
    assert w.apply(scene, Action("attribute", "colour", red, value="cyan")).at((1, 1)).colour == "cyan"
    assert w.apply(scene, Action("attribute", "size", red, value="small")).at((1, 1)).size == "small"
    fallen = w.apply(scene, Action("motion", "fall", Ref("blue", "bottle")))
    assert fallen.at((2, 2)).state == "lying"
    assert w.apply(fallen, Action("motion", "stand", Ref("blue", "bottle"))) == scene
    assert w.apply(scene, Action("motion", "open", Ref("green", "box"))).at((0, 3)).state == "open"
    with pytest.raises(InvalidAction, match="only a"):
        w.apply(scene, Action("motion", "close", Ref("green", "box")))
    with pytest.raises(InvalidAction, match="no red circle"):
        w.apply(scene, Action("motion", "open", Ref("red", "circle")))


def test_move_needs_a_clear_path():
    scene = _scene(Obj("square", "red", "large", 0, 0), Obj("circle", "blue", "large", 0, 1))
    assert not w.is_valid(scene, Action("move", "right", Ref("red", "square"), steps=2))
    assert w.is_valid(scene, Action("move", "down", Ref("red", "square"), steps=2))


def test_sample_action_draws_only_valid_actions():
    rng = random.Random(1)
    seen = set()
    for _ in range(150):
        scene = w.sample_scene(rng)
        for family in w.FAMILIES:
            action = w.sample_action(scene, f"world/{family}", rng)
            if action is None:
                continue
            seen.add((action.family, action.kind))
            target = w.apply(scene, action)
            assert target.problems() == [] and target != scene
    assert seen == {(f, k) for f, kinds in w.KINDS.items() for k in kinds}
    no_motion = _scene(RED_SQ, Obj("circle", "blue", "large", 0, 0))
    assert w.sample_action(no_motion, "motion", rng) is None


def test_action_json_roundtrip_and_validation():
    action = Action(
        "count", "add", Ref("cyan", "circle"), anchor=Ref("red", "square"), where="on", value="large"
    )
    assert Action.from_json(json.loads(json.dumps(action.to_json()))) == action
    with pytest.raises(DataError, match="steps"):
        Action.from_json({"family": "move", "kind": "left", "obj": {"colour": "red", "shape": "square"}})
    with pytest.raises(DataError, match="unknown action"):
        Action.from_json({"family": "move", "kind": "jump", "obj": {"colour": "red", "shape": "square"}})


# ------------------------------------------------------------------------------------ words


def _all_kinds_actions(per_kind: int = 40) -> list[Action]:
    """Up to ``per_kind`` random valid actions of every kind."""
    rng = random.Random(2)
    by_kind: dict[tuple[str, str], list[Action]] = {}
    for _ in range(60):
        scene = w.sample_scene(rng)
        for family in w.FAMILIES:
            for action in w.candidate_actions(scene, family, rng):
                by_kind.setdefault((action.family, action.kind), []).append(action)
    return [a for actions in by_kind.values() for a in rng.sample(actions, min(per_kind, len(actions)))]


def test_parse_action_inverts_every_template():
    actions = _all_kinds_actions()
    covered = set()
    for action in actions:
        texts = [action_text(action, k) for k in range(len(templates_for(action)))]
        assert len(set(texts)) == len(texts) >= 4, texts
        for k, text in enumerate(texts):
            assert parse_action(text) == action, (k, text)
            covered.add((action.family, action.kind, k))
    n_templates = sum(len(TEMPLATES.get((f, k)) or TEMPLATES[(f, None)]) for f in w.KINDS for k in w.KINDS[f])
    assert len(covered) == n_templates


def test_parse_action_normalises_and_rejects():
    action = Action("attribute", "colour", Ref("red", "square"), value="blue")
    assert parse_action("  Change the COLOR of the red square to blue. ") == action
    assert normalise_text("Move  the Red square!") == "move the red square"
    assert parse_action("make the red square dance") is None
    assert parse_action("make the pink square blue") is None
    assert parse_action("") is None
    assert w.canonical_text(action) == w.action_text(action, 0) == "make the red square blue"


# ------------------------------------------------------------------------------------ render & parse


def test_render_uses_only_palette_colours():
    img = np.asarray(render(_scene(RED_SQ, BLUE_BOTTLE, GREEN_BOX)))
    colours = {tuple(c) for c in img.reshape(-1, 3)}
    assert colours == {w.TABLE, w.PALETTE["red"], w.PALETTE["blue"], w.PALETTE["green"]}


def test_parser_recovers_every_object_of_1000_scenes():
    rng = random.Random(3)
    for _ in range(1000):
        scene = w.sample_scene(rng)
        assert parse_scene(render(scene)) == scene


def test_parser_tolerates_jitter_sizes_and_noise():
    rng = random.Random(4)
    noise = np.random.default_rng(4)
    for i in range(100):
        scene = w.sample_scene(rng)
        assert parse_scene(render(scene, 96, offset=(2 * (i % 2) - 1, -2 * (i % 3 == 0)))) == scene
        assert parse_scene(render(scene, 64, offset=(1, -1))) == scene
        assert parse_scene(render(scene, 128).resize((100, 100), 0)) == scene  # not a multiple of 4
        noisy = np.asarray(render(scene, 64)).astype(float) + noise.normal(0, 20, (64, 64, 3))
        empty = [(r, c) for r in range(4) for c in range(4) if scene.at((r, c)) is None]
        for _ in range(6):  # specks of a few pixels on the table, as a VQ decoder leaves
            r, c = empty[noise.integers(len(empty))]
            y, x = r * 16 + noise.integers(0, 15), c * 16 + noise.integers(0, 15)
            noisy[y : y + 2, x : x + 2] = noise.integers(0, 255, 3)
        assert parse_scene(np.clip(noisy, 0, 255).astype(np.uint8)) == scene
    assert parse_scene(render(Scene(()), 64)) == Scene(())


def test_render_rejects_bad_sizes():
    with pytest.raises(DataError, match="multiple of 4"):
        render(_scene(RED_SQ), 66)


# ------------------------------------------------------------------------------------ triplets


def test_generate_triplets_deterministic_and_consistent(tmp_path):
    a = generate_triplets(tmp_path / "a", 4, seed=7)
    b = generate_triplets(tmp_path / "b", 5, seed=7)
    c = generate_triplets(tmp_path / "c", 4, seed=8)
    assert len(a) == 20 and {t.subset for t in a} == set(w.SUBSETS.values())
    by_id = {t.id: t for t in b}
    for t in a:  # asking for more keeps the first ones
        other = by_id[t.id]
        assert (t.action, t.meta) == (other.action, other.meta)
        assert Path(t.source).read_bytes() == Path(other.source).read_bytes()
    assert [t.meta for t in a] != [t.meta for t in c]
    read = read_manifest(tmp_path / "a" / "manifest.jsonl")
    assert [t.id for t in read] == [t.id for t in a]
    for t in read:
        action = Action.from_json(t.meta["action"])
        source, target = Scene.from_json(t.meta["source_scene"]), Scene.from_json(t.meta["target_scene"])
        assert action.subset == t.subset and w.apply(source, action) == target
        assert parse_action(t.action) == action and t.meta["canonical"] == w.canonical_text(action)
        assert parse_scene(open_image(t.source)) == source and parse_scene(open_image(t.target)) == target
        assert open_image(t.source).size == (64, 64)


def test_generate_triplets_subsets_and_errors(tmp_path):
    got = generate_triplets(tmp_path, 2, seed=0, size=96, subsets=["motion", "world/move"], paraphrase=False)
    assert [t.subset for t in got] == ["world/motion"] * 2 + ["world/move"] * 2
    # One family named twice is written once (its ids were written twice into the manifest).
    again = generate_triplets(tmp_path / "again", 2, subsets=["move", "world/move", "motion"])
    assert len({t.id for t in again}) == len(again) == 4
    assert all(t.action == t.meta["canonical"] for t in got)
    with pytest.raises(DataError, match="unknown world subset"):
        generate_triplets(tmp_path, 1, subsets=["world/dance"])


# ------------------------------------------------------------------------------------ clips

SMALL = ClipSpec(size=64, fps=12, actions=(2, 3), transition=(10, 12), idle=(22, 24), jitter=2)


def _read_frames(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame[:, :, ::-1])
    cap.release()
    return frames


def test_clips_read_back_with_their_ground_truth(tmp_path):
    rows = generate_clips(tmp_path, 5, seed=3, spec=SMALL)
    assert rows == read_clip_truth(tmp_path)
    assert {r["label"] for r in rows} == set(CLIP_CLASSES.values())  # one per class
    for row in rows:
        path = tmp_path / row["video"]
        assert path.parent.name == row["label"]
        frames = _read_frames(path)
        assert len(frames) == row["n_frames"] and frames[0].shape == (64, 64, 3)
        fams = [a["family"] for a in row["actions"]]
        assert fams.count(row["family"]) * 2 > len(fams)
        prev_end = -1
        for a in row["actions"]:
            assert 0 < a["start"] <= a["end"] < row["n_frames"] - 1
            assert a["start"] - prev_end > 20  # idle stretches separate actions
            prev_end = a["end"]
            action = Action.from_json(a["action"])
            assert w.apply(Scene.from_json(a["scene_before"]), action) == Scene.from_json(a["scene_after"])
            # Frames just before and after the span show the scenes, through mp4 compression and jitter.
            assert parse_scene(frames[a["start"] - 1]) == Scene.from_json(a["scene_before"])
            assert parse_scene(frames[a["end"] + 1]) == Scene.from_json(a["scene_after"])
            assert not np.array_equal(frames[a["start"] - 1], frames[a["end"] + 1])


def test_clips_are_deterministic_and_resume(tmp_path):
    rows = generate_clips(tmp_path / "a", 2, seed=5, spec=SMALL)
    assert rows == generate_clips(tmp_path / "b", 2, seed=5, spec=SMALL)
    plan = plan_clip(1, 5, SMALL)
    first = [f.copy() for f in clip_frames(plan, SMALL)]
    assert all(
        np.array_equal(x, y) for x, y in zip(first, clip_frames(plan_clip(1, 5, SMALL), SMALL), strict=True)
    )
    video = tmp_path / "a" / rows[0]["video"]
    stamp = video.stat().st_mtime_ns
    assert generate_clips(tmp_path / "a", 3, seed=5, spec=SMALL)[:2] == rows  # resumes, keeps old files
    assert video.stat().st_mtime_ns == stamp
    with pytest.raises(DataError, match="other settings"):
        generate_clips(tmp_path / "a", 2, seed=6, spec=SMALL)
    with pytest.raises(DataError, match="range"):
        generate_clips(tmp_path / "c", 1, spec=ClipSpec(idle=(5, 2)))
    # Fewer clips than the folder holds would leave some out of the ground truth.
    with pytest.raises(DataError, match=r"holds 3 clips, more than the 1 asked for"):
        generate_clips(tmp_path / "a", 1, seed=5, spec=SMALL)
    # An fps the mp4 time base cannot hold is refused before anything is written, and the
    # corrected rerun into the same folder is not refused (it held no clip).
    with pytest.raises(DataError, match=r"clip fps must be from 1 to 65535"):
        generate_clips(tmp_path / "d", 1, spec=replace(SMALL, fps=65536))
    assert not (tmp_path / "d").exists()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "world_clips.json").write_text('{"seed": 9}')  # an earlier run that wrote no clip
    assert len(generate_clips(tmp_path / "d", 1, spec=SMALL)) == 1


def test_clip_motion_is_smooth(tmp_path):
    """During an action each frame differs little from the last: the change is spread out."""
    spec = ClipSpec(size=64, fps=12, actions=(3, 3), transition=(15, 15), idle=(22, 22), jitter=0)
    plan = plan_clip(0, 0, spec)
    frames = [f.astype(int) for f in clip_frames(plan, spec)]
    for step in plan.steps:
        total = np.abs(frames[step.end] - frames[step.start - 1]).sum()
        biggest = max(np.abs(frames[f] - frames[f - 1]).sum() for f in range(step.start, step.end + 1))
        assert 0 < biggest < 0.5 * total


# ------------------------------------------------------------------------------------ CLI


def test_cli_world_commands(tmp_path, capsys):
    assert (
        main(["world", "triplets", "--out", str(tmp_path / "t"), "--n-per-subset", "1", "--seed", "1"]) == 0
    )
    assert "wrote 5 triplets" in capsys.readouterr().out
    assert len(read_manifest(tmp_path / "t" / "manifest.jsonl")) == 5
    args = ["world", "clips", "--out", str(tmp_path / "c"), "--n", "1", "--seed", "1", "--size", "64"]
    assert main(args) == 0
    assert "wrote 1 clips" in capsys.readouterr().out
    image = next((tmp_path / "t" / "images" / "move").glob("*-source.png"))
    assert main(["world", "parse", str(image), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.split(": ", 1)[1])["objects"]
    assert (
        main(["world", "triplets", "--out", str(tmp_path / "x"), "--n-per-subset", "1", "--size", "30"]) == 2
    )
    assert "multiple of 4" in capsys.readouterr().err


def test_slot_accuracy_gives_partial_credit():
    from worldboot.world.text import slot_accuracy

    truth = Action("move", "right", Ref("red", "circle"), steps=2)
    for template in range(4):  # any paraphrase of the true action is fully right
        assert slot_accuracy(action_text(truth, template), truth) == 1.0
    # Slots: family, kind, colour, shape, steps. Right object and family, wrong direction and
    # distance: 3 of the 5.
    wrong_way = action_text(Action("move", "left", Ref("red", "circle"), steps=1))
    assert slot_accuracy(wrong_way, truth) == pytest.approx(3 / 5)
    # Another family about another object: nothing right.
    other = action_text(Action("attribute", "colour", Ref("blue", "square"), value="green"))
    assert slot_accuracy(other, truth) == 0.0
    assert slot_accuracy("a table with two objects", truth) == 0.0


def test_distractor_actions_are_other_changes_of_the_same_scene():
    rng = random.Random(5)
    for i in range(40):
        scene, truth = sample_pair(rng, w.FAMILIES[i % 5])
        others = w.distractor_actions(scene, truth, 4, random.Random(i))
        assert 1 <= len(others) <= 4 and len(set(others)) == len(others)
        want = w.apply(scene, truth)
        for a in others:
            assert a != truth and w.is_valid(scene, a) and w.apply(scene, a) != want
    # Deterministic in the generator's seed.
    scene, truth = sample_pair(random.Random(1), "move")
    assert w.distractor_actions(scene, truth, 4, random.Random(2)) == w.distractor_actions(
        scene, truth, 4, random.Random(2))
