"""The world bases that ship with worldboot, as Anole-7B ships for the paper.

The base is an input to the method, not a stage of it: the ``smoke`` and ``paper`` bases are
built once by ``worldboot base build --preset NAME --ship`` and their weights (a few MB each) ship
as package data in ``worldboot/base/weights/base-<name>-<hash>/``, where the hash is
:func:`~worldboot.base.recipe.recipe_hash` of the recipe that built them. So a cold demo skips
the build (minutes on 2 cores), and every machine runs on the same weights; a build on another
machine differs in the last bits (thread counts change float sums).

:func:`~worldboot.base.store.get_world_base` takes the shipped base whose hash is the recipe's; a
recipe the package ships no base for (a changed preset, ``--config``, overrides) is built into
the cache as before. A test fails when the recipe code no longer matches a shipped base's hash.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from worldboot.base.recipe import BaseRecipe, recipe_hash

#: The folder of the shipped bases inside the package.
WEIGHTS_DIR = "weights"


def weights_root() -> Path:
    """``worldboot/base/weights/`` in the installed package (an editable install: the checkout)."""
    return Path(__file__).resolve().parent / WEIGHTS_DIR


def shipped_path(recipe: BaseRecipe) -> Path:
    """Where the package ships the base of ``recipe`` (it may not ship one)."""
    return weights_root() / f"base-{recipe.name}-{recipe_hash(recipe)}"


def shipped_bases() -> list[Path]:
    """Every base the package ships."""
    root = weights_root()
    return sorted(p for p in root.glob("base-*") if p.is_dir()) if root.is_dir() else []


def ship(built: Path, recipe: BaseRecipe) -> Path:
    """Copy the base built at ``built`` into the package as the shipped base of ``recipe``,
    replacing any base of the same name shipped before (another hash: an older recipe)."""
    dest = shipped_path(recipe)
    for old in shipped_bases():
        if old.name.rsplit("-", 1)[0] == f"base-{recipe.name}" and old != dest:
            shutil.rmtree(old)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(built, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest
