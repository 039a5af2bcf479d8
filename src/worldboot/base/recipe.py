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
from worldboot.bounds import bounded, check_ranges, seed_field
from worldboot.config import load_preset, to_dict
from worldboot.errors import ConfigError
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
#: Side of the base's images in pixels.
IMAGE_SIZE = 64


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

    codebook: int = bounded(337, ge=1)
    embed_dim: int = bounded(32, ge=1)
    base_channels: int = bounded(32, ge=32)
    channel_multiplier: list[int] = field(default_factory=lambda: [1, 1, 2, 2])
    attention: bool = True
    train: VQTrainSettings = field(default_factory=VQTrainSettings)
    crowded: float = bounded(0.6, ge=0, le=1)
    jitter: float = bounded(0.2, ge=0, le=1)
    clip_frames: float = bounded(0.2, ge=0, le=1)
    eval_scenes: int = bounded(200, ge=1)

    def __post_init__(self) -> None:
        check_ranges(self, "vq.")  # before the checks below, which assume the ranges
        if self.base_channels % 32:
            raise ConfigError(f"vq.base_channels must be a multiple of 32 (the VQ's GroupNorm has 32 groups), "
                              f"got {self.base_channels}")
        mult, most = self.channel_multiplier, max_halvings() + 1
        if not 1 <= len(mult) <= most or min(mult) < 1:
            raise ConfigError(f"vq.channel_multiplier must be 1 to {most} positive integers (each after the first "
                              f"halves the {IMAGE_SIZE}-px image, to a token grid that is a multiple of the world's "
                              f"{GRID}x{GRID} cells), got {mult}")
        if self.jitter + self.clip_frames > 1:
            raise ConfigError(f"vq.jitter + vq.clip_frames must be at most 1 (shares of the encoder's inputs), got "
                              f"{self.jitter:g} + {self.clip_frames:g}")

    @property
    def token_grid(self) -> int:
        """Side of the token grid of an image (8 with the 4 entries of the default multiplier)."""
        return IMAGE_SIZE // 2 ** (len(self.channel_multiplier) - 1)


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

    text_vocab: int = bounded(1024, ge=1)
    hidden: int = bounded(128, ge=1)
    layers: int = bounded(2, ge=1)
    heads: int = bounded(4, ge=1)
    intermediate: int = bounded(256, ge=1)
    scenes: int = bounded(1024, ge=1)
    steps: int = bounded(300, ge=0)
    batch_size: int = bounded(16, ge=1)
    lr: float = bounded(3e-3, gt=0)
    warmup_steps: int = bounded(20, ge=0)
    weight_decay: float = bounded(0.01, ge=0)
    copy_fraction: float = bounded(0.0, ge=0, le=1)
    code_init: Literal["random", "words"] = "random"
    eval_scenes: int = bounded(32, ge=1)

    def __post_init__(self) -> None:
        check_ranges(self, "lm.")  # before the check below, which divides by heads
        if self.hidden % (2 * self.heads):
            raise ConfigError(f"lm.hidden must be a multiple of 2 x lm.heads = {2 * self.heads} (an even width per "
                              f"head, for rotary positions), got {self.hidden} with {self.heads} heads")


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
    seed: int = seed_field(0)
    threads: int = bounded(0, ge=0)
    vq: VQRecipe = field(default_factory=VQRecipe)
    lm: LMRecipe = field(default_factory=LMRecipe)


def max_halvings() -> int:
    """Most halvings of the :data:`IMAGE_SIZE` image that leave a token grid that is a positive
    multiple of the world's :data:`~worldboot.world.scene.GRID` (4 for 64 px and 4 cells)."""
    n = 0
    while (IMAGE_SIZE >> (n + 1)) % GRID == 0 and IMAGE_SIZE >> (n + 1) >= GRID:
        n += 1
    return n


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
