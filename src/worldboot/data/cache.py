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
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from worldboot.data.schema import Problem, Problems, Triplet, content_hash
from worldboot.errors import DataError, ModelError, UserError
from worldboot.images import open_image
from worldboot.progress import progress_bar
from worldboot.runs import atomic_path, write_atomic

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
    return index


def _write_index(out_dir: Path, index: dict[str, Any]) -> None:
    write_atomic(out_dir / INDEX_FILE, json.dumps(index, indent=1) + "\n")


class _Hasher:
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


def build_cache(
    triplets: Iterable[Triplet],
    backbone: Any,
    out_dir: str | os.PathLike[str],
    batch_size: int = 16,
    shard_size: int = DEFAULT_SHARD_SIZE,
    problems: Problems | None = None,
    progress: bool = True,
    on_shard: Callable[[int, int], None] | None = None,
    skipped: Counter | None = None,
) -> TokenCache:
    """Encode triplets into a token cache, resuming a cache left unfinished in ``out_dir``.

    Args:
        triplets: The triplets, in the order the shards will follow.
        backbone: A :class:`~worldboot.models.backbone.Backbone` (its ``encode_images``,
            ``tokenizer_fingerprint``, ``image_seq_len`` and ``codebook_size`` are used).
        out_dir: The cache folder (created; an unfinished cache there is resumed).
        batch_size: Images per encoder call. A resumed cache keeps the value it was started with.
        shard_size: Triplets per shard. A resumed cache keeps the value it was started with.
        problems: Filled with triplets that cannot be cached (duplicate id, unreadable image).
        progress: Show progress bars (on stderr).
        on_shard: Called as ``on_shard(k, num_shards)`` after shard ``k`` is safely on disk.
        skipped: Filled with counts of triplets left out (``"no target"``, ``"duplicate id"``,
            ``"unreadable image"``).

    Returns:
        The finished :class:`TokenCache`.

    Raises:
        ModelError: ``out_dir`` holds a cache made with another backbone (another tokenizer).
        DataError: ``out_dir`` holds a cache of other triplets or images.
    """
    out_dir = Path(out_dir)
    problems = problems if problems is not None else Problems()
    skipped = skipped if skipped is not None else Counter()
    if batch_size < 1 or shard_size < 1:
        raise UserError(f"batch size and shard size must be at least 1 (got {batch_size}, {shard_size})")
    fingerprint = backbone.tokenizer_fingerprint()
    index = _read_index(out_dir)
    if index is not None and index["fingerprint"] != fingerprint:
        raise ModelError(
            f"token cache {out_dir} was made with a backbone whose tokenizer fingerprint is "
            f"{index['fingerprint']}; this backbone's is {fingerprint}. Codes of two tokenizers "
            "cannot be mixed: choose another --out or delete the old cache"
        )
    if index is not None:
        batch_size, shard_size = int(index["batch_size"]), int(index["shard_size"])
    elif out_dir.is_dir() and any(
        p.name != HASHES_FILE and not p.name.startswith(".") for p in out_dir.iterdir()
    ):
        raise DataError(
            f"{out_dir} exists and is not a token cache: choose an empty or new folder for the cache"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    for stray in out_dir.glob(".*.tmp*"):  # half-written files of a killed run
        stray.unlink(missing_ok=True)

    # 1. The triplets that can be cached: with a target, a unique id, and readable files.
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
        candidates.append(t)

    hasher = _Hasher(out_dir)
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
    plan: list[tuple[Triplet, str, str]] = []
    for t in candidates:
        bad = next((p for p in (t.source, t.target) if p in unreadable), None)
        if bad is not None:
            skipped["unreadable image"] += 1
            problems.add(bad, 0, f"cannot read image (triplet {t.id}): {unreadable[bad]}")
            continue
        plan.append((t, hash_of[t.source], hash_of[t.target]))

    # 2. The fixed structure: shards of the plan, batches of distinct images in order of first use.
    num_shards = (len(plan) + shard_size - 1) // shard_size
    order: list[str] = []
    path_of: dict[str, str] = {}
    first_shard: dict[str, int] = {}
    last_shard: dict[str, int] = {}
    for i, (t, hs, ht) in enumerate(plan):
        k = i // shard_size
        for h, p in ((hs, t.source), (ht, t.target)):
            if h not in path_of:
                path_of[h] = p
                order.append(h)
                first_shard[h] = k
            last_shard[h] = k
    batch_of = {h: i // batch_size for i, h in enumerate(order)}
    owned: dict[int, list[str]] = {}  # shard -> images whose codes it stores (first used there)
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
        for t, hs, ht in plan
    ]
    dtype = code_dtype(backbone.codebook_size)
    digest = hashlib.sha256(
        json.dumps(
            [VERSION, fingerprint, batch_size, shard_size, str(dtype), records], sort_keys=True, default=str
        ).encode()
    ).hexdigest()[:16]

    if index is None:
        index = {
            "format": FORMAT,
            "version": VERSION,
            "fingerprint": fingerprint,
            "family": getattr(backbone, "family", "unknown"),
            "image_seq_len": int(backbone.image_seq_len),
            "codebook_size": int(backbone.codebook_size),
            "code_dtype": str(dtype).replace("torch.", ""),
            "batch_size": batch_size,
            "shard_size": shard_size,
            "plan": digest,
            "num_triplets": len(plan),
            "num_shards": num_shards,
            "shards": [],
            "complete": False,
        }
        _write_index(out_dir, index)
    elif index["plan"] != digest:
        raise DataError(
            f"token cache {out_dir} holds other triplets or images than this input (plan "
            f"{index['plan']}, input {digest}): choose another --out or delete the old cache"
        )

    # Problems of shards finished by an earlier run, so the report is complete.
    for shard in index["shards"]:
        for p in shard.get("problems", []):
            problems.add(p["file"], p["line"], p["reason"])
            skipped["unreadable image"] += 1

    # 3. Encode shard by shard.
    memo: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # hash -> (codes [L], features [L, D])
    failed: dict[str, str] = {}  # hash -> why its image cannot be decoded
    done = len(index["shards"])
    with progress_bar(None, progress) as bar:
        task = bar.add_task("encoding triplets", total=len(plan), completed=min(len(plan), done * shard_size))
        for k in range(done, num_shards):
            part = plan[k * shard_size : (k + 1) * shard_size]
            part_records = records[k * shard_size : (k + 1) * shard_size]
            for _, hs, ht in part:
                for h in (hs, ht):
                    if h not in memo and h not in failed:
                        _encode_batch(backbone, order, path_of, batch_of[h], batch_size, memo, failed)
            kept, weights, shard_problems = [], [], []
            for (t, hs, ht), rec in zip(part, part_records, strict=True):
                bad = next((h for h in (hs, ht) if h in failed), None)
                if bad is not None:
                    problem = Problem(path_of[bad], 0, f"cannot read image (triplet {t.id}): {failed[bad]}")
                    shard_problems.append(asdict(problem))
                    skipped["unreadable image"] += 1
                    problems.add(problem.file, problem.line, problem.reason)
                    continue
                kept.append(rec)
                weights.append(recognition_weights(memo[hs][1], memo[ht][1]))
            new = [h for h in owned.get(k, []) if h not in failed]
            _write_shard(
                out_dir / _shard_name(k), new, memo, kept, weights, dtype, int(backbone.image_seq_len)
            )
            index["shards"].append(
                {
                    "file": _shard_name(k),
                    "triplets": len(kept),
                    "images": len(new),
                    "problems": shard_problems,
                }
            )
            _write_index(out_dir, index)
            for h in [h for h in memo if last_shard[h] <= k]:
                del memo[h]
            bar.advance(task, len(part))
            if on_shard is not None:
                on_shard(k, num_shards)

    index["complete"] = True
    index["skipped"] = dict(sorted(skipped.items()))
    _write_index(out_dir, index)
    problems_list = [asdict(p) for p in problems]
    write_atomic(out_dir / PROBLEMS_FILE, "".join(json.dumps(p) + "\n" for p in problems_list))
    return TokenCache(out_dir)


def _encode_batch(
    backbone: Any,
    order: Sequence[str],
    path_of: dict[str, str],
    batch: int,
    batch_size: int,
    memo: dict[str, tuple[torch.Tensor, torch.Tensor]],
    failed: dict[str, str],
) -> None:
    """Encode the plan's image batch number ``batch`` (always the same images) into ``memo``."""
    hashes = order[batch * batch_size : (batch + 1) * batch_size]
    images, ok = [], []
    for h in hashes:
        try:
            images.append(open_image(path_of[h]))
            ok.append(h)
        except DataError as err:
            failed[h] = str(err)
    if not images:
        return
    encoded = backbone.encode_images(images)
    for i, h in enumerate(ok):
        memo[h] = (encoded.codes[i].clone(), encoded.features[i].float().clone())


def _write_shard(
    path: Path,
    hashes: list[str],
    memo: dict[str, tuple[torch.Tensor, torch.Tensor]],
    records: list[dict[str, Any]],
    weights: list[torch.Tensor],
    dtype: torch.dtype,
    seq_len: int,
) -> None:
    """Write one shard through a temporary file."""
    from safetensors.torch import save_file

    codes = (
        torch.stack([memo[h][0] for h in hashes]).to(dtype)
        if hashes
        else torch.zeros((0, seq_len), dtype=dtype)
    )
    w = torch.stack(weights).float() if weights else torch.zeros((0, seq_len), dtype=torch.float32)
    metadata = {"hashes": json.dumps(hashes), "records": json.dumps(records, default=str)}
    with atomic_path(path) as tmp:
        save_file({"codes": codes.contiguous(), "weights": w.contiguous()}, str(tmp), metadata=metadata)


class TokenCache:
    """A finished token cache, read lazily shard by shard.

    Args:
        path: The cache folder written by :func:`build_cache` (``worldboot tokenize``).

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
        from safetensors import safe_open

        self.path = Path(path)
        if not self.path.is_dir():
            raise DataError(f"token cache not found: {self.path} (make it with `worldboot tokenize`)")
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
            except (OSError, KeyError, ValueError, json.JSONDecodeError) as err:
                raise DataError(f"token cache shard {file} is damaged: {err}") from None
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
            from safetensors.torch import load_file

            self._loaded[k] = load_file(str(self._shards[k]))
        return self._loaded[k]

    def record(self, triplet_id: str) -> dict[str, Any]:
        """The record of one triplet.

        Raises:
            DataError: Unknown id.
        """
        try:
            return self._record_of[triplet_id]
        except KeyError:
            raise DataError(f"token cache {self.path} has no triplet {triplet_id!r}") from None

    def codes(self, image_hash: str) -> torch.Tensor:
        """The ``[L]`` codes (int64) of the image with this content hash."""
        try:
            k, row = self._code_at[image_hash]
        except KeyError:
            raise DataError(f"token cache {self.path} has no image {image_hash}") from None
        return self._tensors(k)["codes"][row].long()

    def weights(self, triplet_id: str) -> torch.Tensor:
        """The ``[L]`` recognition weights (float32, unnormalised) of a triplet."""
        try:
            k, row = self._weight_at[triplet_id]
        except KeyError:
            raise DataError(f"token cache {self.path} has no triplet {triplet_id!r}") from None
        return self._tensors(k)["weights"][row].float()

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
