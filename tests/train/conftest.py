"""The training tests' data: 40 square triplets tokenised by the tiny Chameleon, once per module."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import square_triplets


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, tiny_dir) -> Path:
    from worldboot.data.tokenize import build_cache
    from worldboot.models import load_backbone

    root = tmp_path_factory.mktemp("train-data")
    triplets = square_triplets(root / "images", 40, seed=1)
    build_cache(triplets, load_backbone(tiny_dir), root / "cache", progress=False)
    return root / "cache"
