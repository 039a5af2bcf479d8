"""The tiny foundation model of the procedural world: knows its pictures and words, not its dynamics.

Anole-7B, the paper's starting point, has seen countless images and captions but was never
trained to predict what an action does to a scene. worldboot's embedded demo needs a base of
the same kind for its own world (:mod:`worldboot.world.scene`), small enough to build on a
laptop in minutes. :func:`get_world_base` builds it on first use and caches it.

**Recipe** (:class:`BaseRecipe`; presets ``smoke`` and ``paper``, mirrored in
``configs/demo/base_*.yaml``):

1. *Tokenizer of words.* :func:`worldboot.models.tiny.build_tokenizer` (byte-level BPE) is
   trained on :func:`text_corpus`: scene captions (:func:`describe`), the action texts of
   every paraphrase template of every action kind, and the prompt templates. The action
   *words* are known; what actions do is not.
2. *Tokenizer of images.* A VQ model of Chameleon's architecture (transformers'
   ``ChameleonVQVAE`` + our ``ChameleonVQDecoder``; 64-px images, three halvings, 8x8 = 64
   tokens, 2x2 for each cell of the world's grid) trained by
   :func:`worldboot.models.vq_train.train_vq` with *given* codes: every token's code is the
   part of the drawing the renderer put there (:func:`~worldboot.world.render.patch_codes`:
   the bare table, or a quarter of one of 84 shape x state x colour x size drawings). The encoder learns to name each cell's
   drawing, under camera jitter and at the clips' resolution too; the decoder learns to draw
   each code. So the round trip is exact when the encoder is, and a cell an action does not
   touch keeps its code: the properties a dynamics model (compare two token grids) and a world
   model (copy what did not change) build on.
3. *Language model.* A tiny Chameleon (the VQ frozen) is fully trained on interleaved captions
   and single images, ``<s> [boi] image [eoi] caption </s>`` and ``<s> caption [boi] image
   [eoi] </s>``, and (``copy_fraction``) on one image shown twice, ``<s> [boi] image [eoi]
   [boi] image [eoi] </s>``, with the next-token loss on every token. No sequence holds two
   different images or an action text, so no dynamics are learnt; the repeated image teaches
   that token positions of one image correspond to those of the next. The base's world layout
   (:data:`PROMPTS`) puts the action before the source image, so that a world model's source
   and target are adjacent in the same way. Data order and initialisation are seeded: the
   same recipe gives the same model.

**Quality** is measured after each build and saved in ``base_info.json``: the tokenizer's code
accuracy (plain and shaken scenes), its round trip (``parse_scene(decode(encode(render(s))))
== s`` on held-out scenes), how many codes of untouched cells an action keeps
(:func:`locality_rate`), the language model's held-out loss, greedy captioning and
caption-to-image generation. Measured figures and the recipes tried before are in
``docs/results.md`` and ``docs/log.md``.

**Cache.** The model lives in ``$WORLDBOOT_CACHE/base-<preset>-<hash>/`` (default
``~/.cache/worldboot``), where the hash covers the recipe, :data:`RECIPE_VERSION` and the
world's constants (palette, shapes, grid, cell kinds, templates). It is built in a temporary
folder and renamed into place under a file lock, so concurrent builders wait for one another
and a killed build leaves nothing half-written behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock
from PIL import Image

from worldboot import world
from worldboot.config import load_preset, to_dict, write_atomic
from worldboot.errors import ConfigError
from worldboot.models.backbone import PromptTemplates
from worldboot.models.vq_train import VQBatch, VQTrainSettings, train_vq
from worldboot.progress import progress_bar
from worldboot.world.render import CELL_KINDS, parse_scene, patch_code_count, patch_codes, render
from worldboot.world.scene import COLOURS, GRID, SHAPES, SIZES, STATES, Obj, Scene

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
            :func:`~worldboot.world.render.patch_code_count` (337 with 2x2 tokens a cell: the
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


def _smoke() -> BaseRecipe:
    return BaseRecipe(
        name="smoke",
        vq=VQRecipe(train=VQTrainSettings(steps=1000, batch_size=4, lr=2e-3)),
        lm=LMRecipe(
            hidden=128, layers=2, heads=4, intermediate=256, scenes=768, steps=400, batch_size=16, copy_fraction=0.5
        ),
    )


def _paper() -> BaseRecipe:
    return BaseRecipe(
        name="paper",
        vq=VQRecipe(train=VQTrainSettings(steps=2000, batch_size=4, lr=2e-3)),
        lm=LMRecipe(
            hidden=192,
            layers=3,
            heads=6,
            intermediate=512,
            scenes=3072,
            steps=800,
            batch_size=16,
            lr=2e-3,
            copy_fraction=0.5,
        ),
    )


#: Named recipes; ``configs/demo/base_<name>.yaml`` hold the same values (a test checks).
PRESETS: dict[str, Callable[[], BaseRecipe]] = {"smoke": _smoke, "paper": _paper}


def load_recipe(
    preset: str = "smoke", config: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()
) -> BaseRecipe:
    """A preset, optionally changed by a YAML file and dotted overrides (``lm.steps=100``).

    Raises:
        ConfigError: For an unknown preset or a bad key.
    """
    return load_preset(PRESETS, preset, config, overrides, kind="base")


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


def _encoder_input(rng: random.Random, recipe: VQRecipe, scene: Scene, size: int) -> Image.Image:
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
    inputs = backbone.preprocess([_encoder_input(rng, recipe, s, size) for s in scenes])
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


def locality_rate(backbone: Any, n: int = 200, seed: int = 0) -> dict[str, float]:
    """How local the tokenizer is, on ``n`` held-out world actions: ``codes_kept``, the share
    of token positions an action leaves alone whose code stays the same (1 for a perfectly
    local tokenizer), and ``codes_changed``, the share of positions it touches whose code
    changes."""
    from worldboot.world.gen import sample_pair

    rng = random.Random(f"worldboot/base/locality/{seed}")
    pairs = []
    for i in range(n):
        scene, action = sample_pair(rng, world.FAMILIES[i % len(world.FAMILIES)])
        pairs.append((scene, world.apply(scene, action)))
    g = backbone.vqgan.grid
    codes = _encode_scenes(backbone, [s for p in pairs for s in p]).view(n, 2, g, g)
    kept, changed = [], []
    for i, (before, after) in enumerate(pairs):
        keep = untouched_tokens(before, after, g)
        same = (codes[i, 0] == codes[i, 1]).numpy()
        kept.append(same[keep].mean() if keep.any() else 1.0)
        changed.append(1.0 - same[~keep].mean() if (~keep).any() else 0.0)
    return {"codes_kept": float(np.mean(kept)), "codes_changed": float(np.mean(changed))}


def eval_scenes(seed: int, n: int) -> list[Scene]:
    """Held-out random world scenes (1-4 objects; a stream no training batch draws from)."""
    rng = random.Random(f"worldboot/base/eval/{seed}")
    return [world.sample_scene(rng, rng.randint(1, world.MAX_OBJECTS)) for _ in range(n)]


def vq_parse_rate(backbone: Any, scenes: Sequence[Scene], batch_size: int = 64) -> dict[str, float]:
    """Round trip through the backbone's tokenizer on held-out scenes.

    Returns:
        ``parse_rate``: share of scenes that ``parse_scene(decode(encode(render(scene))))``
        recovers exactly; ``pixel_mae``: mean pixel error (0-255) of that round trip;
        ``code_accuracy``: share of token positions whose code is their patch's
        (:func:`~worldboot.world.render.patch_codes`), and ``code_accuracy_shaken`` the same
        for scenes under camera jitter or drawn at 96 px and resized.
    """
    ok, err, hits, shaken, total = 0, 0.0, 0, 0, 0
    rng = random.Random("worldboot/base/eval-shake")
    shake = VQRecipe(jitter=0.5, clip_frames=0.5)
    for i in range(0, len(scenes), batch_size):
        chunk = scenes[i : i + batch_size]
        images = [render(s, backbone.image_size) for s in chunk]
        codes = backbone.encode_images(images).codes
        per_cell = backbone.vqgan.grid // GRID
        truth = torch.from_numpy(np.stack([patch_codes(s, per_cell).flatten() for s in chunk]))
        hits += int((codes == truth).sum())
        moved = backbone.encode_images([_encoder_input(rng, shake, s, backbone.image_size) for s in chunk]).codes
        shaken += int((moved == truth).sum())
        total += truth.numel()
        for s, a, b in zip(chunk, images, backbone.decode_codes(codes), strict=True):
            ok += parse_scene(b) == s
            err += float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())
    n = max(len(scenes), 1)
    return {
        "parse_rate": ok / n,
        "pixel_mae": err / n,
        "code_accuracy": hits / max(total, 1),
        "code_accuracy_shaken": shaken / max(total, 1),
    }


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


def _batch(backbone: Any, seqs: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), backbone.pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def _encode_scenes(backbone: Any, scenes: Sequence[Scene], batch_size: int = 64) -> torch.Tensor:
    out = []
    for i in range(0, len(scenes), batch_size):
        out.append(backbone.encode_images([render(s, backbone.image_size) for s in scenes[i : i + batch_size]]).codes)
    return torch.cat(out)


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    import math

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        u = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(u, 1.0)))

    return f


def pretrain_lm(
    backbone: Any,
    recipe: LMRecipe,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Train every language-model weight (not the VQ) on captions and images of world scenes.

    Returns:
        ``train_loss`` (mean of the last 20 steps), ``eval_loss``, ``seconds``.
    """
    t0 = time.perf_counter()
    rng = random.Random(f"worldboot/base/lm/{seed}")
    scenes = [world.sample_scene(rng, rng.randint(1, world.MAX_OBJECTS)) for _ in range(recipe.scenes)]
    codes = _encode_scenes(backbone, scenes)
    captions = [describe(s) for s in scenes]
    held = eval_scenes(seed + 1, recipe.eval_scenes)
    held_codes = _encode_scenes(backbone, held)
    model = backbone.model
    trainable = []
    for name, p in model.named_parameters():
        train = ".vqmodel." not in f".{name}"
        p.requires_grad_(train)
        if train:
            trainable.append(p)
    decay = [p for p in trainable if p.dim() >= 2]
    no_decay = [p for p in trainable if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.lr,
        betas=(0.9, 0.98),
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(recipe.warmup_steps, recipe.steps))
    gen = torch.Generator().manual_seed(seed)

    def order() -> Iterator[int]:
        while True:
            yield from torch.randperm(len(scenes), generator=gen).tolist()

    it = order()
    model.train()
    backbone.vqgan.eval()
    losses: list[float] = []
    bar = progress_bar("[bold]language model", progress, info=True)
    with bar:
        task = bar.add_task("lm", total=recipe.steps, info="")
        for step in range(recipe.steps):
            picks = [next(it) for _ in range(recipe.batch_size)]
            # Alternate the two layouts within every batch: both directions every step.
            seqs = [
                copy_image_ids(backbone, codes[j])
                if float(torch.rand((), generator=gen)) < recipe.copy_fraction
                else caption_image_ids(backbone, codes[j], captions[j], k % 2 == 0)
                for k, j in enumerate(picks)
            ]
            ids, mask, labels = _batch(backbone, seqs)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.update(task, advance=1, info=f"loss {losses[-1]:.3f}")
            if log is not None and ((step + 1) % max(1, recipe.steps // 10) == 0 or step + 1 == recipe.steps):
                log(f"lm step {step + 1}: loss {np.mean(losses[-20:]):.4f}")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        seqs = [
            caption_image_ids(backbone, held_codes[j], describe(s), j % 2 == 0) for j, s in enumerate(held)
        ]
        ids, mask, labels = _batch(backbone, seqs)
        eval_loss = float(model(input_ids=ids, attention_mask=mask, labels=labels).loss)
    return {
        "train_loss": float(np.mean(losses[-20:])) if losses else float("nan"),
        "eval_loss": eval_loss,
        "seconds": time.perf_counter() - t0,
    }


@torch.no_grad()
def lm_checks(backbone: Any, scenes: Sequence[Scene]) -> dict[str, float]:
    """What the pre-trained model knows of held-out scenes.

    Returns:
        ``caption_exact``: greedy captions equal to :func:`describe`;
        ``caption_objects``: share of described objects named in the greedy caption;
        ``image_parse``: images generated greedily from a caption whose parse equals the scene;
        ``image_parseable``: generated images that parse to a valid world scene;
        ``copy_accuracy``: tokens of the second copy of a shown-twice image that the model
        predicts right (argmax, teacher-forced; about 0.6 from background tokens alone).
    """
    from worldboot.models.backbone import Example, SamplingConfig

    codes = _encode_scenes(backbone, scenes)
    prompts = [backbone.text_example(codes[i], "") for i in range(len(scenes))]
    texts = backbone.generate_text(prompts, max_new_tokens=160)
    exact = sum(t.strip() == describe(s) for t, s in zip(texts, scenes, strict=True))
    named = sum(describe_object(o) in t for t, s in zip(texts, scenes, strict=True) for o in s.objects)
    n_obj = sum(len(s.objects) for s in scenes)
    img_prompts = []
    for s in scenes:
        ids = [backbone.bos_id, *backbone.tokenizer(" " + describe(s), add_special_tokens=False)["input_ids"]]
        ids.append(backbone.boi_id)
        img_prompts.append(Example(ids, [-100] * len(ids), len(ids)))
    gen = backbone.generate_images(img_prompts, 1, SamplingConfig(temperature=0.0))
    images = backbone.decode_codes(gen[:, 0])
    parsed = [parse_scene(im) for im in images]
    n = max(len(scenes), 1)
    ids, mask, _ = _batch(backbone, [copy_image_ids(backbone, c) for c in codes])
    # <s> [boi] image [eoi] [boi] image: the second image's first token is at L + 4.
    start = backbone.image_seq_len + 4
    pred = backbone.model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
    copied = pred[:, start - 1 : start - 1 + backbone.image_seq_len] == ids[:, start : start + backbone.image_seq_len]
    return {
        "caption_exact": exact / n,
        "caption_objects": named / max(n_obj, 1),
        "image_parse": sum(p == s for p, s in zip(parsed, scenes, strict=True)) / n,
        "image_parseable": sum(not p.problems() for p in parsed) / n,
        "copy_accuracy": float(copied.float().mean()),
    }


# --------------------------------------------------------------------------------------------
# Building and caching
# --------------------------------------------------------------------------------------------


def build_world_base(
    recipe: BaseRecipe, out: str | os.PathLike[str], progress: bool = True, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Build the base model described by ``recipe`` into ``out`` (not atomic; see
    :func:`get_world_base`). Returns the measurements written to ``base_info.json``."""
    from worldboot.models.tiny import TinyChameleonSpec, build_tiny_chameleon

    log = log or (lambda _msg: None)
    old_threads = torch.get_num_threads()
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    try:
        t0 = time.perf_counter()
        spec = TinyChameleonSpec(
            text_vocab=recipe.lm.text_vocab,
            codebook=recipe.vq.codebook,
            hidden=recipe.lm.hidden,
            layers=recipe.lm.layers,
            heads=recipe.lm.heads,
            intermediate=recipe.lm.intermediate,
            image_size=64,
            vq_base_channels=recipe.vq.base_channels,
            vq_channel_multiplier=list(recipe.vq.channel_multiplier),
            vq_embed_dim=recipe.vq.embed_dim,
            vq_attention=recipe.vq.attention,
            max_positions=512,
            seed=recipe.seed,
        )
        backbone = build_tiny_chameleon(spec, corpus=text_corpus(recipe.seed), templates=PROMPTS)
        grid = backbone.vqgan.grid
        if grid % GRID or recipe.vq.codebook != patch_code_count(grid // GRID):
            raise ConfigError(
                f"the world base's tokenizer needs whole token patches per cell (a token grid that is a "
                f"multiple of {GRID}, got {grid}x{grid}: vq.channel_multiplier) and a code for every patch "
                f"and no other (vq.codebook={patch_code_count(max(1, grid // GRID))}, got {recipe.vq.codebook})"
            )

        def sample(step: int, n: int) -> VQBatch:
            return vq_batch(backbone, recipe.vq, recipe.seed, step, n)

        vq_settings = dataclasses.replace(recipe.vq.train, seed=recipe.seed)
        vq_metrics = train_vq(backbone.vqgan, sample, vq_settings, progress=progress, log=log)
        vq_metrics.update(vq_parse_rate(backbone, eval_scenes(recipe.seed, recipe.vq.eval_scenes)))
        vq_metrics.update(locality_rate(backbone, seed=recipe.seed))
        log(f"vq: {vq_metrics}")
        lm_metrics = pretrain_lm(backbone, recipe.lm, recipe.seed, progress=progress, log=log)
        lm_metrics.update(lm_checks(backbone, eval_scenes(recipe.seed + 2, recipe.lm.eval_scenes)))
        log(f"lm: {lm_metrics}")
        backbone.save(out)
        info = {
            "recipe": to_dict(recipe),
            "hash": recipe_hash(recipe),
            "version": RECIPE_VERSION,
            "vq": vq_metrics,
            "lm": lm_metrics,
            "parameters": sum(p.numel() for n, p in backbone.model.named_parameters() if ".vqmodel." not in f".{n}"),
            "seconds": time.perf_counter() - t0,
        }
        write_atomic(Path(out) / INFO_FILE, json.dumps(info, indent=2) + "\n")
        return info
    finally:
        torch.set_num_threads(old_threads)


def cache_root() -> Path:
    """``$WORLDBOOT_CACHE`` or ``~/.cache/worldboot``."""
    env = os.environ.get("WORLDBOOT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "worldboot"


def base_path(recipe: BaseRecipe) -> Path:
    """Where the base model of ``recipe`` lives (built or not)."""
    return cache_root() / f"base-{recipe.name}-{recipe_hash(recipe)}"


def is_built(path: Path) -> bool:
    return (path / INFO_FILE).is_file() and (path / "config.json").is_file()


def get_world_base(
    preset: str | BaseRecipe = "smoke",
    progress: bool = True,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> Path:
    """The model directory of the world's foundation model, built on first use.

    Args:
        preset: ``"smoke"`` (well under a minute per stage), ``"paper"`` (a few minutes), or
            a :class:`BaseRecipe`.
        progress: Show progress bars while building.
        force: Rebuild even when a cached model exists.
        log: Called with progress lines while building.

    Returns:
        A directory :func:`worldboot.models.load_backbone` opens.
    """
    recipe = load_recipe(preset) if isinstance(preset, str) else preset
    path = base_path(recipe)
    if is_built(path) and not force:
        return path
    root = path.parent
    root.mkdir(parents=True, exist_ok=True)
    # One builder at a time; the others wait here, then find the model built.
    with FileLock(root / f".{path.name}.lock"):
        if is_built(path) and not force:
            return path
        tmp = root / f".{path.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        for stale in root.glob(f".{path.name}.tmp-*"):  # a killed builder's leftovers
            shutil.rmtree(stale, ignore_errors=True)
        try:
            build_world_base(recipe, tmp, progress=progress, log=log)
            if path.exists():  # forced rebuild: swap the old model out first
                old = root / f".{path.name}.old-{os.getpid()}"
                os.rename(path, old)
                os.rename(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The measurements saved with a built base model."""
    return json.loads((Path(path) / INFO_FILE).read_text())
