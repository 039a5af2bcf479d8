"""What a built world base knows, measured: tokenizer round trip and locality, captions, copying."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from worldboot import world
from worldboot.base.data import (
    copy_image_ids,
    describe,
    describe_object,
    encode_scenes,
    encoder_input,
    pad_batch,
    untouched_tokens,
)
from worldboot.base.recipe import (
    VQRecipe,
)
from worldboot.world.patches import patch_codes
from worldboot.world.render import parse_scene, render
from worldboot.world.scene import GRID, Scene


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
    codes = encode_scenes(backbone, [s for p in pairs for s in p]).view(n, 2, g, g)
    kept, changed = [], []
    for i, (before, after) in enumerate(pairs):
        keep = untouched_tokens(before, after, g)
        same = (codes[i, 0] == codes[i, 1]).numpy()
        kept.append(same[keep].mean() if keep.any() else 1.0)
        changed.append(1.0 - same[~keep].mean() if (~keep).any() else 0.0)
    return {"codes_kept": float(np.mean(kept)), "codes_changed": float(np.mean(changed))}



def vq_parse_rate(backbone: Any, scenes: Sequence[Scene], batch_size: int = 64) -> dict[str, float]:
    """Round trip through the backbone's tokenizer on held-out scenes.

    Returns:
        ``parse_rate``: share of scenes that ``parse_scene(decode(encode(render(scene))))``
        recovers exactly; ``pixel_mae``: mean pixel error (0-255) of that round trip;
        ``code_accuracy``: share of token positions whose code is their patch's
        (:func:`~worldboot.world.patches.patch_codes`), and ``code_accuracy_shaken`` the same
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
        moved = backbone.encode_images([encoder_input(rng, shake, s, backbone.image_size) for s in chunk]).codes
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

    codes = encode_scenes(backbone, scenes)
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
    ids, mask, _ = pad_batch(backbone, [copy_image_ids(backbone, c) for c in codes])
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
