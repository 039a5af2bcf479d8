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
from worldboot.data.cache_plan import CachePlan, cacheable, hash_images
from worldboot.data.schema import Problem, Problems, Triplet
from worldboot.errors import DataError, ModelError, UserError
from worldboot.images import open_image
from worldboot.progress import progress_bar
from worldboot.run_guards import out_folder
from worldboot.runs import atomic_path, write_atomic


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
    out_dir = out_folder(out_dir, "tokenize")
    problems = problems if problems is not None else Problems()
    skipped = skipped if skipped is not None else Counter()
    if batch_size < 1 or shard_size < 1:
        raise UserError(f"batch size and shard size must be at least 1 (got {batch_size}, {shard_size})")
    fingerprint = backbone.tokenizer_fingerprint()
    index = _open_folder(out_dir, fingerprint)
    if index is not None:
        batch_size, shard_size = int(index["batch_size"]), int(index["shard_size"])
    candidates = cacheable(triplets, backbone, problems, skipped)
    hashed = hash_images(candidates, out_dir, problems, skipped, progress)
    plan = CachePlan.of(hashed, batch_size, shard_size)
    dtype = code_dtype(backbone.codebook_size)
    index = _start_index(index, out_dir, backbone, fingerprint, plan, dtype)
    # Problems of shards finished by an earlier run, so the report is complete.
    for shard in index["shards"]:
        for p in shard.get("problems", []):
            problems.add(p["file"], p["line"], p["reason"])
            skipped["unreadable image"] += 1
    _encode_shards(plan, backbone, out_dir, index, dtype, problems, skipped, progress, on_shard)
    index["complete"] = True
    index["skipped"] = dict(sorted(skipped.items()))
    _write_index(out_dir, index)
    problems_list = [asdict(p) for p in problems]
    write_atomic(out_dir / PROBLEMS_FILE, "".join(json.dumps(p) + "\n" for p in problems_list))
    return TokenCache(out_dir)


# -- the steps ------------------------------------------------------------------------------------


def _open_folder(out_dir: Path, fingerprint: str) -> dict[str, Any] | None:
    """The index of the unfinished cache in ``out_dir`` (None for a new one), once the folder
    is known to hold a cache of this tokenizer or nothing; the folder is made and the
    half-written files of a killed run removed.

    Raises:
        ModelError: The cache was made with another tokenizer.
        DataError: The folder holds something else, or is a file.
    """
    index = _read_index(out_dir)
    if index is not None and index["fingerprint"] != fingerprint:
        raise ModelError(
            f"token cache {out_dir} was made with a backbone whose tokenizer fingerprint is "
            f"{index['fingerprint']}; this backbone's is {fingerprint}. Codes of two tokenizers "
            "cannot be mixed: choose another --out or delete the old cache"
        )
    if index is None and out_dir.is_dir() and any(
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
    return index


def _start_index(
    index: dict[str, Any] | None,
    out_dir: Path,
    backbone: Any,
    fingerprint: str,
    plan: CachePlan,
    dtype: torch.dtype,
) -> dict[str, Any]:
    """The index of a new cache (written now), or the unfinished one's once it is known to
    hold this plan (the same triplets, images, sizes and tokenizer: its digest).

    Raises:
        DataError: The unfinished cache was planned from other triplets or images.
    """
    digest = hashlib.sha256(
        json.dumps(
            [VERSION, fingerprint, plan.batch_size, plan.shard_size, str(dtype), plan.records],
            sort_keys=True,
            default=str,
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
            "batch_size": plan.batch_size,
            "shard_size": plan.shard_size,
            "plan": digest,
            "num_triplets": len(plan.triplets),
            "num_shards": plan.num_shards,
            "shards": [],
            "complete": False,
        }
        _write_index(out_dir, index)
    elif index["plan"] != digest:
        raise DataError(
            f"token cache {out_dir} holds other triplets or images than this input (plan "
            f"{index['plan']}, input {digest}): choose another --out or delete the old cache"
        )
    return index


def _encode_shards(
    plan: CachePlan,
    backbone: Any,
    out_dir: Path,
    index: dict[str, Any],
    dtype: torch.dtype,
    problems: Problems,
    skipped: Counter,
    progress: bool,
    on_shard: Callable[[int, int], None] | None,
) -> None:
    """Encode and write every shard the index lacks, in order; each is in the index once it is
    on disk, and an image's codes stay in memory only until its last shard."""
    memo: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # hash -> (codes [L], features [L, D])
    failed: dict[str, str] = {}  # hash -> why its image cannot be decoded
    done, size, total = len(index["shards"]), plan.shard_size, len(plan.triplets)
    with progress_bar(None, progress) as bar:
        task = bar.add_task("encoding triplets", total=total, completed=min(total, done * size))
        for k in range(done, plan.num_shards):
            part = plan.triplets[k * size : (k + 1) * size]
            for _, hs, ht in part:
                for h in (hs, ht):
                    if h not in memo and h not in failed:
                        batch = plan.batch_of[h]
                        _encode_batch(backbone, plan.order, plan.path_of, batch, plan.batch_size, memo, failed)
            kept, weights, shard_problems = _shard_rows(plan, k, memo, failed, problems, skipped)
            new = [h for h in plan.owned.get(k, []) if h not in failed]
            _write_shard(out_dir / _shard_name(k), new, memo, kept, weights, dtype, int(backbone.image_seq_len))
            index["shards"].append(
                {"file": _shard_name(k), "triplets": len(kept), "images": len(new), "problems": shard_problems}
            )
            _write_index(out_dir, index)
            for h in [h for h in memo if plan.last_shard[h] <= k]:
                del memo[h]
            bar.advance(task, len(part))
            if on_shard is not None:
                on_shard(k, plan.num_shards)


def _shard_rows(
    plan: CachePlan,
    k: int,
    memo: dict[str, tuple[torch.Tensor, torch.Tensor]],
    failed: dict[str, str],
    problems: Problems,
    skipped: Counter,
) -> tuple[list[dict[str, Any]], list[torch.Tensor], list[dict[str, Any]]]:
    """Shard ``k``'s records and recognition weights, and the problems of the triplets it
    leaves out (an image that cannot be decoded), which are reported and counted too."""
    part = slice(k * plan.shard_size, (k + 1) * plan.shard_size)
    kept, weights, shard_problems = [], [], []
    for (t, hs, ht), rec in zip(plan.triplets[part], plan.records[part], strict=True):
        bad = next((h for h in (hs, ht) if h in failed), None)
        if bad is not None:
            problem = Problem(plan.path_of[bad], 0, f"cannot read image (triplet {t.id}): {failed[bad]}")
            shard_problems.append(asdict(problem))
            skipped["unreadable image"] += 1
            problems.add(problem.file, problem.line, problem.reason)
            continue
        kept.append(rec)
        weights.append(recognition_weights(memo[hs][1], memo[ht][1]))
    return kept, weights, shard_problems


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
