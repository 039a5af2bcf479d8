"""Pre-training the world base's language model on captions and shown-twice images."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from worldboot import world
from worldboot.base.data import (
    caption_image_ids,
    copy_image_ids,
    describe,
    encode_scenes,
    eval_scenes,
    pad_batch,
)
from worldboot.base.recipe import (
    LMRecipe,
)
from worldboot.progress import progress_bar


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    import math

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        u = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(u, 1.0)))

    return f


def link_codes_to_words(backbone: Any, seed: int = 0) -> None:
    """Start every image code's input and output embedding from the words of what it shows.

    A code of the world's tokenizer names a patch of one drawing
    (:func:`~worldboot.world.patches.code_meaning`): its vectors become the normalised sum of
    the vectors of its drawing's words (size, state, colour, shape; each word's BPE pieces
    summed) and of a random vector for which patch of the cell it is; the bare table's code
    keeps its random start. The base stands in for a foundation model that has linked image
    tokens to words over countless captioned images; this gives it the link at the start
    instead of paying for it in pre-training steps (measured in docs/log.md). Only the
    starting point changes: every weight is still trained.
    """
    from worldboot.world.patches import code_meaning

    model = backbone.model
    per_cell = backbone.vqgan.grid // world.GRID
    gen = torch.Generator().manual_seed(seed)
    tables = [model.get_input_embeddings().weight, model.get_output_embeddings().weight]
    with torch.no_grad():
        parts = [torch.randn(per_cell * per_cell, t.shape[1], generator=gen) * float(t.std()) for t in tables]
        for code in range(1, len(backbone.code_to_token)):
            kind, part = code_meaning(code, per_cell)
            if kind is None:
                continue
            ids = [i for w in kind if w for i in backbone.tokenizer(" " + w, add_special_tokens=False)["input_ids"]]
            token = int(backbone.code_to_token[code])
            for table, part_vecs in zip(tables, parts, strict=True):
                vecs = [table[i] for i in ids] + [part_vecs[part]]
                table[token] = torch.stack(vecs).sum(0) / len(vecs) ** 0.5


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
    codes = encode_scenes(backbone, scenes)
    captions = [describe(s) for s in scenes]
    held = eval_scenes(seed + 1, recipe.eval_scenes)
    held_codes = encode_scenes(backbone, held)
    model = backbone.model
    trainable, opt, sched = _lm_optimiser(model, recipe)
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
            ids, mask, labels = pad_batch(backbone, seqs)
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
    return {
        "train_loss": float(np.mean(losses[-20:])) if losses else float("nan"),
        "eval_loss": _caption_loss(backbone, held, held_codes),
        "seconds": time.perf_counter() - t0,
    }


def _lm_optimiser(model: Any, recipe: LMRecipe) -> tuple[list[Any], Any, Any]:
    """Every language-model weight trainable (the VQ frozen), AdamW with weight decay on the
    matrices only, and the warm-up then cosine schedule: (trainable weights, optimiser, schedule)."""
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
    return trainable, opt, torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(recipe.warmup_steps, recipe.steps))


def _caption_loss(backbone: Any, scenes: list[Any], codes: Any) -> float:
    """The language model's loss on held-out scenes' captions and images (both directions)."""
    with torch.no_grad():
        seqs = [caption_image_ids(backbone, codes[j], describe(s), j % 2 == 0) for j, s in enumerate(scenes)]
        ids, mask, labels = pad_batch(backbone, seqs)
        return float(backbone.model(input_ids=ids, attention_mask=mask, labels=labels).loss)
