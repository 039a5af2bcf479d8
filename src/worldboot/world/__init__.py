"""The procedural world: worldboot's embedded default, a world a tiny model can learn on a CPU.

Modules, each importing only those above it:

* :mod:`~worldboot.world.scene`: scenes, the five action families, ``apply`` and sampling;
* :mod:`~worldboot.world.text`: paraphrase templates, canonical texts, ``parse_action``;
* :mod:`~worldboot.world.render`: the renderer and ``parse_scene``;
* :mod:`~worldboot.world.patches`: what each token patch shows, the codes the base's tokenizer learns;
* :mod:`~worldboot.world.gen`: labelled triplets and unlabelled mp4 clips with ground truth;
* :mod:`~worldboot.world.judge`: the world's judge (editing success, minimal editing);
* :mod:`~worldboot.world.base`: the tiny foundation model of the world, built and cached
  (imports torch; not re-exported here).

Everything but ``base`` is re-exported, so ``from worldboot import world`` then
``world.render(world.sample_scene(rng))`` works.
"""

from worldboot.world.gen import CLIP_CLASSES, generate_clips, generate_triplets, read_clip_truth
from worldboot.world.judge import JudgeResult, judge, judge_scenes, judge_triplet
from worldboot.world.render import parse_scene, render
from worldboot.world.scene import *  # noqa: F403
from worldboot.world.scene import __all__ as _scene_all
from worldboot.world.text import (
    SLOTS,
    TEMPLATES,
    action_text,
    canonical_text,
    normalise_text,
    parse_action,
    templates_for,
)

__all__ = [
    *_scene_all,
    "SLOTS",
    "TEMPLATES",
    "templates_for",
    "action_text",
    "canonical_text",
    "parse_action",
    "normalise_text",
    "render",
    "parse_scene",
    "generate_triplets",
    "generate_clips",
    "read_clip_truth",
    "CLIP_CLASSES",
    "judge",
    "judge_scenes",
    "judge_triplet",
    "JudgeResult",
]
