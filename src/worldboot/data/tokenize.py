"""Building a token cache (``worldboot tokenize``): every distinct image encoded once, in shards written atomically, resumable after a kill; bad triplets skipped and counted."""

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

from worldboot.data.cache import (
    DEFAULT_SHARD_SIZE,
    FORMAT,
    HASHES_FILE,
    PROBLEMS_FILE,
    VERSION,
    TokenCache,
    _read_index,
    _shard_name,
    _write_index,
    code_dtype,
    recognition_weights,
)
from worldboot.data.schema import Problem, Problems, Triplet, content_hash
from worldboot.errors import DataError, ModelError, UserError
from worldboot.images import open_image
from worldboot.models.backbone import sequence_problem
from worldboot.progress import progress_bar
from worldboot.runs import atomic_path, write_atomic


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
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir} is a file: choose an empty or new folder for the cache")
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
        too_long = sequence_problem(backbone, t.action)
        if too_long:
            skipped["too long"] += 1
            problems.add(f"triplet {t.id}", 0, too_long)
            continue
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
