"""Fixtures: a tiny Chameleon saved once per session, and real data named by environment variables."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WORLDBOOT_NO_PROGRESS", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

#: Real data a few tests read when it is there (the product never needs it): a folder with
#: AURORA-BENCH's ``test.json`` and its images, and the paper's text (for the judge's prompt).
AURORA_BENCH_ENV = "WORLDBOOT_TEST_AURORA_BENCH"
PAPER_ENV = "WORLDBOOT_TEST_PAPER"


#: The longest test files, longest first, with their summed seconds on 2 busy cores (`pytest
#: --durations=60`, 2026-12-07). `make test` hands whole files to its two processes in collection
#: order (`--dist loadfile --no-loadscope-reorder`; xdist's own order is by test count), so
#: starting with these leaves the short files for the end and the processes finish together,
#: where a long file that comes last keeps one process busy alone.
LONGEST_FIRST = (
    "e2e/test_demo.py",  # 300 s
    "train/test_deepspeed.py",  # 275 s
    "base/test_world_base.py",  # 185 s
    "train/test_rl.py",  # 155 s
    "test_ray_data.py",  # 115 s
    "test_ray_cluster.py",  # 67 s
    "test_gpu_check.py",  # 37 s
    "train/test_train.py",  # 35 s
    "commands/test_cli.py",  # 35 s
    "train/test_rl_directions.py",  # 31 s
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Moves the tests of :data:`LONGEST_FIRST`'s files to the front, in that order (stable)."""
    tests = Path(__file__).parent
    rank = {str(tests / name): i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(str(item.path), len(rank)))


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
    """Real AURORA-BENCH subsets from ``$WORLDBOOT_TEST_AURORA_BENCH``; skipped without them."""
    folder = Path(os.environ.get(AURORA_BENCH_ENV, "/nonexistent"))
    if not (folder / "test.json").is_file():
        pytest.skip(f"real AURORA-BENCH data: set {AURORA_BENCH_ENV} to a folder holding its test.json")
    return folder


@pytest.fixture(scope="session")
def paper_text() -> str:
    """The paper's text from the file ``$WORLDBOOT_TEST_PAPER``; skipped without it."""
    path = Path(os.environ.get(PAPER_ENV, "/nonexistent"))
    if not path.is_file():
        pytest.skip(f"the paper's text: set {PAPER_ENV} to the file")
    return path.read_text(encoding="utf-8", errors="replace")
