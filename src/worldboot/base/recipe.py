"""The world base's recipe: dataclasses, the named presets, and the hash that names a build."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from worldboot import world
from worldboot.base.vq_train import VQTrainSettings
from worldboot.config import load_preset, to_dict
from worldboot.models.backbone import PromptTemplates
from worldboot.world.patches import CELL_KINDS
from worldboot.world.scene import GRID, SHAPES, SIZES, STATES

#: Bump when the build code changes what a recipe produces: every cached base is rebuilt.
RECIPE_VERSION = 4

#: The base's prompt layouts. The action comes before the source image, so that the world
#: layout shows the source and the target image side by side, as the shown-twice pre-training
#: images are: ``<s> Action: a. [boi] o_s [eoi] [boi] o_t``. Measured on the paper base: its
#: next-token copy of a repeated image falls from 85 % of tokens when the two copies are
#: adjacent to 38 % with an action text between them, and C-FT trained on the default layout
#: (action between the images, 400 steps) kept almost nothing of the scene (minimal editing
#: 0.5 of 10, judge score 0.05), against 2.0 and 0.22 with the action first.
PROMPTS = PromptTemplates(world_before=" Action: {action}.", world="")
INFO_FILE = "base_info.json"


# --------------------------------------------------------------------------------------------
# Recipe
# --------------------------------------------------------------------------------------------


@dataclass
class VQRecipe:
    """The image tokenizer and its training.

    Attributes:
        codebook: Number of codes (image tokens): exactly
            :func:`~worldboot.world.patches.patch_code_count` (337 with 2x2 tokens a cell: the
            bare table, and each of 84 drawings' four quarters). A code no patch has would
            never be trained, yet a world model sampling at temperature 1 would draw it now and
            then, and decode it to noise.
        embed_dim: Code vector size (also the latent channels).
        base_channels: Encoder/decoder width; a multiple of 32 (GroupNorm).
        channel_multiplier: One entry per resolution; the token grid must be a multiple of the
            world's grid (64-px images, 4 entries = 3 halvings = 8x8 tokens, 2x2 a cell: a
            code then names a quarter of a drawing, which the decoder learns far faster than
            a whole cell from one code: parse rate 50 % vs 2 % after 450 steps).
        attention: Keep the middle attention block of Chameleon's VQ (``attn_type: vanilla``).
        train: Optimiser settings.
        crowded: Share of training scenes with 5-16 objects (every cell kind in every cell,
            and colour+shape repeats, as a generated image may show).
        jitter: Share of encoder inputs shifted by a camera jitter of 1-2 pixels (their codes
            are those of the unshifted scene, so the tokenizer ignores camera shake).
        clip_frames: Share of encoder inputs drawn at the clips' 96 px and resized, as mined
            key-frames are.
        eval_scenes: Held-out scenes on which the round trip is measured.
    """

    codebook: int = 337
    embed_dim: int = 32
    base_channels: int = 32
    channel_multiplier: list[int] = field(default_factory=lambda: [1, 1, 2, 2])
    attention: bool = True
    train: VQTrainSettings = field(default_factory=VQTrainSettings)
    crowded: float = 0.6
    jitter: float = 0.2
    clip_frames: float = 0.2
    eval_scenes: int = 200


@dataclass
class LMRecipe:
    """The language model and its pre-training on captions and images.

    Attributes:
        text_vocab: Text vocabulary size (BPE stops earlier when the corpus has no more merges).
        hidden: Transformer width.
        layers: Decoder layers.
        heads: Attention heads.
        intermediate: MLP width.
        scenes: Distinct training scenes (each encoded once by the frozen VQ).
        steps: Optimiser steps.
        batch_size: Sequences per step.
        lr: Peak AdamW learning rate (warm-up, then cosine to 10%).
        warmup_steps: Linear warm-up.
        weight_decay: AdamW weight decay.
        copy_fraction: Share of sequences that show one image twice, ``<s> [boi] image [eoi]
            [boi] image [eoi] </s>``, as web documents repeat an image. They teach that the
            token at a position of one image corresponds to the token at that position of the
            next, which both a dynamics model (compare two images) and a world model (keep what
            an action leaves alone) build on; they show no change, so no dynamics.
        code_init: How the image codes' embeddings start: ``random``, as every other weight,
            or ``words``, from the words of what each code shows
            (:func:`~worldboot.base.pretrain.link_codes_to_words`).
        eval_scenes: Held-out scenes for the loss, captioning and generation checks.
    """

    text_vocab: int = 1024
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    intermediate: int = 256
    scenes: int = 1024
    steps: int = 300
    batch_size: int = 16
    lr: float = 3e-3
    warmup_steps: int = 20
    weight_decay: float = 0.01
    copy_fraction: float = 0.0
    code_init: Literal["random", "words"] = "random"
    eval_scenes: int = 32


@dataclass
class BaseRecipe:
    """How the foundation model of the procedural world is built.

    Attributes:
        name: Preset name (part of the cache folder's name).
        seed: Seeds every random choice of the build.
        threads: torch threads during the build (0 = leave torch's default); not hashed.
        vq: The image tokenizer.
        lm: The language model.
    """

    name: str = "smoke"
    seed: int = 0
    threads: int = 0
    vq: VQRecipe = field(default_factory=VQRecipe)
    lm: LMRecipe = field(default_factory=LMRecipe)


#: Named recipes, each ``configs/demo/base_<name>.yaml`` inside the package (the one copy).
PRESETS = ("smoke", "paper")


def load_recipe(
    preset: str = "smoke", config: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()
) -> BaseRecipe:
    """A preset, optionally changed by a YAML file and dotted overrides (``lm.steps=100``).

    Raises:
        ConfigError: For an unknown preset or a bad key.
    """
    return load_preset(BaseRecipe, "demo", preset, PRESETS, config, overrides, kind="base", prefix="base_")


def world_fingerprint() -> dict[str, Any]:
    """The world's constants a base model depends on (what it draws and what words it knows)."""
    from worldboot.models.tiny import SPECIAL_TOKENS
    from worldboot.world.text import TEMPLATES

    return {
        "grid": GRID,
        "table": list(world.TABLE),
        "palette": {k: list(v) for k, v in world.PALETTE.items()},
        "shapes": list(SHAPES),
        "sizes": list(SIZES),
        "states": {k: list(v) for k, v in STATES.items()},
        "cell_kinds": [list(k) if k else None for k in CELL_KINDS],
        "templates": {f"{f}/{k}": list(t) for (f, k), t in TEMPLATES.items()},
        "prompts": dataclasses.asdict(PROMPTS),
        "specials": list(SPECIAL_TOKENS),
    }


def recipe_hash(recipe: BaseRecipe) -> str:
    """Hash of the recipe (without ``threads``, which does not change what is learnt),
    :data:`RECIPE_VERSION` and :func:`world_fingerprint` (12 hex digits)."""
    fields = {k: v for k, v in to_dict(recipe).items() if k != "threads"}
    blob = json.dumps({"recipe": fields, "version": RECIPE_VERSION, "world": world_fingerprint()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
