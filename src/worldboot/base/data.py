"""What the world base is trained on: captions, tokenizer batches, held-out scenes, sequences."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from worldboot import world
from worldboot.base.recipe import (
    PROMPTS,
    VQRecipe,
)
from worldboot.base.vq_train import VQBatch
from worldboot.world.patches import patch_codes
from worldboot.world.render import render
from worldboot.world.scene import COLOURS, GRID, SHAPES, SIZES, STATES, Obj, Scene

# --------------------------------------------------------------------------------------------
# Words
# --------------------------------------------------------------------------------------------

_NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_ROWS = ("back", "second", "third", "front")
_COLS = ("far left", "left", "right", "far right")


def describe_object(obj: Obj) -> str:
    """``a large open red box in the back row on the far left``."""
    state = f"{obj.state} " if obj.state else ""
    words = f"{obj.size} {state}{obj.colour} {obj.shape}"
    row = _ROWS[obj.row] if GRID == 4 else f"row {obj.row}"
    col = _COLS[obj.col] if GRID == 4 else f"column {obj.col}"
    return f"a {words} in the {row} row on the {col}"


def describe(scene: Scene) -> str:
    """A caption naming every object's size, state, colour, shape and cell, in reading order
    (the order of the image tokens): ``a table with two objects: a small red circle in the
    back row on the left and a large upright blue bottle in the front row on the right.``"""
    n = len(scene.objects)
    count = _NUMBERS[n] if n < len(_NUMBERS) else str(n)
    parts = [describe_object(o) for o in scene.objects]
    if not parts:
        return "an empty table."
    things = parts[0] if n == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"a table with {count} object{'s' if n != 1 else ''}: {things}."


def text_corpus(seed: int = 0, n_scenes: int = 600, n_actions: int = 300) -> list[str]:
    """Lines to train the BPE on: captions, every template of sampled actions, the prompts."""
    from worldboot.world.text import action_text, templates_for

    rng = random.Random(f"worldboot/base/corpus/{seed}")
    lines = [describe(world.sample_scene(rng, rng.randint(1, world.MAX_OBJECTS))) for _ in range(n_scenes)]
    for i in range(n_actions):
        family = world.FAMILIES[i % len(world.FAMILIES)]
        scene = world.sample_scene(rng)
        action = world.sample_action(scene, family, rng)
        if action is not None:
            lines += [action_text(action, t) for t in range(len(templates_for(action)))]
    lines += [t.format(action="").strip() for t in (PROMPTS.world_before, PROMPTS.world, PROMPTS.dynamics) if t]
    return lines


# --------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------


def crowded_scene(rng: random.Random, n: int) -> Scene:
    """``n`` objects (at most ``GRID * GRID``) with any attributes in distinct cells
    (colour+shape may repeat, as in a generated image; the world's own scenes hold at most four)."""
    cells = rng.sample([(r, c) for r in range(GRID) for c in range(GRID)], n)
    objects = []
    for r, c in cells:
        shape = rng.choice(SHAPES)
        state = rng.choice(STATES[shape]) if shape in STATES else None
        objects.append(Obj(shape, rng.choice(COLOURS), rng.choice(SIZES), r, c, state))
    return Scene(tuple(objects))


def encoder_input(rng: random.Random, recipe: VQRecipe, scene: Scene, size: int) -> Image.Image:
    """``scene`` as the encoder may meet it: plain, under camera jitter, or drawn at the clips'
    96 px (with jitter) for the backbone to resize, as mined key-frames are."""
    from worldboot.world.gen import max_jitter

    u = rng.random()
    if u < recipe.clip_frames:
        big = 96
        amp = max_jitter(big)
        return render(scene, big, (rng.randint(-amp, amp), rng.randint(-amp, amp)))
    if u < recipe.clip_frames + recipe.jitter:
        return render(scene, size, (rng.choice((-2, -1, 1, 2)), rng.choice((-2, -1, 0, 1, 2))))
    return render(scene, size)


def vq_batch(backbone: Any, recipe: VQRecipe, seed: int, step: int, n: int) -> VQBatch:
    """Training batch ``step`` of the tokenizer (deterministic in ``seed`` and ``step``): world
    or crowded scenes, each seen as the encoder may meet it, with its cell codes and its plain
    drawing as the decoder's target."""
    rng = random.Random(f"worldboot/base/vq/{seed}/{step}")
    size = backbone.image_size
    scenes = [
        crowded_scene(rng, rng.randint(5, GRID * GRID))
        if rng.random() < recipe.crowded
        else world.sample_scene(rng, rng.randint(1, world.MAX_OBJECTS))
        for _ in range(n)
    ]
    inputs = backbone.preprocess([encoder_input(rng, recipe, s, size) for s in scenes])
    targets = backbone.preprocess([render(s, size) for s in scenes])
    per_cell = backbone.vqgan.grid // GRID
    codes = torch.from_numpy(np.stack([patch_codes(s, per_cell) for s in scenes]))
    return VQBatch(inputs, codes, targets)


def untouched_tokens(before: Scene, after: Scene, tokens: int, margin: int = 0) -> np.ndarray:
    """``[tokens, tokens]`` bool: the token positions an edit from ``before`` to ``after``
    leaves alone, i.e. outside every cell whose content changed, widened by ``margin`` tokens."""
    per_cell = tokens // GRID
    keep = np.ones((tokens, tokens), dtype=bool)
    old = {(o.row, o.col): o for o in before.objects}
    new = {(o.row, o.col): o for o in after.objects}
    for r, c in set(old) | set(new):
        if old.get((r, c)) != new.get((r, c)):
            r0, c0 = r * per_cell, c * per_cell
            keep[max(0, r0 - margin) : r0 + per_cell + margin, max(0, c0 - margin) : c0 + per_cell + margin] = False
    return keep



def eval_scenes(seed: int, n: int) -> list[Scene]:
    """Held-out random world scenes (1-4 objects; a stream no training batch draws from)."""
    rng = random.Random(f"worldboot/base/eval/{seed}")
    return [world.sample_scene(rng, rng.randint(1, world.MAX_OBJECTS)) for _ in range(n)]



# --------------------------------------------------------------------------------------------
# Sequences
# --------------------------------------------------------------------------------------------


def _image_ids(backbone: Any, codes: torch.Tensor) -> list[int]:
    return [backbone.boi_id, *backbone.code_to_token[codes.long()].tolist(), backbone.eoi_id]


def caption_image_ids(backbone: Any, codes: torch.Tensor, caption: str, image_first: bool) -> list[int]:
    """``<s> [boi] image [eoi] caption </s>`` or ``<s> caption [boi] image [eoi] </s>``."""
    image = _image_ids(backbone, codes)
    text = list(backbone.tokenizer(" " + caption, add_special_tokens=False)["input_ids"])
    body = image + text if image_first else text + image
    return [backbone.bos_id, *body, backbone.eos_id]


def copy_image_ids(backbone: Any, codes: torch.Tensor) -> list[int]:
    """``<s> [boi] image [eoi] [boi] image [eoi] </s>``: one image shown twice."""
    image = _image_ids(backbone, codes)
    return [backbone.bos_id, *image, *image, backbone.eos_id]


def pad_batch(backbone: Any, seqs: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), backbone.pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def encode_scenes(backbone: Any, scenes: Sequence[Scene], batch_size: int = 64) -> torch.Tensor:
    out = []
    for i in range(0, len(scenes), batch_size):
        out.append(backbone.encode_images([render(s, backbone.image_size) for s in scenes[i : i + batch_size]]).codes)
    return torch.cat(out)
