"""Transition success: one scale on which a dynamics model and a world model are both judged.

A triplet (source scene, action, target scene) counts 1 for a model when the model's output
leads from the source to the target, else 0:

* a dynamics model's action text, parsed (:func:`~worldboot.world.text.parse_action`) and
  applied by the world's rules to the source scene, gives the target scene
  (:func:`text_transition`). Any wording and any action that makes the same change counts:
  "put the red box on the blue bottle" is right for "move the red box left by one cell" when
  both end in the same scene;
* a world model's image parses (:func:`~worldboot.world.render.parse_scene`) to the target
  scene (:func:`image_transition`).

Both are per-triplet 0/1 outcomes, so the two models are compared pairwise over the same
triplets (exact McNemar, :func:`worldboot.stats.mcnemar`).
"""

from __future__ import annotations

import os
from typing import Any

from worldboot.world.actions import apply, why_invalid
from worldboot.world.render import parse_scene
from worldboot.world.scene import Scene
from worldboot.world.text import parse_action


def text_transition(source: Scene, text: str, target: Scene) -> bool:
    """Whether the action ``text`` names leads from ``source`` to ``target``: False for a text
    the world's parser does not read, or an action the source scene does not allow."""
    action = parse_action(text)
    if action is None or why_invalid(source, action) is not None:
        return False
    return apply(source, action) == target


def image_transition(image: Any | str | os.PathLike[str], target: Scene) -> bool:
    """Whether ``image`` (a PIL image, an RGB array or a file) shows exactly ``target``."""
    return parse_scene(image) == target
