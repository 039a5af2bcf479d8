"""The files of a predictions folder: safe file names, atomic PNG and safetensors writes, one row per prediction, and the merge of shard files in manifest order (and of finished shards' problems and meta)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from worldboot.infer.config import GenerateConfig
from worldboot.infer.predict import Prediction
from worldboot.runs import (
    atomic_path,
    file_lock,
    read_rows,
    write_atomic,
)

# -- files ----------------------------------------------------------------------------------------


def file_stem(sample_id: str) -> str:
    """A file name for a sample id: the id itself when it is a safe name, else a cleaned id
    plus a short hash (two ids never share a name)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", sample_id).strip("._")[:100]
    if stem == sample_id and stem:
        return stem
    digest = hashlib.blake2b(sample_id.encode(), digest_size=4).hexdigest()
    return f"{stem or 'sample'}-{digest}"


def save_png(image: Image.Image, path: Path) -> None:
    """Write a PNG atomically (a temporary file, then a rename)."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write a safetensors file atomically."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))


def row_files(folder: Path) -> list[Path]:
    """``predictions.jsonl`` and every shard file of a predictions folder."""
    return [folder / "predictions.jsonl", *sorted((folder / "shards").glob("*-of-*.jsonl"))]


def merge_rows(folder: Path, order: Sequence[str]) -> int:
    """Fold every shard file of ``folder`` into ``predictions.jsonl`` in manifest order.

    The first row of an id wins; ids not in ``order`` keep their order after the others.
    Shard files are removed once the merged file is in place. Returns the number of rows.
    """
    rank = {sid: i for i, sid in enumerate(order)}
    rows: dict[str, dict[str, Any]] = {}
    shard_files = row_files(folder)[1:]
    for f in row_files(folder):
        for row in read_rows(f):
            rows.setdefault(str(row["id"]), row)
    merged = sorted(rows.values(), key=lambda r: rank.get(str(r["id"]), len(rank)))
    write_atomic(folder / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in merged))
    for f in shard_files:
        f.unlink(missing_ok=True)
    return len(merged)


def merge_if_complete(out: Path, folders: Sequence[Path], count: int, order: Sequence[str]) -> bool:
    """Merge the shards' rows, problems and meta into ``out`` once every shard of ``count`` has
    finished (each leaves a ``done`` marker); returns whether it did."""
    with file_lock(out / ".merge.lock"):
        shard_dirs = [out / "shards" / f"{i}-of-{count}" for i in range(count)]
        if not all((d / "done").is_file() for d in shard_dirs):
            return False
        for folder in folders:
            merge_rows(folder, order)
        lines: list[str] = []
        for d in shard_dirs:
            f = d / "problems.jsonl"
            if f.is_file():
                lines.extend(ln for ln in f.read_text().splitlines(keepends=True) if ln not in lines)
                f.unlink()
        write_atomic(out / "problems.jsonl", "".join(lines))
        metas = [json.loads((d / "meta.json").read_text()) for d in shard_dirs if (d / "meta.json").is_file()]
        failed = [m["status"] for m in metas if m.get("status") != "ok"]
        meta = {
            "stage": "generate",
            "status": failed[0] if failed else "ok",
            "end_time": max((m.get("end_time") or "" for m in metas), default=None),
            "shards": count,
            "shard_meta": metas,
        }
        write_atomic(out / "meta.json", json.dumps(meta, indent=2))
        for d in shard_dirs:
            (d / "done").unlink(missing_ok=True)
    return True


def _rel(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix()


def save_candidates(pred: Prediction, folder: Path, stem: str, score: str) -> list[dict[str, Any]]:
    """Write each candidate of ``pred`` as ``folder/candidates/<stem>/<k>.png``; returns one
    entry per candidate: its image (relative to ``folder``) and, with a verifier, its
    ``score`` (the kind named by ``score``), ``total`` and ``mean``."""
    out = []
    for k, img in enumerate(pred.images):
        path = folder / "candidates" / stem / f"{k}.png"
        save_png(img, path)
        entry: dict[str, Any] = {"image": _rel(path, folder), "score": None}
        if pred.scores is not None:
            entry.update(
                score=float(pred.scores.get(score)[k]),
                total=float(pred.scores.total[k]),
                mean=float(pred.scores.mean[k]),
            )
        out.append(entry)
    return out


def write_prediction(
    folder: Path,
    triplet: Any,
    pred: Prediction,
    source_codes: torch.Tensor,
    seed: int,
    repeat: int,
    cfg: GenerateConfig,
    record: dict[str, Any],
) -> dict[str, Any]:
    """Write one sample's PNGs and codes (atomically) and return its row."""
    stem = file_stem(triplet.id)
    image_path = folder / "images" / f"{stem}.png"
    codes_path = folder / "codes" / f"{stem}.safetensors"
    tensors = {"source": source_codes, "candidates": pred.codes, "chosen": torch.tensor(pred.chosen)}
    with_candidates = pred.scores is not None or len(pred.images) > 1
    candidates = save_candidates(pred, folder, stem, cfg.verifier.score) if with_candidates else []
    if pred.scores is not None:
        tensors.update(verifier_total=pred.scores.total, verifier_mean=pred.scores.mean)
        if pred.scores.reencoded:
            tensors.update(
                verifier_source=pred.scores.source_codes, verifier_candidates=pred.scores.candidate_codes
            )
    save_png(pred.image, image_path)
    save_tensors(tensors, codes_path)
    row: dict[str, Any] = {
        "id": triplet.id,
        "subset": triplet.subset,
        "action": triplet.action,
        "source": triplet.source,
        "target": triplet.target,
        "image": _rel(image_path, folder),
        "codes": _rel(codes_path, folder),
        "seed": seed,
        "repeat": repeat,
        **record,
        "verifier_reencoded": bool(pred.scores is not None and pred.scores.reencoded),
    }
    if with_candidates:
        row["candidates"] = candidates
        row["chosen"] = pred.chosen
    return row
