"""Stratified top-K selection of CDM-annotated pairs (paper, Appendix G, Algorithm 1).

Pairs are sorted by score, descending; then classes take turns, each taking its best pair not
yet taken, until K pairs are taken or every class has run out. The result is a triplet
manifest for world-model training, with the statistics of the paper's Table 5 and a
per-class score plot like its Figure 11.

The dataset statistics (Table 5) and the score plot (Figure 11) are :mod:`worldboot.mining.select_stats`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import defaultdict, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from worldboot.data.schema import Problems, Triplet, iter_jsonl, resolve_under, write_manifest, wrong_types
from worldboot.errors import ConfigError, DataError, UsageError, resolve_path
from worldboot.mining.select_stats import NO_CLASS, dataset_stats, plot_class_scores, stats_markdown
from worldboot.run_guards import held_stage, out_folder
from worldboot.runs import RunDir, atomic_path, write_atomic

T = TypeVar("T")



@dataclass
class SelectConfig:
    """Settings of ``worldboot select``.

    Attributes:
        k: Triplets to select (paper: 7000 per video dataset).
        score: ``mean`` log p per action token, or ``sum`` over the action. The sum favours
            short actions (each token adds a negative term), so the mean is the default.
        name: Dataset name in the triplets' subset, ``synthetic/<name>``.
        plot_classes: Most classes shown in the score plot (the most frequent ones).
        strict: Stop at the first malformed row instead of reporting and skipping it.
        root: Folder every image path must stay under; None: the one ``worldboot annotate``
            checked them against (its ``meta.json``), else the parent of the folder that holds
            the annotations. A row whose image is outside it, or missing, is skipped and counted.
    """

    k: int = 7000
    score: Literal["mean", "sum"] = "mean"
    name: str = "videos"
    plot_classes: int = 30
    strict: bool = False
    root: str | None = None

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values that make no sense."""
        if self.k < 1:
            raise ConfigError(f"k must be at least 1, got {self.k}")
        if self.plot_classes < 1:
            raise ConfigError(f"plot_classes must be at least 1, got {self.plot_classes}")
        if not self.name or "/" in self.name:
            raise ConfigError(f"name must be a non-empty word without '/', got {self.name!r}")


@dataclass
class SelectSummary:
    """What a select run did.

    Attributes:
        rows: Valid annotated rows read.
        selected: Triplets written.
        classes: Classes among the rows.
        exhausted: Classes all of whose rows were selected.
        problems: Rows skipped (malformed, empty action, no score, repeated id).
        manifest: Path of ``synthetic.jsonl``.
    """

    rows: int = 0
    selected: int = 0
    classes: int = 0
    exhausted: int = 0
    problems: int = 0
    manifest: str = ""


def stratified_top_k(
    items: Sequence[T],
    k: int,
    score: Callable[[T], float],
    label: Callable[[T], Hashable],
    class_order: Sequence[Hashable] | None = None,
) -> list[T]:
    """Algorithm 1 of the paper: stratified top-K sampling with action-class uniformity.

    1. Sort the items by score, descending (stable: ties keep their input order).
    2. Visit the classes in round-robin order; each visit takes the class's best item not
       yet taken. A class with none left is passed over.
    3. Stop when ``k`` items are taken or every class has run out.

    Args:
        items: The candidates.
        k: How many to take.
        score: Item -> score (higher is better).
        label: Item -> class.
        class_order: The round-robin order; default: classes sorted by name.

    Returns:
        The taken items, in the order they were taken.
    """
    ranked = sorted(items, key=score, reverse=True)  # sorted() is stable under reverse too
    queues: dict[Hashable, deque[T]] = defaultdict(deque)
    for item in ranked:
        queues[label(item)].append(item)
    order = list(class_order) if class_order is not None else sorted(queues, key=str)
    missing = set(queues) - set(order)
    if missing:
        raise ValueError(f"class_order lacks classes {sorted(map(str, missing))}")
    taken: list[T] = []
    while len(taken) < k and any(queues[c] for c in order):
        for c in order:
            if queues[c]:
                taken.append(queues[c].popleft())
            if len(taken) == k:
                break
    return taken


#: Field -> (allowed JSON types, what to say) of an annotated row; ``label`` may be null.
def _not_finite(row: dict[str, Any]) -> str | None:
    """``"score"`` or ``"duration"`` when the row's scores, or its video's duration, are no
    finite number (NaN, infinite, or an integer too large for a float), else None."""
    def finite(value: Any) -> bool:
        try:
            return math.isfinite(float(value))
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer of 400 digits
            return False

    if not (finite(row["score_mean"]) and finite(row["score_sum"])):
        return "score"
    return "duration" if row.get("duration") is not None and not finite(row["duration"]) else None


_FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "id": ((str, int), "text or an integer"),
    "source": ((str,), "a path"),
    "target": ((str,), "a path"),
    "action": ((str,), "text"),
    "score_mean": ((int, float), "a number"),
    "score_sum": ((int, float), "a number"),
    "label": ((str, type(None)), "text"),
    "duration": ((int, float, type(None)), "a number"),  # the video's, for the dataset's statistics
}


def _annotated_root(folder: Path) -> Path:
    """The data root ``worldboot annotate`` checked the images against (its ``meta.json``),
    else the parent of the annotations' folder, where a mining run keeps its key-frames."""
    try:
        root = json.loads((folder / "meta.json").read_text()).get("data_root")
    except (OSError, ValueError, AttributeError):
        root = None
    return resolve_path(root) if isinstance(root, str) and root else resolve_path(folder).parent


def read_annotated(
    path: str | os.PathLike[str], problems: Problems, root: str | os.PathLike[str] | None = None
) -> list[dict[str, Any]]:
    """Rows of ``annotate``'s output: a folder (all its ``annotated*.jsonl``) or one file.

    Image paths become absolute (relative ones: to their file's folder) and must name a file
    under ``root`` (default: see :class:`SelectConfig`). Malformed rows, wrongly typed fields, rows without a
    finite score, with an empty action, repeating an id, or with an image outside ``root`` or
    missing, go to ``problems``.

    Raises:
        DataError: When nothing is found at ``path``.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("annotated*.jsonl"))
        if not files:
            raise DataError(f"no annotated*.jsonl in {path}: run worldboot annotate first")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"annotated file or folder not found: {path}")
    folder = path if path.is_dir() else path.parent
    root_path = resolve_path(root) if root is not None else _annotated_root(folder)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for file in files:
        base = resolve_path(file).parent
        for lineno, row in iter_jsonl(file, problems):
            missing = [
                k for k in ("id", "source", "target", "action", "score_mean", "score_sum") if k not in row
            ]
            if missing:
                problems.add(file, lineno, f"missing field: {', '.join(missing)}")
                continue
            wrong = wrong_types(row, _FIELD_TYPES)
            if wrong:
                problems.add(file, lineno, wrong)
                continue
            if not row["action"].strip():
                problems.add(file, lineno, "empty action")
                continue
            bad = _not_finite(row)
            if bad:
                problems.add(file, lineno, f"{bad} is not a finite number")
                continue
            rid = str(row["id"])
            if rid in seen:
                problems.add(file, lineno, f"duplicate id: {rid}")
                continue
            images, outside = {}, None
            for k in ("source", "target"):
                try:
                    images[k] = resolve_under(root_path, str(base / row[k]), shown=row[k])
                except DataError as err:  # it escapes the data root, or runs into a symbolic link loop
                    outside = outside or f"{k} image {err}"
            if outside:
                problems.add(file, lineno, outside)
                continue
            missing_images = [k for k, p in images.items() if not p.is_file()]
            if missing_images:
                problems.add(file, lineno, f"{missing_images[0]} image not found: {images[missing_images[0]]}")
                continue
            seen.add(rid)
            row["id"] = rid
            row["action"] = str(row["action"]).strip()
            row["source"], row["target"] = str(images["source"]), str(images["target"])
            row["class"] = str(row.get("label") or NO_CLASS)
            rows.append(row)
    return rows


# -- the run ----------------------------------------------------------------------------------------


def _place_image(src: str, dest: Path) -> None:
    """Hard-link ``src`` at ``dest`` (a copy across file systems), replacing atomically."""
    with atomic_path(dest) as tmp:
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


class _ImagePlacer:
    """Gives each source image one stable place under ``images/``: ``<folder>/<file>`` of the
    key-frame (its video id and frame), with a suffix if two sources would collide."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.placed: dict[str, Path] = {}
        self.taken: set[Path] = set()

    def __call__(self, src: str) -> str:
        if src in self.placed:
            return str(self.placed[src])
        p = Path(src)
        rel = Path("images") / p.parent.name / p.name
        n = 1
        while rel in self.taken:
            rel = Path("images") / p.parent.name / f"{p.stem}-{n}{p.suffix}"
            n += 1
        if not p.is_file():
            raise DataError(f"image not found: {src}")
        _place_image(src, self.out / rel)
        self.taken.add(rel)
        self.placed[src] = self.out / rel
        return str(self.out / rel)


def select_synthetic(
    annotated: str | os.PathLike[str], out_dir: str | os.PathLike[str], cfg: SelectConfig | None = None
) -> SelectSummary:
    """Select ``cfg.k`` triplets with :func:`stratified_top_k` and write the synthetic dataset.

    Writes into ``out_dir``: ``synthetic.jsonl`` (triplets, images under ``images/``),
    ``stats.md`` and ``stats.json`` (Table 5 and per-class counts), ``scores_by_class.png``
    (Figure 11), ``problems.jsonl``.
    """
    cfg = cfg or SelectConfig()
    cfg.validate()
    problems = Problems(strict=cfg.strict)
    rows = read_annotated(annotated, problems, cfg.root)
    if not rows:
        first = problems.items[0] if len(problems) else None
        why = f"; {len(problems)} skipped, the first ({first.file}:{first.line}): {first.reason}" if first else ""
        raise DataError(f"{annotated}: no usable annotated rows{why}")
    out = out_folder(out_dir, "select")
    key = f"score_{cfg.score}"
    summary = SelectSummary(rows=len(rows), problems=len(problems))
    if (out / "images").exists() and held_stage(out) != "select":
        # Only an earlier selection's images are removed: never a folder this stage did not write.
        raise UsageError(f"{out / 'images'} exists and is not from an earlier worldboot select: "
                         "choose an empty or new --out")
    with RunDir(out, cfg, "select") as rd:
        chosen = stratified_top_k(rows, cfg.k, score=lambda r: float(r[key]), label=lambda r: r["class"])
        # Images of an earlier selection in this folder would linger unreferenced.
        shutil.rmtree(out / "images", ignore_errors=True)
        place = _ImagePlacer(out)
        triplets = []
        for r in chosen:
            meta = {
                "class": r["class"],
                "score": float(r[key]),
                "score_kind": cfg.score,
                "score_sum": float(r["score_sum"]),
                "score_mean": float(r["score_mean"]),
                "n_tokens": r.get("n_tokens"),
                "video": r.get("video"),
                "frames": [r.get("source_frame"), r.get("target_frame")],
                "decoding": r.get("decoding"),
            }
            triplets.append(
                Triplet(
                    id=r["id"],
                    subset=f"synthetic/{cfg.name}",
                    source=place(r["source"]),
                    action=r["action"],
                    target=place(r["target"]),
                    meta=meta,
                )
            )
        manifest = out / "synthetic.jsonl"
        write_manifest(manifest, triplets)
        before, after = dataset_stats(rows), dataset_stats(chosen)
        scores: dict[str, list[float]] = defaultdict(list)
        for r in chosen:
            scores[r["class"]].append(float(r[key]))
        after["mean_score_per_class"] = {c: sum(v) / len(v) for c, v in sorted(scores.items())}
        counts_all = before["per_class"]
        summary.classes = len(counts_all)
        summary.exhausted = sum(after["per_class"].get(c, 0) == n for c, n in counts_all.items())
        stats = {"name": cfg.name, "k": cfg.k, "score": cfg.score, "annotated": before, "selected": after}
        write_atomic(out / "stats.json", json.dumps(stats, indent=2))
        write_atomic(out / "stats.md", stats_markdown(cfg.name, before, after, cfg.score))
        plot_class_scores(
            chosen, out / "scores_by_class.png", key, cfg.plot_classes, title=f"synthetic/{cfg.name}"
        )
        problems.write(out / "problems.jsonl")
        summary.selected = len(triplets)
        summary.manifest = str(manifest)
        rd.log(f"selected {summary.selected} of {summary.rows} rows from {summary.classes} classes")
    return summary


def summary_dict(summary: SelectSummary) -> dict[str, Any]:
    """The summary as plain data."""
    return asdict(summary)
