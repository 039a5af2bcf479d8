"""The suite's own scheduling hint (tests/conftest.py) names files that exist and comes first."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import LONGEST_FIRST, pytest_collection_modifyitems

TESTS = Path(__file__).parent


def test_every_longest_first_file_exists():
    assert len(set(LONGEST_FIRST)) == len(LONGEST_FIRST)
    for name in LONGEST_FIRST:
        assert (TESTS / name).is_file(), f"{name}: renamed or gone; update conftest.LONGEST_FIRST"


class _Item:
    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name = path, name


@pytest.mark.parametrize("seed", range(3))
def test_the_longest_files_go_first_and_the_rest_keep_their_order(seed):
    import random

    rest = [_Item(TESTS / "data" / f"test_{c}.py", f"t{i}") for i, c in enumerate("abcde")]
    longest = [_Item(TESTS / name, f"l{i}") for i, name in enumerate(LONGEST_FIRST[:3])]
    random.Random(seed).shuffle(rest)  # the rest's order, whatever it is, must survive
    items = rest + [longest[2], longest[0], longest[1]]
    pytest_collection_modifyitems(None, items)
    assert [i.name for i in items] == ["l0", "l1", "l2", *(i.name for i in rest)]
