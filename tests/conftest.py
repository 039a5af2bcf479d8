"""Shared fixtures: a tiny Chameleon saved once per session, paths to shared real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WORLDBOOT_NO_PROGRESS", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

#: Real AURORA-BENCH subsets shipped beside the repo (tests may read them; the product does not).
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
AURORA_BENCH = SHARED / "data" / "aurora-bench"


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models run faster on one thread than on two contended ones (7x measured on 2 cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Chameleon saved as a worldboot model directory."""
    from worldboot.models.tiny import save_tiny_chameleon

    return save_tiny_chameleon(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def tiny(tiny_dir: Path):
    """A fresh tiny Chameleon backbone loaded from :func:`tiny_dir`."""
    from worldboot.models.chameleon import load_chameleon

    return load_chameleon(tiny_dir)


@pytest.fixture(scope="module")
def world(tiny_dir: Path):
    """The tiny backbone as a world model, loaded once per test module (tests only read it)."""
    from worldboot.models import load_backbone

    return load_backbone(tiny_dir)


@pytest.fixture(scope="session")
def aurora_bench() -> Path:
    """The real AURORA-BENCH subsets; skipped when ../shared is not beside the checkout."""
    if not (AURORA_BENCH / "test.json").is_file():
        pytest.skip("../shared/data/aurora-bench not present")
    return AURORA_BENCH
