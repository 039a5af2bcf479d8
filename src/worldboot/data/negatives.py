"""The paper's four manipulations of a trajectory triplet (o_s, a, o_t), used to probe preferences.

* ``random_action``: a := the action of another triplet of the same subset (a different text);
* ``random_observation``: o_t := the target of another triplet of the same subset (a file that
  differs from both o_t and o_s, by path and by content);
* ``copy_observation``: o_t := o_s;
* ``inverse_observation``: (o_s, o_t) := (o_t, o_s).

Every draw is seeded by ``(seed, kind, triplet id)``, so a negative does not depend on the
order of the input, on which other kinds were asked for, or on the process. A manipulation that
cannot differ from its reference (no other action in the subset; source and target with the
same content) is not made, and the reason is counted.
"""

from __future__ import annotations

import os
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from worldboot.data.schema import Triplet, content_hash
from worldboot.errors import DataError

RANDOM_ACTION = "random_action"
RANDOM_OBSERVATION = "random_observation"
COPY_OBSERVATION = "copy_observation"
INVERSE_OBSERVATION = "inverse_observation"
#: The four kinds, in the paper's order.
NEGATIVE_KINDS = (RANDOM_ACTION, RANDOM_OBSERVATION, COPY_OBSERVATION, INVERSE_OBSERVATION)

#: Random draws tried before falling back to scanning every candidate (keeps the common case
#: O(1) per triplet while staying exact when almost every candidate is excluded).
_TRIES = 32


@dataclass(frozen=True)
class Negative:
    """A manipulated triplet beside its reference.

    Attributes:
        kind: One of :data:`NEGATIVE_KINDS`.
        reference: The original triplet.
        negative: The manipulated triplet (id ``REF_ID/KIND``, ``meta["negative"]`` = kind,
            ``meta["reference_id"]`` = the reference's id).
    """

    kind: str
    reference: Triplet
    negative: Triplet


def normalise_action(text: str) -> str:
    """The form in which two actions count as the same text (case and spacing ignored)."""
    return " ".join(text.split()).casefold()


class HashCache:
    """Content hashes of image files, computed once per path.

    Args:
        fn: The hash function of a path (default: SHA-256 of the bytes).
    """

    def __init__(self, fn: Callable[[str], str] | None = None) -> None:
        self.fn = fn or content_hash
        self._memo: dict[str, str] = {}

    def __call__(self, path: str | os.PathLike[str]) -> str:
        key = os.fspath(path)
        if key not in self._memo:
            self._memo[key] = self.fn(key)
        return self._memo[key]


def _rng(seed: int, kind: str, triplet_id: str) -> random.Random:
    # random.Random hashes a str seed with SHA-512: stable across processes and Python runs
    # (unlike hash()), so negatives are reproducible from the seed alone.
    return random.Random(f"{seed}\x1f{kind}\x1f{triplet_id}")


def _draw(rng: random.Random, pool: Sequence[Triplet], ok: Callable[[Triplet], bool]) -> Triplet | None:
    """A uniformly random element of ``pool`` that passes ``ok``, or None when none does."""
    if not pool:
        return None
    for _ in range(_TRIES):
        candidate = pool[rng.randrange(len(pool))]
        if ok(candidate):
            return candidate
    valid = [c for c in pool if ok(c)]
    return rng.choice(valid) if valid else None


def _negative(reference: Triplet, kind: str, **changes) -> Negative:
    meta = dict(reference.meta)
    meta.update(negative=kind, reference_id=reference.id)
    return Negative(kind, reference, replace(reference, id=f"{reference.id}/{kind}", meta=meta, **changes))


def make_negatives(
    triplets: Iterable[Triplet],
    kinds: Sequence[str] = NEGATIVE_KINDS,
    seed: int = 0,
    hasher: Callable[[str], str] | None = None,
    skipped: Counter | None = None,
) -> list[Negative]:
    """Make the requested negatives of every triplet that has a target.

    Args:
        triplets: References; the pool of random draws is the triplets of the same subset.
        kinds: Which manipulations, from :data:`NEGATIVE_KINDS`.
        seed: Seed of every draw.
        hasher: Content hash of an image path (default: SHA-256 of the file, computed once per
            path). Used so that a "different" observation never has the same pixels, and so
            that copy/inverse are not made for a triplet whose two images are identical.
        skipped: Filled with ``"KIND: reason"`` counts for negatives that could not be made.

    Returns:
        Negatives ordered by reference (input order), then by kind (order of ``kinds``).

    Raises:
        DataError: An unknown kind, or an image that cannot be read for hashing.
    """
    unknown = [k for k in kinds if k not in NEGATIVE_KINDS]
    if unknown:
        raise DataError(f"unknown negative kind {', '.join(unknown)} (known: {', '.join(NEGATIVE_KINDS)})")
    skipped = skipped if skipped is not None else Counter()
    hash_of = hasher if isinstance(hasher, HashCache) else HashCache(hasher)
    refs = list(triplets)
    without_target = [t for t in refs if t.target is None]
    if without_target:
        skipped["all: no target"] += len(without_target) * len(kinds)
    refs = [t for t in refs if t.target is not None]
    # Pools sorted by id: a draw depends on the set of triplets, not on their order.
    pools: dict[str, list[Triplet]] = defaultdict(list)
    for t in refs:
        pools[t.subset].append(t)
    for pool in pools.values():
        pool.sort(key=lambda t: t.id)

    out: list[Negative] = []
    for ref in refs:
        pool = pools[ref.subset]
        for kind in kinds:
            rng = _rng(seed, kind, ref.id)
            if kind == RANDOM_ACTION:
                own = normalise_action(ref.action)
                other = _draw(rng, pool, lambda c, own=own: normalise_action(c.action) != own)
                if other is None:
                    skipped[f"{kind}: no other action in subset {ref.subset}"] += 1
                    continue
                out.append(_negative(ref, kind, action=other.action))
            elif kind == RANDOM_OBSERVATION:
                # Neither the true target (that would be the reference) nor the source (that
                # would be a copy negative), by path or by content.
                paths = {os.path.abspath(ref.target), os.path.abspath(ref.source)}
                hashes = {hash_of(ref.target), hash_of(ref.source)}
                other = _draw(
                    rng,
                    pool,
                    lambda c, p=paths, h=hashes: (
                        os.path.abspath(c.target) not in p and hash_of(c.target) not in h
                    ),
                )
                if other is None:
                    skipped[f"{kind}: no other observation in subset {ref.subset}"] += 1
                    continue
                out.append(_negative(ref, kind, target=other.target))
            elif hash_of(ref.source) == hash_of(ref.target):
                skipped[f"{kind}: source and target are the same image"] += 1
            elif kind == COPY_OBSERVATION:
                out.append(_negative(ref, kind, target=ref.source))
            else:  # INVERSE_OBSERVATION
                out.append(_negative(ref, kind, source=ref.target, target=ref.source))
    return out
