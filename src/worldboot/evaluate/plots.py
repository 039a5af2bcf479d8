"""The score-vs-K plot of test-time verification (the paper's Figure 7), with matplotlib's Agg backend.

Input rows are ``{"model", "k", "repeat", "subset", "score"}``: the mean judge score of one
model's predictions when the dynamics model picks among K candidates, for one repeat and one
subset. The plot has a panel per subset; each model is a line of the mean over repeats with the
standard deviation shaded; reference models (e.g. GoT, SmartEdit) are horizontal lines.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from worldboot.data.schema import Problems, iter_jsonl
from worldboot.errors import DataError, unless_loop
from worldboot.runs import atomic_path

REQUIRED = ("model", "k", "repeat", "subset", "score")


def read_k_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows from a JSONL (``verification.jsonl``) or CSV file with the fields of :data:`REQUIRED`.

    Raises:
        DataError: Naming the file and line of a malformed row.
    """
    import csv

    path = Path(path)
    if not path.is_file():
        raise unless_loop(path, DataError(f"K results not found: {path}"))
    rows: list[dict[str, Any]] = []
    if path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            items = [(i + 2, r) for i, r in enumerate(csv.DictReader(fh))]
    else:
        items = list(iter_jsonl(path, Problems(strict=True)))
    for lineno, row in items:
        missing = [k for k in REQUIRED if not isinstance(row, dict) or row.get(k) in (None, "")]
        if missing:
            raise DataError(f"{path}:{lineno}: missing field: {', '.join(missing)}")
        try:
            got = {"model": str(row["model"]), "k": int(row["k"]), "repeat": int(row["repeat"]),
                   "subset": str(row["subset"]), "score": float(row["score"])}
        except (TypeError, ValueError, OverflowError) as err:  # OverflowError: int("inf"), 1e400 digits
            raise DataError(f"{path}:{lineno}: bad value: {err}") from None
        if not math.isfinite(got["score"]):
            raise DataError(f"{path}:{lineno}: score is not a finite number: {row['score']!r}")
        rows.append(got)
    return rows


def k_statistics(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, dict[int, tuple[float, float, int]]]]:
    """``{subset: {model: {k: (mean, std, repeats)}}}`` over repeats (population std)."""
    groups: dict[tuple[str, str, int], list[float]] = {}
    for r in rows:
        groups.setdefault((r["subset"], r["model"], int(r["k"])), []).append(float(r["score"]))
    out: dict[str, dict[str, dict[int, tuple[float, float, int]]]] = {}
    for (subset, model, k), values in groups.items():
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        out.setdefault(subset, {}).setdefault(model, {})[k] = (mean, std, len(values))
    return out


def plot_score_vs_k(
    rows: Iterable[Mapping[str, Any]],
    out: str | os.PathLike[str],
    references: Mapping[str, float] | None = None,
    title: str = "Test-time verification",
    ylabel: str = "Judge score",
) -> Path:
    """Draw Figure 7 and save it (format from the suffix: ``.png``, ``.pdf``, ``.svg``).

    Args:
        rows: K results (see the module docstring).
        out: The image file.
        references: ``{label: score}`` drawn as horizontal dashed lines in every panel, named
            in the legend (outside the axes, right of the panels, with the models).
        title: Figure title.
        ylabel: Y-axis label.

    Returns:
        The written path.

    Raises:
        DataError: When there are no rows.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = k_statistics(rows)
    if not stats:
        raise DataError("no K results to plot")
    subsets = sorted(stats, key=lambda s: (s == "All", s))
    cols = min(3, len(subsets))
    nrows = math.ceil(len(subsets) / cols)
    models = sorted({m for per in stats.values() for m in per})
    refs = {f"{label} (reference)": value for label, value in (references or {}).items()}
    # The legend (models and reference lines) sits outside the axes, right of the panels and below
    # the title, so it covers no title, panel label or curve; the figure is widened by its width.
    longest = max(len(label) for label in [*models, *refs])
    legend_width = 0.9 + 0.075 * longest
    height = max(3.4 * nrows + 0.3, 1.2 + 0.25 * (len(models) + len(refs)))  # room for the legend's height
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols + legend_width, height), squeeze=False,
                             layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for idx, subset in enumerate(subsets):
        ax = axes[idx // cols][idx % cols]
        for mi, model in enumerate(models):
            points = stats[subset].get(model)
            if not points:
                continue
            ks = sorted(points)
            mean = [points[k][0] for k in ks]
            std = [points[k][1] for k in ks]
            colour = colours[mi % len(colours)]
            ax.plot(ks, mean, marker="o", color=colour, label=model)
            ax.fill_between(ks, [m - s for m, s in zip(mean, std, strict=True)],
                            [m + s for m, s in zip(mean, std, strict=True)], color=colour, alpha=0.2)
            ax.set_xscale("log", base=2)
            ax.set_xticks(ks, [str(k) for k in ks])
        for ri, (label, value) in enumerate(refs.items()):
            ax.axhline(value, linestyle=("--", ":", "-.")[ri % 3], color="grey", label=label)
        ax.set_title(subset)
        ax.set_xlabel("K")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for idx in range(len(subsets), nrows * cols):
        axes[idx // cols][idx % cols].axis("off")
    legend: dict[str, Any] = {}  # label -> handle, over every panel (a model may miss a subset)
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="outside right center", fontsize=9)  # clear of the title
    fig.suptitle(title)
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return out


def plot_recognition_weights(
    cache_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    n: int = 6,
    ids: list[str] | None = None,
    seed: int = 0,
) -> list[str]:
    """Figure 3 in miniature: source, target and the Eq. 2 recognition weights over the target.

    The weights of each pair (squared L2 distance of the pre-quantisation features at every
    token position, from the token cache) are drawn as a heatmap on the token grid, upsampled
    over the target image, and normalised to mean 1 as the loss uses them.

    Args:
        cache_dir: A token cache (``worldboot tokenize``).
        out: PNG path.
        n: Number of pairs when ``ids`` is not given (drawn with ``seed``).
        ids: Triplet ids to draw.
        seed: Picks the pairs.

    Returns:
        The ids drawn.

    Raises:
        DataError: Unknown ids or an empty cache.
    """
    import random
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from worldboot.data.cache import TokenCache
    from worldboot.images import open_image

    cache = TokenCache(cache_dir)
    if not cache.records:
        raise DataError(f"token cache {cache_dir} holds no pair")
    if ids is None:
        ids = sorted(random.Random(seed).sample(cache.ids, min(n, len(cache.ids))))
    records = [cache.record(i) for i in ids]
    grid = int(round(cache.image_seq_len**0.5))
    fig, axes = plt.subplots(len(records), 3, figsize=(7.5, 2.5 * len(records)), squeeze=False)
    for row, rec in zip(axes, records, strict=True):
        src, tgt = open_image(rec["source"]), open_image(rec["target"])
        w = cache.weights(rec["id"]).numpy().reshape(grid, grid)
        w = w / w.mean() if w.mean() > 0 else np.ones_like(w)
        row[0].imshow(src)
        row[1].imshow(tgt)
        row[2].imshow(tgt)
        heat = row[2].imshow(w, cmap="inferno", alpha=0.6, extent=(0, tgt.width, tgt.height, 0),
                             interpolation="nearest")
        fig.colorbar(heat, ax=row[2], fraction=0.046)
        row[0].set_title("source", fontsize=8)
        # The action, wrapped to the image's width (a long one would run over its neighbours).
        row[1].set_title(textwrap.fill(textwrap.shorten(rec["action"], 80), 38), fontsize=8)
        row[2].set_title("recognition weights", fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return list(ids)
