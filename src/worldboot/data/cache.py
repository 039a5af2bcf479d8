"""The pre-tokenised cache: VQ codes of every distinct image and the recognition weights of
every triplet, in safetensors shards with a JSON index.

Training reads codes instead of running the VQ encoder every epoch. Layout of a cache folder::

    index.json            format, backbone fingerprint, L, K, plan digest, finished shards
    shard-00000.safetensors
        codes    [n_new_images, L] int16 (int32 for codebooks > 32768): images first used here
        weights  [n_triplets, L] float32: Eq. 2's recognition weights, raw
        metadata: "hashes" (JSON list, row -> content hash), "records" (JSON list of triplets)
    hashes.json           path -> (size, mtime, SHA-256): a rerun does not re-read every image
    problems.jsonl        what was skipped and why (written when the cache is complete)

Images are keyed by the SHA-256 of their file bytes, so an image used by several triplets
(AURORA's chains: one turn's output is the next turn's input) is encoded once and stored once.

The recognition weight of target token ``l`` is ``||z_t[l] - z_s[l]||^2``, the squared L2
distance between the pre-quantisation features of source and target at that position (the
paper uses Chameleon's own VQ encoder as the recognition model); it is stored unnormalised
because the loss normalises it.

Resuming: shards are a fixed partition of the plan (the valid triplets in input order), and
images are encoded in fixed batches of the plan's distinct images (in order of first use), so
every feature is computed in the same batch whatever run computes it. A killed run keeps the
shards listed in the index; a rerun finishes the rest and yields the same cache, bit for bit, as
one clean run (batching changes float results in the last bits, hence the fixed batches).

This module defines the format and reads it; :mod:`worldboot.data.tokenize` builds it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from worldboot.errors import DataError, ModelError, unless_loop
from worldboot.runs import write_atomic

FORMAT = "worldboot-token-cache"
VERSION = 1
INDEX_FILE = "index.json"
HASHES_FILE = "hashes.json"
PROBLEMS_FILE = "problems.jsonl"
#: Default number of triplets per shard: about 8 MB per shard for Anole (L = 1024).
DEFAULT_SHARD_SIZE = 1024


def recognition_weights(source_features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
    """The paper's Eq. 2 token weights: squared L2 distance of pre-quantisation features.

    Args:
        source_features: ``[..., L, D]`` features of o_s.
        target_features: ``[..., L, D]`` features of o_t.

    Returns:
        ``[..., L]`` float32, unnormalised.
    """
    diff = target_features.float() - source_features.float()
    return (diff * diff).sum(dim=-1)


def code_dtype(codebook_size: int) -> torch.dtype:
    """The smallest integer type that holds codes ``0..K-1`` (int16 for Anole's 8192)."""
    return torch.int16 if codebook_size <= 2**15 else torch.int32


def _shard_name(k: int) -> str:
    return f"shard-{k:05d}.safetensors"


def _read_index(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / INDEX_FILE
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{path}: not a token-cache index (malformed JSON)") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise DataError(f"{path}: not a worldboot token cache")
    if index.get("version") != VERSION:
        raise DataError(f"{path}: token cache version {index.get('version')}, this worldboot reads {VERSION}")
    _check_index(index, path)
    return index


def _write_index(out_dir: Path, index: dict[str, Any]) -> None:
    write_atomic(out_dir / INDEX_FILE, json.dumps(index, indent=1) + "\n")


#: The keys of ``index.json`` a reader needs, and their types.
_INDEX_KEYS: dict[str, type | tuple[type, ...]] = {
    "shards": list, "num_shards": int, "fingerprint": str, "image_seq_len": int, "codebook_size": int,
    "batch_size": int, "shard_size": int, "plan": str,
}


def _check_index(index: Any, file: Path) -> None:
    """Refuse an ``index.json`` of the wrong shape (edited by hand, or another tool's file) in
    one line, where a ``KeyError`` or ``TypeError`` came out of the reader.

    Raises:
        DataError: Naming the file and the first key missing or of the wrong type.
    """
    fix = "tokenize again into a new folder"
    for key, kind in _INDEX_KEYS.items():
        value = index.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise DataError(f"{file} is damaged ({key}: {json.dumps(value)[:80]}): {fix}")
    for shard in index["shards"]:
        if not isinstance(shard, dict) or not isinstance(shard.get("file"), str) or not shard["file"]:
            raise DataError(f"{file} is damaged (a shard without its file: {json.dumps(shard)[:80]}): {fix}")


class TokenCache:
    """A finished token cache, read lazily shard by shard.

    Args:
        path: The cache folder written by :func:`worldboot.data.tokenize.build_cache` (``worldboot tokenize``).

    Raises:
        DataError: The folder or its index is missing, the cache is unfinished, or a shard is missing.

    Attributes:
        fingerprint: The tokenizer fingerprint of the backbone that made it.
        image_seq_len: ``L``, tokens per image.
        codebook_size: ``K``.
        records: One dict per triplet: ``id, subset, action, source_hash, target_hash, source,
            target, meta``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from safetensors import SafetensorError, safe_open

        self.path = Path(path)
        if not self.path.is_dir():
            raise unless_loop(self.path, DataError(f"token cache not found: {self.path} (make it with `worldboot tokenize`)"))
        index = _read_index(self.path)
        if index is None:
            raise DataError(
                f"token cache not found: {self.path} has no {INDEX_FILE} (make it with `worldboot tokenize`)"
            )
        if not index.get("complete"):
            raise DataError(
                f"token cache {self.path} is unfinished ({len(index['shards'])} of {index['num_shards']} "
                "shards): rerun `worldboot tokenize` with the same input to finish it"
            )
        self.index = index
        self.fingerprint: str = index["fingerprint"]
        self.image_seq_len: int = int(index["image_seq_len"])
        self.codebook_size: int = int(index["codebook_size"])
        self.records: list[dict[str, Any]] = []
        self._code_at: dict[str, tuple[int, int]] = {}
        self._weight_at: dict[str, tuple[int, int]] = {}
        self._record_of: dict[str, dict[str, Any]] = {}
        self._shards: list[Path] = []
        self._loaded: dict[int, dict[str, torch.Tensor]] = {}
        for k, shard in enumerate(index["shards"]):
            file = self.path / shard["file"]
            if not file.is_file():
                raise DataError(f"token cache {self.path} is missing its shard {shard['file']}")
            try:
                with safe_open(str(file), framework="pt") as fh:
                    meta = fh.metadata() or {}
                hashes, records = json.loads(meta["hashes"]), json.loads(meta["records"])
            except (OSError, KeyError, ValueError, SafetensorError) as err:
                raise DataError(
                    f"token cache shard {file} is damaged ({str(err).splitlines()[0] if str(err) else type(err).__name__}): "
                    "tokenize again into a new folder"
                ) from None
            self._shards.append(file)
            for row, h in enumerate(hashes):
                self._code_at[h] = (k, row)
            for row, rec in enumerate(records):
                self._weight_at[rec["id"]] = (k, row)
                self._record_of[rec["id"]] = rec
                self.records.append(rec)

    def __len__(self) -> int:
        return len(self.records)

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers get the index, not the tensors loaded so far.
        state = dict(self.__dict__)
        state["_loaded"] = {}
        return state

    @property
    def ids(self) -> list[str]:
        """Triplet ids in cache order."""
        return [r["id"] for r in self.records]

    def _tensors(self, k: int) -> dict[str, torch.Tensor]:
        if k not in self._loaded:
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                self._loaded[k] = load_file(str(self._shards[k]))
            except (OSError, SafetensorError) as err:
                raise DataError(
                    f"token cache shard {self._shards[k]} is damaged ({str(err).splitlines()[0]}): "
                    "tokenize again into a new folder"
                ) from None
        return self._loaded[k]

    def record(self, triplet_id: str) -> dict[str, Any]:
        """The record of one triplet.

        Raises:
            DataError: Unknown id.
        """
        return self._look_up(self._record_of, triplet_id, "triplet {!r}")

    def codes(self, image_hash: str) -> torch.Tensor:
        """The ``[L]`` codes (int64) of the image with this content hash."""
        k, row = self._look_up(self._code_at, image_hash, "image {}")
        return self._tensors(k)["codes"][row].long()

    def weights(self, triplet_id: str) -> torch.Tensor:
        """The ``[L]`` recognition weights (float32, unnormalised) of a triplet."""
        k, row = self._look_up(self._weight_at, triplet_id, "triplet {!r}")
        return self._tensors(k)["weights"][row].float()

    def _look_up(self, table: dict[str, Any], key: str, what: str) -> Any:
        """``table[key]``; an unknown key is a DataError naming the cache and ``what`` (a
        template of the key, formatted only then: codes are looked up per example)."""
        try:
            return table[key]
        except KeyError:
            raise DataError(f"token cache {self.path} has no {what.format(key)}") from None

    def check_backbone(self, backbone: Any) -> None:
        """Refuse a backbone whose tokenizer differs from the one that made the cache.

        Raises:
            ModelError: The fingerprints differ.
        """
        theirs = backbone.tokenizer_fingerprint()
        if theirs != self.fingerprint:
            raise ModelError(
                f"token cache {self.path} was made by a backbone with tokenizer fingerprint "
                f"{self.fingerprint}, not {theirs}: re-tokenize the data for this backbone"
            )


class CachedTripletDataset(Dataset):
    """Triplets from a :class:`TokenCache`, as training reads them.

    Args:
        cache: The cache (or its folder).
        ids: Restrict to these triplet ids, in this order (default: all, in cache order).

    Items are dicts ``{id, subset, action, source_codes [L] int64, target_codes [L] int64,
    weights [L] float32}``.
    """

    def __init__(self, cache: TokenCache | str | os.PathLike[str], ids: Sequence[str] | None = None) -> None:
        self.cache = cache if isinstance(cache, TokenCache) else TokenCache(cache)
        if ids is None:
            self.ids = self.cache.ids
        else:
            self.ids = list(ids)
            unknown = [i for i in self.ids if i not in self.cache._record_of]
            if unknown:
                raise DataError(
                    f"token cache {self.cache.path} has no triplet {', '.join(map(repr, unknown[:5]))}"
                )

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rec = self.cache.record(self.ids[i])
        return {
            "id": rec["id"],
            "subset": rec["subset"],
            "action": rec["action"],
            "source_codes": self.cache.codes(rec["source_hash"]),
            "target_codes": self.cache.codes(rec["target_hash"]),
            "weights": self.cache.weights(rec["id"]),
        }
