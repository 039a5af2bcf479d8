"""What ``worldboot evaluate`` reads: the benchmark, and each model's predictions folder (``worldboot generate``'s ``predictions.jsonl``, or any folder of images named by sample id)."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from worldboot.data.schema import Problems, Triplet, iter_jsonl, read_manifest, resolve_under, visible_files
from worldboot.errors import DataError, resolve_path, unless_loop

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


# -- inputs --------------------------------------------------------------------------------------


def load_bench(path: str | os.PathLike[str], problems: Problems, root: str | None = None) -> list[Triplet]:
    """Triplets of a benchmark: a JSONL manifest, or AURORA-BENCH's ``test.json`` (through
    :mod:`worldboot.data.aurora`).

    Raises:
        DataError: When the file is missing, of an unknown kind, or holds no usable sample.
    """
    path = Path(path)
    if not path.is_file():
        raise unless_loop(path, DataError(f"benchmark not found: {path}"))
    if path.suffix.lower() == ".json":
        from worldboot.data.aurora import load_aurora_bench

        # Subsets without targets (clevr, emu, epic) stay: the judge needs no target.
        triplets = load_aurora_bench(path, root=root or None, problems=problems, require_target=False)
    else:
        triplets = read_manifest(path, problems, root=root or None)
    if not triplets:
        why = f"; {len(problems)} problem(s), the first: {problems.items[0]}" if len(problems) else ""
        raise DataError(f"{path}: no usable sample{why}")
    seen: set[str] = set()
    unique = []
    for t in triplets:
        if t.id in seen:
            problems.add(path, 0, f"duplicate id: {t.id}")
            continue
        seen.add(t.id)
        unique.append(t)
    return unique


@dataclass
class StoredCandidate:
    """One of several sampled predictions for a sample.

    Attributes:
        image: Absolute path.
        score: The dynamics model's score (log-likelihood of the action; higher is better), if any.
    """

    image: str
    score: float | None = None


@dataclass
class StoredPrediction:
    """A model's prediction for one sample.

    Attributes:
        image: Absolute path of the prediction (the chosen candidate when there are several).
        candidates: All sampled candidates (empty for single predictions).
        chosen: Index of the candidate ``image`` is, when known.
        file: The file that lists the prediction (``predictions.jsonl``), or the image itself.
        line: The 1-based line of ``file`` (0 for an image).
    """

    image: str | None
    candidates: list[StoredCandidate] = field(default_factory=list)
    chosen: int | None = None
    file: str = ""
    line: int = 0


def _read_predictions_jsonl(pred_dir: Path, problems: Problems) -> dict[str, StoredPrediction]:
    path = pred_dir / "predictions.jsonl"
    out: dict[str, StoredPrediction] = {}
    for lineno, row in iter_jsonl(path, problems):
        if "id" not in row:
            problems.add(path, lineno, "missing field: id")
            continue
        sid = str(row["id"])
        if sid in out:
            problems.add(path, lineno, f"duplicate id: {sid}")
            continue
        try:
            candidates = []
            for c in row.get("candidates") or []:
                cpath = c["image"] if isinstance(c, dict) else c
                cscore = c.get("score") if isinstance(c, dict) else None
                candidates.append(
                    StoredCandidate(str(resolve_under(pred_dir, cpath)), float(cscore) if cscore is not None else None)
                )
            chosen = row.get("chosen")
            chosen = int(chosen) if chosen is not None else None
            if chosen is not None and not 0 <= chosen < len(candidates):
                problems.add(path, lineno, f"chosen {chosen} is not a candidate index")
                chosen = None
            if row.get("image"):
                image = str(resolve_under(pred_dir, row["image"]))
            elif chosen is not None:
                image = candidates[chosen].image
            else:
                problems.add(path, lineno, "missing field: image")
                continue
        except DataError as err:
            problems.add(path, lineno, str(err))
            continue
        except (KeyError, TypeError, ValueError) as err:
            problems.add(path, lineno, f"bad candidates: {type(err).__name__}: {err}")
            continue
        out[sid] = StoredPrediction(image=image, candidates=candidates, chosen=chosen, file=str(path), line=lineno)
    return out


def read_predictions(pred_dir: str | os.PathLike[str], problems: Problems) -> dict[str, StoredPrediction]:
    """A model's predictions, keyed by sample id.

    Reads ``predictions.jsonl`` when present; otherwise indexes every image under the folder by
    its path without suffix, and by its file name without suffix where no other image has that
    name (``<id>.png``, ``images/<id>.png`` and ``<subset>/<id>.jpg`` all work), hidden names left
    out (:func:`~worldboot.data.schema.visible_files`: a write a kill cut short).

    Raises:
        DataError: When the folder is missing or holds neither file nor image.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise unless_loop(pred_dir, DataError(f"predictions directory not found: {pred_dir}"))
    if (pred_dir / "predictions.jsonl").is_file():
        return _read_predictions_jsonl(pred_dir, problems)
    out: dict[str, StoredPrediction] = {}
    images = [p for p in visible_files(pred_dir, IMAGE_SUFFIXES) if p.is_file()]
    stems = Counter(p.stem for p in images)
    for path in images:
        rel = path.relative_to(pred_dir).with_suffix("").as_posix()
        keys = [rel] + ([rel[len("images/") :]] if rel.startswith("images/") else [])
        for key in keys:
            if key in out:
                problems.add(path, 0, f"two images for id {key}: {out[key].image} is used")
                continue
            out[key] = StoredPrediction(image=str(resolve_path(path)), file=str(path))
    for path in images:  # <subset>/<id>.png: the name alone, where it names one image
        if stems[path.stem] == 1 and path.stem not in out:
            out[path.stem] = StoredPrediction(image=str(resolve_path(path)), file=str(path))
    if not out:
        raise DataError(f"{pred_dir} has no predictions.jsonl and no images")
    return out
