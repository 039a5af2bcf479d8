"""The score-vs-K plot of test-time verification (the paper's Figure 7), with matplotlib's Agg backend.

Input rows are ``{"model", "k", "repeat", "subset", "score"}``: the mean judge score of one
model's predictions when the dynamics model picks among K candidates, for one repeat and one
subset. The plot has a panel per subset; each model is a line of the mean over repeats with the
standard deviation shaded; reference models (e.g. GoT, SmartEdit) are horizontal lines.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from worldboot.data.schema import Problems, iter_jsonl, wrong_types
from worldboot.errors import DataError, UsageError, unless_loop
from worldboot.runs import atomic_path

REQUIRED = ("model", "k", "repeat", "subset", "score")
NUMBERS = ("k", "repeat", "score")

#: Field -> (allowed JSON types, what to say), for :func:`worldboot.data.schema.wrong_types`
#: (a boolean is never a number: JSON's ``true`` is not 1). A CSV cell's number is parsed first.
_K_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "model": ((str, int), "a string"),
    "subset": ((str, int), "a string"),
    "k": ((int, float), "a number"),
    "repeat": ((int, float), "a number"),
    "score": ((int, float), "a number"),
}

#: Text drawn as the user wrote it: no mathtext (``$x^$``) and no TeX, whatever the rcParams say.
_LITERAL: dict[str, Any] = {"parse_math": False, "usetex": False}


def image_formats() -> list[str]:
    """The suffixes (without the dot) that matplotlib writes here: PGF only where its TeX
    program (``rcParams["pgf.texsystem"]``) is installed, as saving one runs it."""
    import shutil

    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    formats = sorted(FigureCanvasAgg.get_supported_filetypes())
    if shutil.which(matplotlib.rcParams["pgf.texsystem"]) is None:
        formats.remove("pgf")
    return formats


def figure_path(out: str | os.PathLike[str], flag: str = "--out") -> Path:
    """The image file to write for ``out``: its suffix names the format, PNG when it has none.

    Args:
        out: The path the user gave.
        flag: How to name it in an error.

    Raises:
        UsageError: For a folder, or a suffix matplotlib cannot write (naming those it can).
    """
    path = Path(out)
    if path.is_dir():
        raise UsageError(f"{flag} {out}: is a folder: name an image file to write")
    if not path.suffix:
        path = path.with_suffix(".png")
    formats = image_formats()
    if path.suffix[1:].lower() not in formats:
        raise UsageError(f"{flag} {out}: cannot write {path.suffix} images "
                         f"(matplotlib writes {', '.join('.' + f for f in formats)})")
    return path


def _whole(row: dict[str, Any], key: str, least: int) -> int:
    """``row[key]`` (a number) as an integer of at least ``least``, or ValueError saying why."""
    value = row[key]
    if not (math.isfinite(value) and float(value).is_integer() and value >= least):
        raise ValueError(f"{key} must be an integer of at least {least}, got {value:g}")
    return int(value)


def _k_row(row: dict[str, Any]) -> dict[str, Any]:
    """A checked row of K results; ValueError with the reason (for a problem report) otherwise.

    Args:
        row: The fields as read: JSON values, or CSV cells (text). A number written as text is
            read as a number (a CSV cell, or a JSON string such as ``"4"``).
    """
    missing = [k for k in REQUIRED if row.get(k) in (None, "")]
    if missing:
        raise ValueError(f"missing field: {', '.join(missing)}")
    row = dict(row)
    for key in NUMBERS:
        if isinstance(row[key], str):
            try:
                row[key] = float(row[key].strip())
            except ValueError:
                raise ValueError(f"field {key!r} must be a number, got {row[key]!r}") from None
    wrong = wrong_types(row, _K_TYPES)
    if wrong:
        raise ValueError(wrong)
    for key in NUMBERS:
        try:
            float(row[key])
        except OverflowError:  # a JSON integer of 400 digits
            raise ValueError(f"bad value: field {key!r} is too large ({len(str(row[key]))} digits)") from None
    score = float(row["score"])
    if not math.isfinite(score):
        raise ValueError(f"score is not a finite number: {row['score']!r}")
    return {"model": str(row["model"]), "k": _whole(row, "k", 1), "repeat": _whole(row, "repeat", 0),
            "subset": str(row["subset"]), "score": score}


def _csv_rows(path: Path, problems: Problems) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line number, {column: cell})`` for each record of a CSV file with a header row; the
    line is the one where the record starts (a quoted cell may span lines). A byte-order mark
    (as Excel saves) is not part of the first column's name."""
    import csv

    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader, [])
            while True:
                start = reader.line_num + 1
                cells = next(reader, None)
                if cells is None:
                    return
                if cells:  # not a blank line
                    yield start, dict(zip(header, cells, strict=False))
        except csv.Error as err:  # a cell over the field size limit, an unclosed quote in strict mode
            problems.add(path, reader.line_num, f"malformed CSV: {err}")


def read_k_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows from a JSONL (``verification.jsonl``) or CSV file with the fields of :data:`REQUIRED`.

    ``k`` must be an integer of at least 1 (the x axis is logarithmic), ``repeat`` one of at least
    0 and ``score`` a finite number; a boolean is none of them.

    Raises:
        DataError: Naming the file and line of a malformed row.
    """
    path = Path(path)
    if not path.is_file():
        raise unless_loop(path, DataError(f"K results not found: {path}"))
    problems = Problems(strict=True)
    items = _csv_rows(path, problems) if path.suffix.lower() == ".csv" else iter_jsonl(path, problems)
    rows: list[dict[str, Any]] = []
    for lineno, row in items:
        try:
            rows.append(_k_row(row))
        except ValueError as err:
            problems.add(path, lineno, str(err))  # strict: raises DataError naming file and line
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


def _draw_panel(ax: Any, subset: str, stats: Mapping[str, Mapping[int, tuple[float, float, int]]],
                models: list[str], refs: Mapping[str, float], colours: list[str], ylabel: str,
                legend: dict[str, Any]) -> None:
    """One subset's panel: each model's mean score against K with its spread, the reference
    lines; the first handle of each label goes into ``legend``."""
    for mi, model in enumerate(models):
        points = stats.get(model)
        if not points:
            continue
        ks = sorted(points)
        mean = [points[k][0] for k in ks]
        std = [points[k][1] for k in ks]
        colour = colours[mi % len(colours)]
        legend.setdefault(model, ax.plot(ks, mean, marker="o", color=colour)[0])
        ax.fill_between(ks, [m - s for m, s in zip(mean, std, strict=True)],
                        [m + s for m, s in zip(mean, std, strict=True)], color=colour, alpha=0.2)
    ks = sorted({k for points in stats.values() for k in points})  # every model's
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    for ri, (label, value) in enumerate(refs.items()):
        legend.setdefault(label, ax.axhline(value, linestyle=("--", ":", "-.")[ri % 3], color="grey"))
    ax.set_title(subset, **_LITERAL)
    ax.set_xlabel("K")
    ax.set_ylabel(ylabel, **_LITERAL)
    ax.grid(alpha=0.3)


def _add_legend(fig: Any, handles: Mapping[str, Any], order: list[str]) -> None:
    """The figure's legend, outside the axes right of the panels, its labels drawn as written."""
    # Placeholder labels, then the real ones: matplotlib leaves out a label starting with "_".
    box = fig.legend([handles[label] for label in order], [f"#{i}" for i in range(len(order))],
                     loc="outside right center", fontsize=9)  # clear of the title
    for text, label in zip(box.get_texts(), order, strict=True):
        text.update({"text": label, **_LITERAL})


def plot_score_vs_k(
    rows: Iterable[Mapping[str, Any]],
    out: str | os.PathLike[str],
    references: Mapping[str, float] | None = None,
    title: str = "Test-time verification",
    ylabel: str = "Judge score",
) -> Path:
    """Draw Figure 7 and save it (format from the suffix, PNG when it has none; see :func:`figure_path`).

    The title, labels, subsets and model names are drawn as written (a ``$`` is no mathtext),
    and every model is in the legend (a name may start with ``_``). The K axis is logarithmic,
    with a tick at every K of any model in the panel.

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
        UsageError: When ``out`` names a format matplotlib cannot write.
    """
    out = figure_path(out)  # before anything is drawn
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
    legend: dict[str, Any] = {}  # label -> handle, over every panel (a model may miss a subset)
    for idx, subset in enumerate(subsets):
        _draw_panel(axes[idx // cols][idx % cols], subset, stats[subset], models, refs, colours, ylabel, legend)
    for idx in range(len(subsets), nrows * cols):
        axes[idx // cols][idx % cols].axis("off")
    _add_legend(fig, legend, [label for label in [*models, *refs] if label in legend])
    fig.suptitle(title, **_LITERAL)
    with atomic_path(out) as tmp:
        # The format by name: the temporary file's suffix is out's, and matplotlib wants it lower-case.
        fig.savefig(tmp, dpi=120, format=out.suffix[1:].lower())
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
