"""The training data: token caches mixed by weight, with a stable held-out split by sample id."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worldboot.errors import ConfigError, DataError, unless_loop
from worldboot.train.config import DataSettings


def _held_out(sample_id: str, fraction: float) -> bool:
    h = int(hashlib.sha1(sample_id.encode()).hexdigest()[:8], 16)
    return (h / 0xFFFFFFFF) < fraction


@dataclass
class CacheEntry:
    source: int
    index: int


class MixedDataset:
    """The Eq. 1 mixture of several caches, with per-subset caps, repeats and a held-out split."""

    def __init__(self, data: DataSettings, seed: int) -> None:
        from worldboot.data.cache import CachedTripletDataset, TokenCache

        if not data.sources:
            raise ConfigError("no data: give at least one cache (data.sources or --cache)")
        self.datasets = []
        self.names = []
        self.train: list[CacheEntry] = []
        self.eval: list[CacheEntry] = []
        rng = np.random.default_rng(seed)
        seen: list[str] = []  # a digest of each source's samples
        for s_idx, src in enumerate(data.sources):
            if not src.cache.strip():  # Path("") is the current folder: never read it unasked
                label = f" ({src.name})" if src.name else ""
                raise ConfigError(f"data.sources[{s_idx}]{label} names no cache folder: give "
                                  f"--cache {src.name or 'NAME'}=DIR")
            path = Path(src.cache)
            if not path.exists():
                raise unless_loop(path, DataError(f"cache not found: {path} (build it with 'worldboot tokenize')"))
            cache = TokenCache(path)
            # Two folders of the same samples (a copied cache, or one input tokenized twice)
            # would train on each sample twice; one folder twice is caught by dedupe_caches.
            samples = hashlib.sha256("\n".join(
                f"{r['id']}\t{r['source_hash']}\t{r['target_hash']}\t{r['action']}" for r in cache.records
            ).encode("utf-8", "surrogateescape")).hexdigest() if cache.records else ""
            if samples and samples in seen:
                other = seen.index(samples)
                raise ConfigError(f"the caches {data.sources[other].cache} and {path} hold the same samples (a copy?): "
                                  "give one of them")
            seen.append(samples)
            ds = CachedTripletDataset(cache)
            self.datasets.append(ds)
            self.names.append(src.name or path.name)
            by_subset: dict[str, list[int]] = {}
            for i, rec in enumerate(cache.records):
                by_subset.setdefault(rec["subset"], []).append(i)
            for subset, cap in src.max_per_subset.items():
                if subset not in by_subset:
                    raise ConfigError(
                        f"data.sources[{s_idx}].max_per_subset names {subset!r}, which {path} does not hold "
                        f"(its subsets: {', '.join(sorted(by_subset)) or 'none'})"
                    )
                if cap < 0:
                    raise ConfigError(f"data.sources[{s_idx}].max_per_subset.{subset} must be at least 0, got {cap}")
            keep: list[int] = []
            for subset in sorted(by_subset):
                idx = by_subset[subset]
                cap = src.max_per_subset.get(subset)
                if cap is not None and len(idx) > cap:
                    idx = sorted(rng.choice(idx, size=cap, replace=False).tolist())
                keep.extend(idx)
            train_idx = [i for i in keep if not _held_out(cache.records[i]["id"], data.eval_fraction)]
            eval_idx = [i for i in keep if _held_out(cache.records[i]["id"], data.eval_fraction)]
            whole, frac = int(src.repeats), src.repeats - int(src.repeats)
            chosen = train_idx * whole
            if frac > 0 and train_idx:
                n = int(round(frac * len(train_idx)))
                chosen += sorted(rng.choice(train_idx, size=n, replace=False).tolist())
            self.train += [CacheEntry(s_idx, i) for i in chosen]
            self.eval += [CacheEntry(s_idx, i) for i in eval_idx]
        self.eval = self.eval[: data.eval_max]
        self.fingerprints = {ds.cache.fingerprint for ds in self.datasets}

    def summary(self, data: DataSettings) -> list[dict[str, Any]]:
        """The mixture as trained, per source: its name, cache, caps and repeats, and how many
        training and held-out samples it gave (after caps and repeats)."""
        train = Counter(e.source for e in self.train)
        held = Counter(e.source for e in self.eval)
        return [{"name": self.names[i], "cache": src.cache, "max_per_subset": dict(src.max_per_subset),
                 "repeats": src.repeats, "train": train[i], "held_out": held[i]}
                for i, src in enumerate(data.sources)]

    def item(self, entry: CacheEntry) -> dict[str, Any]:
        """The cached triplet behind ``entry``."""
        return self.datasets[entry.source][entry.index]

    def fingerprint(self) -> str:
        """A hash of the training and held-out samples in their order (id, action, image hashes):
        with the seed and the batch size, it decides the batches of every step."""
        import hashlib

        h = hashlib.sha256()
        for split in (self.train, self.eval):
            for e in split:
                rec = self.datasets[e.source].cache.records[e.index]
                fields = (rec.get("id"), rec.get("action"), rec.get("source_hash"), rec.get("target_hash"))
                h.update(repr(fields).encode())
            h.update(b"|")
        return h.hexdigest()[:16]
