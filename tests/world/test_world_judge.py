"""The world judge: the automatic counterpart of the GPT-4o judge."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from worldboot import world as w
from worldboot.data.schema import Problems
from worldboot.errors import DataError
from worldboot.world.actions import Action
from worldboot.world.gen import generate_triplets, sample_pair
from worldboot.world.judge import judge, judge_predictions, judge_scenes, judge_triplet, mean_scores
from worldboot.world.render import render
from worldboot.world.scene import Obj, Ref, Scene

RED = Ref("red", "square")


def _scene(*objs: Obj) -> Scene:
    return Scene(tuple(objs))


BASE = _scene(
    Obj("square", "red", "large", 1, 0),
    Obj("circle", "blue", "small", 3, 3),
    Obj("bottle", "green", "large", 0, 3, "upright"),
)


def _pairs(n: int, seed: int):
    rng = random.Random(seed)
    for i in range(n):
        scene, action = sample_pair(rng, w.FAMILIES[i % len(w.FAMILIES)])
        yield rng, scene, action


def test_true_target_scores_ten_and_copy_scores_zero():
    for _, scene, action in _pairs(100, 0):
        source, target = render(scene), render(w.apply(scene, action))
        true = judge(source, action, target)
        assert (true.editing_success, true.minimal_editing, true.score) == (10, 10, 10), true.details
        copy = judge(source, action, source)
        assert copy.editing_success == 0 and copy.score == 0, (w.canonical_text(action), copy.details)
        assert copy.minimal_editing == 10


def test_a_different_random_scene_scores_low():
    scores = []
    for rng, scene, action in _pairs(100, 1):
        other = w.sample_scene(rng)
        result = judge(render(scene), action, render(other))
        assert result.score <= 3, result.details
        scores.append(result.score)
    assert np.mean(scores) < 1


def test_judge_reads_noisy_predictions():
    noise = np.random.default_rng(0)
    for _, scene, action in _pairs(30, 2):
        target = np.asarray(render(w.apply(scene, action))).astype(float)
        noisy = np.clip(target + noise.normal(0, 15, target.shape), 0, 255).astype(np.uint8)
        assert judge(render(scene), action, noisy).score == 10


def _es(action: Action, predicted: Scene, source: Scene = BASE) -> float:
    return judge_scenes(source, action, predicted).editing_success


def _moved(scene: Scene, ref: Ref, cell: tuple[int, int], **changes) -> Scene:
    objs = [o for o in scene.objects if o.ref != ref]
    old = scene.find(ref)
    return Scene(tuple(objs + [Obj(**{**vars(old), "row": cell[0], "col": cell[1], **changes})]))


def test_move_gets_partial_credit():
    action = Action("move", "right", RED, steps=2)
    assert _es(action, _moved(BASE, RED, (1, 2))) == 10
    assert _es(action, _moved(BASE, RED, (1, 1))) == 7  # right way, one cell short
    assert _es(action, _moved(BASE, RED, (2, 2))) == 7  # right distance, one cell off course
    assert _es(action, _moved(BASE, RED, (2, 1))) == 4
    assert _es(action, _moved(BASE, RED, (0, 0))) == 1  # moved, but not to the right
    assert _es(action, _moved(BASE, RED, (1, 2), size="small")) == 8  # also shrank
    assert _es(action, BASE) == 0
    gone = _scene(*[o for o in BASE.objects if o.ref != RED])
    assert _es(action, gone) == 0


def test_relation_add_and_attribute_partial_credit():
    on_bottle = Action("relation", "under", RED, anchor=Ref("green", "bottle"))  # target (1, 3)
    assert _es(on_bottle, _moved(BASE, RED, (1, 3))) == 10
    assert _es(on_bottle, _moved(BASE, RED, (2, 3))) == 7  # below, not adjacent
    assert _es(on_bottle, _moved(BASE, RED, (2, 1))) == 4  # below, another column
    assert _es(on_bottle, _moved(BASE, RED, (0, 1))) == 1
    anchor_moved = _moved(BASE, Ref("green", "bottle"), (0, 0))  # bottle now above the square
    assert 0 < _es(on_bottle, anchor_moved) <= 5

    add = Action("count", "add", Ref("cyan", "triangle"), anchor=RED, where="right_of", value="small")
    right = Scene(BASE.objects + (Obj("triangle", "cyan", "small", 1, 1),))
    assert _es(add, right) == 10
    assert _es(add, Scene(BASE.objects + (Obj("triangle", "cyan", "large", 1, 1),))) == 8
    assert _es(add, Scene(BASE.objects + (Obj("triangle", "cyan", "small", 1, 3),))) == 7
    assert _es(add, Scene(BASE.objects + (Obj("triangle", "red", "small", 1, 1),))) == 2
    assert _es(add, Scene(BASE.objects + (Obj("circle", "yellow", "small", 1, 1),))) == 1

    recolour = Action("attribute", "colour", RED, value="yellow")
    assert _es(recolour, _moved(BASE, RED, (1, 0), colour="yellow")) == 10
    assert _es(recolour, _moved(BASE, RED, (1, 0), colour="purple")) == 3
    assert _es(recolour, _moved(BASE, RED, (2, 0), colour="yellow")) == 6
    fall = Action("motion", "fall", Ref("green", "bottle"))
    assert _es(fall, _moved(BASE, Ref("green", "bottle"), (0, 3), state="lying")) == 10
    assert _es(fall, _moved(BASE, Ref("green", "bottle"), (0, 2), state="lying")) == 7


def test_minimal_editing_penalises_collateral_changes():
    action = Action("attribute", "size", RED, value="small")
    good = _moved(BASE, RED, (1, 0), size="small")
    assert judge_scenes(BASE, action, good).minimal_editing == 10
    other_moved = _moved(good, Ref("blue", "circle"), (3, 2))
    other_gone = _scene(*[o for o in good.objects if o.ref != Ref("blue", "circle")])
    extra = Scene(good.objects + (Obj("circle", "cyan", "small", 2, 2),))
    scores = [judge_scenes(BASE, action, s) for s in (other_moved, other_gone, extra)]
    assert all(r.editing_success == 10 for r in scores)
    assert 0 < scores[1].minimal_editing < scores[0].minimal_editing < 10
    assert scores[2].minimal_editing == 8 and scores[2].score == 8
    # A scribbled table counts too.
    img = np.asarray(render(good)).copy()
    img[40:60, 20:40] = (0, 0, 0)
    scribbled = judge(render(BASE), action, img)
    assert scribbled.editing_success == 10 and scribbled.minimal_editing < 10


def test_missing_object_and_action_forms():
    absent = Action("motion", "open", Ref("purple", "box"))
    result = judge(render(BASE), absent, render(BASE))
    assert result.editing_success == 0 and "no purple box" in result.details["success_reason"]
    given = judge_scenes(BASE, absent, BASE, expected=BASE)
    assert given.editing_success == 0 and "not in the source" in given.details["success_reason"]
    action = Action("move", "down", RED, steps=1)
    target = render(w.apply(BASE, action))
    assert judge(render(BASE), "Slide the red square one space down.", target).score == 10
    assert judge(render(BASE), action.to_json(), target).score == 10
    with pytest.raises(DataError, match="not an action"):
        judge(render(BASE), "make it nicer", target)


def test_judge_triplets_and_predictions(tmp_path):
    triplets = generate_triplets(tmp_path / "data", 2, seed=0)
    pred = tmp_path / "pred"
    pred.mkdir()
    for i, t in enumerate(triplets[:-1]):  # the last prediction is missing
        image = t.target if i % 2 == 0 else t.source
        (pred / f"{t.id}.png").write_bytes(Path(image).read_bytes())
    assert judge_triplet(triplets[0], triplets[0].target).score == 10
    problems = Problems()
    results = judge_predictions(triplets, pred, problems=problems)
    assert len(results) == len(triplets) - 1 and len(problems) == 1
    assert "missing prediction" in next(iter(problems)).reason
    summary = mean_scores(results)
    assert summary["all"]["count"] == len(results)
    assert summary["all"]["score"] == pytest.approx(
        10 * sum(1 for i in range(len(results)) if i % 2 == 0) / len(results)
    )
    with pytest.raises(DataError, match="missing prediction"):
        judge_predictions(triplets, pred, problems=Problems(strict=True))
