"""What a token cache will hold, decided before anything is encoded: the triplets that can be
cached, their images' content hashes, and the shards and encoder batches, fixed so that a
resumed run encodes exactly the batches a fresh one would (:mod:`worldboot.data.tokenize`
builds the cache from it)."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worldboot.data.cache import HASHES_FILE
from worldboot.data.schema import Problems, Triplet, content_hash
from worldboot.errors import DataError
from worldboot.models.backbone import sequence_problem
from worldboot.progress import progress_bar
from worldboot.runs import write_atomic


class ImageHasher:
    """Content hashes with a (size, mtime) memo kept in the cache folder."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / HASHES_FILE
        self.memo: dict[str, list] = {}
        if self.path.is_file():
            try:
                self.memo = json.loads(self.path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                self.memo = {}  # a damaged memo only costs re-hashing

    def __call__(self, path: str) -> str:
        st = os.stat(path)
        entry = self.memo.get(path)
        if entry and entry[0] == st.st_size and entry[1] == st.st_mtime_ns:
            return entry[2]
        digest = content_hash(path)
        self.memo[path] = [st.st_size, st.st_mtime_ns, digest]
        return digest

    def save(self) -> None:
        write_atomic(self.path, json.dumps(self.memo))


def cacheable(
    triplets: Iterable[Triplet], backbone: Any, problems: Problems, skipped: Counter
) -> list[Triplet]:
    """The triplets with a target, a unique id and an action that fits the model; the others
    are counted in ``skipped`` (and a duplicate or too long one reported)."""
    candidates: list[Triplet] = []
    seen_ids: set[str] = set()
    for t in triplets:
        if t.target is None:
            skipped["no target"] += 1
            continue
        if t.id in seen_ids:
            skipped["duplicate id"] += 1
            problems.add(f"triplet {t.id}", 0, "duplicate id")
            continue
        seen_ids.add(t.id)
        too_long = sequence_problem(backbone, t.action)
        if too_long:
            skipped["too long"] += 1
            problems.add(f"triplet {t.id}", 0, too_long)
            continue
        candidates.append(t)
    return candidates


def hash_images(
    candidates: list[Triplet], out_dir: Path, problems: Problems, skipped: Counter, progress: bool
) -> list[tuple[Triplet, str, str]]:
    """Each triplet whose two images can be read, with their content hashes (memoised in the
    cache folder); a triplet with an unreadable file is reported and counted."""
    hasher = ImageHasher(out_dir)
    hash_of: dict[str, str] = {}
    unreadable: dict[str, str] = {}  # path -> why it cannot be read
    paths = list(dict.fromkeys(p for t in candidates for p in (t.source, t.target)))
    with progress_bar(None, progress) as bar:
        task = bar.add_task("hashing images", total=len(paths))
        for p in paths:
            try:
                hash_of[p] = hasher(p)
            except OSError as err:
                unreadable[p] = err.strerror or str(err)
            except DataError as err:
                unreadable[p] = str(err)
            bar.advance(task)
    hasher.save()
    hashed: list[tuple[Triplet, str, str]] = []
    for t in candidates:
        bad = next((p for p in (t.source, t.target) if p in unreadable), None)
        if bad is not None:
            skipped["unreadable image"] += 1
            problems.add(bad, 0, f"cannot read image (triplet {t.id}): {unreadable[bad]}")
            continue
        hashed.append((t, hash_of[t.source], hash_of[t.target]))
    return hashed


@dataclass
class CachePlan:
    """The fixed structure of a cache: shards of the triplets, and batches of distinct images
    in order of first use (so a resumed run encodes exactly the batches a fresh one would).

    Attributes:
        triplets: ``(triplet, source hash, target hash)``, in shard order.
        records: Each triplet's row in its shard.
        order: The distinct images' hashes, in order of first use.
        path_of: An image's file, by hash.
        batch_of: An image's encoder batch, by hash.
        last_shard: The last shard that uses an image (its codes are dropped from memory after).
        owned: Per shard, the images whose codes it stores (first used there).
        batch_size: Images per encoder call.
        shard_size: Triplets per shard.
    """

    triplets: list[tuple[Triplet, str, str]]
    records: list[dict[str, Any]]
    order: list[str]
    path_of: dict[str, str]
    batch_of: dict[str, int]
    last_shard: dict[str, int]
    owned: dict[int, list[str]]
    batch_size: int
    shard_size: int

    @classmethod
    def of(cls, hashed: list[tuple[Triplet, str, str]], batch_size: int, shard_size: int) -> CachePlan:
        order: list[str] = []
        path_of: dict[str, str] = {}
        first_shard: dict[str, int] = {}
        last_shard: dict[str, int] = {}
        for i, (t, hs, ht) in enumerate(hashed):
            k = i // shard_size
            for h, p in ((hs, t.source), (ht, t.target)):
                if h not in path_of:
                    path_of[h] = p
                    order.append(h)
                    first_shard[h] = k
                last_shard[h] = k
        batch_of = {h: i // batch_size for i, h in enumerate(order)}
        owned: dict[int, list[str]] = {}
        for h in order:
            owned.setdefault(first_shard[h], []).append(h)
        records = [
            {
                "id": t.id,
                "subset": t.subset,
                "action": t.action,
                "source_hash": hs,
                "target_hash": ht,
                "source": t.source,
                "target": t.target,
                "meta": t.meta,
            }
            for t, hs, ht in hashed
        ]
        return cls(hashed, records, order, path_of, batch_of, last_shard, owned, batch_size, shard_size)

    @property
    def num_shards(self) -> int:
        return (len(self.triplets) + self.shard_size - 1) // self.shard_size
