"""The procedural world: worldboot's embedded default, a world a tiny model can learn on a CPU.

Modules, each importing only those above it:

* :mod:`~worldboot.world.scene`: scenes, objects, the world's constants, sampling scenes;
* :mod:`~worldboot.world.actions`: the five action families, ``apply`` and sampling actions;
* :mod:`~worldboot.world.text`: paraphrase templates, canonical texts, ``parse_action``;
* :mod:`~worldboot.world.render`: the renderer and ``parse_scene``;
* :mod:`~worldboot.world.patches`: what each token patch shows, the codes the base's tokenizer learns;
* :mod:`~worldboot.world.gen`: labelled triplets and unlabelled mp4 clips with ground truth;
* :mod:`~worldboot.world.judge`: the world's judge (editing success, minimal editing).

No module imports torch: the world is data and rules. Its tiny foundation model lives in
:mod:`worldboot.base`. The main names are re-exported here, so ``from worldboot import world`` then
``world.render(world.sample_scene(rng))`` works.
"""

from worldboot.world.actions import (
    Action,
    acted_on,
    apply,
    candidate_actions,
    distractor_actions,
    is_valid,
    sample_action,
    why_invalid,
)
from worldboot.world.gen import CLIP_CLASSES, generate_clips, generate_triplets, read_clip_truth
from worldboot.world.judge import JudgeResult, judge, judge_scenes, judge_triplet
from worldboot.world.render import parse_scene, render
from worldboot.world.scene import (
    COLOURS,
    FAMILIES,
    GRID,
    KINDS,
    MAX_OBJECTS,
    PALETTE,
    SHAPES,
    SIZES,
    STATES,
    SUBSETS,
    TABLE,
    InvalidAction,
    Obj,
    Ref,
    Scene,
    sample_scene,
)
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
    "GRID",
    "MAX_OBJECTS",
    "TABLE",
    "PALETTE",
    "COLOURS",
    "SHAPES",
    "SIZES",
    "STATES",
    "SUBSETS",
    "FAMILIES",
    "KINDS",
    "InvalidAction",
    "Obj",
    "Scene",
    "Ref",
    "Action",
    "sample_scene",
    "apply",
    "is_valid",
    "why_invalid",
    "candidate_actions",
    "sample_action",
    "distractor_actions",
    "acted_on",
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
