"""The four manipulations: what each changes, what it never produces, and determinism."""

from __future__ import annotations

import random
import shutil
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from worldboot.data.negatives import (
    COPY_OBSERVATION,
    INVERSE_OBSERVATION,
    NEGATIVE_KINDS,
    RANDOM_ACTION,
    RANDOM_OBSERVATION,
    make_negatives,
    normalise_action,
)
from worldboot.data.schema import Triplet
from worldboot.errors import DataError

ACTIONS = ["push the cube", "Push  the cube", "pull the cube", "lift the lid", "drop it"]


@st.composite
def datasets(draw):
    """Triplets over two subsets with few distinct actions and image contents, so that
    collisions (same text, same pixels under another path) are common."""
    n = draw(st.integers(min_value=1, max_value=14))
    triplets, contents = [], {}
    for i in range(n):
        subset = draw(st.sampled_from(["kubric", "something"]))
        source, target = f"/d/{i}/s.png", f"/d/{i}/t.png"
        contents[source] = draw(st.integers(0, 4))
        contents[target] = draw(st.integers(0, 4))
        triplets.append(Triplet(f"t{i}", subset, source, draw(st.sampled_from(ACTIONS)), target))
    return triplets, contents


def _check(triplets, contents, negatives, seed):
    h = contents.__getitem__
    by_id = {t.id: t for t in triplets}
    made = {(n.reference.id, n.kind): n for n in negatives}
    assert len(made) == len(negatives)
    for ref in triplets:
        pool = [t for t in triplets if t.subset == ref.subset]
        for kind in NEGATIVE_KINDS:
            neg = made.get((ref.id, kind))
            if kind == RANDOM_ACTION:
                possible = [c for c in pool if normalise_action(c.action) != normalise_action(ref.action)]
            elif kind == RANDOM_OBSERVATION:
                possible = [
                    c
                    for c in pool
                    if c.target not in (ref.target, ref.source)
                    and h(c.target) not in (h(ref.target), h(ref.source))
                ]
            else:
                possible = [ref] if h(ref.source) != h(ref.target) else []
            # Made exactly when a valid manipulation exists.
            assert (neg is not None) == bool(possible), (kind, ref)
            if neg is None:
                continue
            n = neg.negative
            assert neg.reference is by_id[ref.id] and n.id == f"{ref.id}/{kind}"
            assert n.meta["negative"] == kind and n.meta["reference_id"] == ref.id
            assert n.subset == ref.subset
            if kind == RANDOM_ACTION:
                assert (n.source, n.target) == (ref.source, ref.target)
                assert normalise_action(n.action) != normalise_action(ref.action)
                assert n.action in {c.action for c in pool}
            elif kind == RANDOM_OBSERVATION:
                assert (n.source, n.action) == (ref.source, ref.action)
                assert n.target in {c.target for c in possible}
            elif kind == COPY_OBSERVATION:
                assert (n.source, n.action, n.target) == (ref.source, ref.action, ref.source)
            else:
                assert (n.source, n.action, n.target) == (ref.target, ref.action, ref.source)


@settings(max_examples=150, deadline=None)
@given(data=datasets(), seed=st.integers(0, 2**32 - 1))
def test_negatives_are_valid_and_complete(data, seed):
    triplets, contents = data
    negatives = make_negatives(triplets, seed=seed, hasher=contents.__getitem__)
    _check(triplets, contents, negatives, seed)


@settings(max_examples=60, deadline=None)
@given(data=datasets(), seed=st.integers(0, 2**32 - 1), shuffle=st.randoms(use_true_random=False))
def test_negatives_are_deterministic_and_order_free(data, seed, shuffle):
    triplets, contents = data
    first = make_negatives(triplets, seed=seed, hasher=contents.__getitem__)
    again = make_negatives(triplets, seed=seed, hasher=contents.__getitem__)
    assert first == again
    shuffled = list(triplets)
    shuffle.shuffle(shuffled)
    by_ref = {(n.reference.id, n.kind): n.negative for n in first}
    one_kind = make_negatives(shuffled, kinds=[RANDOM_OBSERVATION], seed=seed, hasher=contents.__getitem__)
    for n in one_kind:  # neither the input order nor the other kinds change a draw
        assert by_ref[(n.reference.id, n.kind)] == n.negative


def test_seeds_change_the_draws_and_kinds_order_output():
    triplets = [Triplet(f"t{i}", "s", f"/{i}a.png", f"action {i}", f"/{i}b.png") for i in range(20)]
    contents = {p: p for t in triplets for p in (t.source, t.target)}
    draws = {
        make_negatives(triplets, kinds=[RANDOM_ACTION], seed=s, hasher=contents.__getitem__)[
            0
        ].negative.action
        for s in range(30)
    }
    assert len(draws) > 5  # random over the pool, not a fixed neighbour
    negs = make_negatives(
        triplets[:2], kinds=[INVERSE_OBSERVATION, COPY_OBSERVATION], hasher=contents.__getitem__
    )
    assert [(n.reference.id, n.kind) for n in negs] == [
        ("t0", INVERSE_OBSERVATION),
        ("t0", COPY_OBSERVATION),
        ("t1", INVERSE_OBSERVATION),
        ("t1", COPY_OBSERVATION),
    ]


def test_random_observation_uses_file_content(tmp_path: Path):
    """Another path with the same bytes as the true target is never drawn; hashing reads files."""
    rng = random.Random(0)
    triplets = []
    for i in range(6):
        src, tgt = tmp_path / f"{i}s.png", tmp_path / f"{i}t.png"
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(src)
        Image.new("RGB", (8, 8), (0, i * 40, rng.randrange(256))).save(tgt)
        triplets.append(Triplet(f"t{i}", "s", str(src), "act", str(tgt)))
    # t5's target is a byte copy of t0's target, so t0 and t5 may not draw each other's target.
    shutil.copy(triplets[0].target, triplets[5].target)
    for seed in range(40):
        for n in make_negatives(triplets, kinds=[RANDOM_OBSERVATION], seed=seed):
            ref_id = n.reference.id
            if ref_id in ("t0", "t5"):
                assert n.negative.target not in (triplets[0].target, triplets[5].target)


def test_skips_are_counted_and_unknown_kinds_refused():
    same = Triplet("a", "s", "/x.png", "push", "/x.png")
    alone = Triplet("b", "t", "/y.png", "pull", "/z.png")
    no_target = Triplet("c", "t", "/y.png", "pull", None)
    skipped = Counter()
    negs = make_negatives([same, alone, no_target], hasher=lambda p: p, skipped=skipped)
    assert {(n.reference.id, n.kind) for n in negs} == {("b", COPY_OBSERVATION), ("b", INVERSE_OBSERVATION)}
    assert skipped["all: no target"] == 4
    assert skipped["copy_observation: source and target are the same image"] == 1
    assert skipped["random_action: no other action in subset s"] == 1
    with pytest.raises(DataError, match="unknown negative kind swap"):
        make_negatives([alone], kinds=["swap"])
