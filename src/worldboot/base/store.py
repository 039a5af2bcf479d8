"""Building a world base into its cache folder, once, under a file lock."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from worldboot.base.checks import lm_checks, locality_rate, vq_parse_rate
from worldboot.base.data import eval_scenes, text_corpus, vq_batch
from worldboot.base.pretrain import link_codes_to_words, pretrain_lm
from worldboot.base.recipe import (
    IMAGE_SIZE,
    INFO_FILE,
    PROMPTS,
    RECIPE_VERSION,
    BaseRecipe,
    load_recipe,
    recipe_hash,
)
from worldboot.base.shipped import shipped_path
from worldboot.base.vq_train import VQBatch, train_vq
from worldboot.config import to_dict
from worldboot.errors import ConfigError
from worldboot.runs import file_lock, write_atomic
from worldboot.world.patches import patch_code_count
from worldboot.world.scene import GRID

# --------------------------------------------------------------------------------------------
# Building and caching
# --------------------------------------------------------------------------------------------


def train_world_tokenizer(
    recipe: BaseRecipe, progress: bool = True, log: Callable[[str], None] | None = None
) -> tuple[Any, dict[str, Any]]:
    """The base's first stage: its tiny Chameleon with the VQ trained (the language model still
    at its initialisation), in the calling thread settings. Returns the backbone and the VQ's
    training metrics."""
    from worldboot.models.tiny import TinyChameleonSpec, build_tiny_chameleon

    grid = recipe.vq.token_grid  # checked before minutes of building, not after
    if grid % GRID or recipe.vq.codebook != patch_code_count(grid // GRID):
        raise ConfigError(
            f"the world base's tokenizer needs whole token patches per cell (a token grid that is a "
            f"multiple of {GRID}, got {grid}x{grid}: vq.channel_multiplier) and a code for every patch "
            f"and no other (vq.codebook={patch_code_count(max(1, grid // GRID))}, got {recipe.vq.codebook})"
        )
    spec = TinyChameleonSpec(
        text_vocab=recipe.lm.text_vocab,
        codebook=recipe.vq.codebook,
        hidden=recipe.lm.hidden,
        layers=recipe.lm.layers,
        heads=recipe.lm.heads,
        intermediate=recipe.lm.intermediate,
        image_size=IMAGE_SIZE,
        vq_base_channels=recipe.vq.base_channels,
        vq_channel_multiplier=list(recipe.vq.channel_multiplier),
        vq_embed_dim=recipe.vq.embed_dim,
        vq_attention=recipe.vq.attention,
        max_positions=512,
        seed=recipe.seed,
    )
    backbone = build_tiny_chameleon(spec, corpus=text_corpus(recipe.seed), templates=PROMPTS)

    def sample(step: int, n: int) -> VQBatch:
        return vq_batch(backbone, recipe.vq, recipe.seed, step, n)

    vq_settings = dataclasses.replace(recipe.vq.train, seed=recipe.seed)
    return backbone, train_vq(backbone.vqgan, sample, vq_settings, progress=progress, log=log or (lambda _m: None))


def build_world_base(
    recipe: BaseRecipe, out: str | os.PathLike[str], progress: bool = True, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Build the base model described by ``recipe`` into ``out`` (not atomic; see
    :func:`get_world_base`). Returns the measurements written to ``base_info.json``."""
    log = log or (lambda _msg: None)
    old_threads = torch.get_num_threads()
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    try:
        t0 = time.perf_counter()
        backbone, vq_metrics = train_world_tokenizer(recipe, progress, log)
        vq_metrics.update(vq_parse_rate(backbone, eval_scenes(recipe.seed, recipe.vq.eval_scenes)))
        vq_metrics.update(locality_rate(backbone, seed=recipe.seed))
        log(f"vq: {vq_metrics}")
        if recipe.lm.code_init == "words":
            link_codes_to_words(backbone, recipe.seed)
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
    """The model directory of the world's foundation model: the base the package ships for this
    recipe (:mod:`worldboot.base.shipped`), else the cached build, built on first use.

    Args:
        preset: ``"smoke"`` (well under a minute per stage), ``"paper"`` (a few minutes), or
            a :class:`BaseRecipe`.
        progress: Show progress bars while building.
        force: Rebuild into the cache even when the package ships the model or the cache holds it.
        log: Called with progress lines while building.

    Returns:
        A directory :func:`worldboot.models.load_backbone` opens.
    """
    recipe = load_recipe(preset) if isinstance(preset, str) else preset
    shipped = shipped_path(recipe)
    if is_built(shipped) and not force:
        return shipped  # the package's own weights (worldboot.base.shipped)
    path = base_path(recipe)
    if is_built(path) and not force:
        return path
    root = path.parent
    root.mkdir(parents=True, exist_ok=True)
    # One builder at a time; the others wait here, then find the model built.
    with file_lock(root / f".{path.name}.lock"):
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
