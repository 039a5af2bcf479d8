"""Transition success, the one scale of the "easier to learn" claim: a dynamics model's text is
right when the world's rules, applied to the source, give the target; a world model's image
when it parses to the target."""

from __future__ import annotations

import random

import pytest

from worldboot.world import FAMILIES, apply, canonical_text, render
from worldboot.world.actions import Action, distractor_actions
from worldboot.world.gen import sample_pair
from worldboot.world.scene import Ref
from worldboot.world.text import action_text, templates_for
from worldboot.world.transition import image_transition, text_transition


@pytest.mark.parametrize("family", FAMILIES)
def test_a_cdm_text_counts_when_it_makes_the_change(family):
    rng = random.Random(f"transition/{family}")
    scene, action = sample_pair(rng, family)
    target = apply(scene, action)
    for template in range(len(templates_for(action))):  # every wording of the right action
        assert text_transition(scene, action_text(action, template), target)
    assert text_transition(scene, canonical_text(action).upper() + ".", target)  # case and a full stop
    for other in distractor_actions(scene, action, 4, rng):  # actions that make another change
        assert not text_transition(scene, canonical_text(other), target)
    assert not text_transition(scene, "the weather changed", target)  # no action of the world
    absent = Action(action.family, action.kind, Ref("red", "bottle") if action.obj != Ref("red", "bottle")
                    else Ref("blue", "box"), action.steps, action.anchor, action.where, action.value)
    if scene.find(absent.obj) is None:  # an object the scene does not hold
        assert not text_transition(scene, canonical_text(absent), target)


def test_another_action_with_the_same_change_counts():
    """'move the red box right by one cell' and 'put the red box right of the blue circle' are
    one change when the circle sits where the box lands minus one cell."""
    from worldboot.world.scene import Obj, Scene

    box, circle = Obj("box", "red", "large", 1, 1, "closed"), Obj("circle", "blue", "small", 1, 3)
    scene = Scene((box, circle))
    moved = Action("move", "right", Ref("red", "box"), steps=1)
    target = apply(scene, moved)
    relation = Action("relation", "left_of", Ref("red", "box"), anchor=Ref("blue", "circle"))
    assert apply(scene, relation) == target
    assert text_transition(scene, canonical_text(relation), target)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_world_model_image_counts_when_it_shows_the_target(family):
    rng = random.Random(f"transition-image/{family}")
    scene, action = sample_pair(rng, family)
    target = apply(scene, action)
    assert image_transition(render(target), target)
    assert image_transition(render(target, 96, (1, -1)), target)  # another size, a camera shake
    assert not image_transition(render(scene), target)  # the source: nothing changed
    other = next(iter(distractor_actions(scene, action, 1, rng)))
    assert not image_transition(render(apply(scene, other)), target)
