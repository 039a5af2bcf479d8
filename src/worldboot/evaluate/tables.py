"""Result tables in Markdown, CSV and JSON, shaped like the paper's Tables 1-4.

Image predictions (Tables 2 and 4): a row per model (Copy included), a column per subset and
``Avg.``, one table per metric, plus the ES/ME breakdown of Table 3 and the number of scored
samples per subset. ``Avg.`` is the mean of the subset means (the paper's "AURORA Avg."), over
the subsets where the model has at least one scored sample. A cell whose subset was only partly
scored shows ``(scored/total)`` after the value.

Action predictions (Table 1): a row per model, a column per text metric.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

AVG = "Avg."


@dataclass(frozen=True)
class Metric:
    """A column family of the report.

    Attributes:
        key: Field name in ``results.jsonl`` rows.
        label: Heading in the tables.
        higher_is_better: Direction, shown as an arrow.
        digits: Decimals shown in Markdown.
    """

    key: str
    label: str
    higher_is_better: bool = True
    digits: int = 3

    @property
    def heading(self) -> str:
        """The label with its arrow."""
        return f"{self.label} ({'↑' if self.higher_is_better else '↓'})"


#: Image metrics in report order.
IMAGE_METRICS = (
    Metric("judge_score", "Judge score: min(ES, ME), 0-10"),
    Metric("editing_success", "Editing success (ES), 0-10"),
    Metric("minimal_editing", "Minimal editing (ME), 0-10"),
    Metric("l1", "L1", higher_is_better=False),
    Metric("clip_i", "CLIP-I"),
    Metric("clip_t", "CLIP-T"),
    Metric("dino", "DINO"),
)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def aggregate(
    rows: Iterable[Mapping[str, Any]], models: Sequence[str], subsets: Sequence[str], totals: Mapping[str, int],
    metrics: Sequence[Metric] = IMAGE_METRICS,
) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """Means and counts per metric, model and subset.

    Args:
        rows: Per-sample rows with ``model``, ``subset`` and metric fields (None = not scored).
        models: Row order.
        subsets: Column order.
        totals: Number of benchmark samples per subset.
        metrics: Which metrics.

    Returns:
        ``{metric: {model: {subset or "Avg.": {"mean", "scored", "total"}}}}``.
    """
    buckets: dict[tuple[str, str, str], list[float]] = {}
    for row in rows:
        for m in metrics:
            value = row.get(m.key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            buckets.setdefault((m.key, row["model"], row["subset"]), []).append(float(value))
    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for m in metrics:
        per_model: dict[str, dict[str, dict[str, Any]]] = {}
        for model in models:
            cells: dict[str, dict[str, Any]] = {}
            for subset in subsets:
                values = buckets.get((m.key, model, subset), [])
                cells[subset] = {"mean": _mean(values), "scored": len(values), "total": int(totals.get(subset, 0))}
            means = [c["mean"] for c in cells.values() if c["mean"] is not None]
            cells[AVG] = {
                "mean": _mean(means),
                "scored": sum(c["scored"] for c in cells.values()),
                "total": sum(c["total"] for c in cells.values()),
            }
            per_model[model] = cells
        out[m.key] = per_model
    return out


def _fmt(cell: Mapping[str, Any], digits: int) -> str:
    if cell["mean"] is None:
        return "–"
    text = f"{cell['mean']:.{digits}f}"
    if cell["scored"] < cell["total"]:
        text += f" ({cell['scored']}/{cell['total']})"
    return text


def _md_table(header: Sequence[str], body: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def present_metrics(
    summary: Mapping[str, Any], metrics: Sequence[Metric] = IMAGE_METRICS, required: Sequence[str] = ()
) -> list[Metric]:
    """The metrics that have at least one scored value, and those in ``required`` (shown even
    when nothing was scored, e.g. the judge's columns when the judge was down)."""
    return [
        m
        for m in metrics
        if m.key in summary
        and (m.key in required or any(c["scored"] for cells in summary[m.key].values() for c in cells.values()))
    ]


def render_markdown(
    summary: Mapping[str, Any],
    models: Sequence[str],
    subsets: Sequence[str],
    primary: str,
    header_lines: Sequence[str] = (),
    notes: Sequence[str] = (),
    required: Sequence[str] = (),
) -> str:
    """The report as Markdown: one table per metric, the ES/ME breakdown, scored counts, notes.

    Args:
        summary: :func:`aggregate`'s output.
        models: Row order.
        subsets: Column order.
        primary: Metric key whose counts fill the "scored samples" table.
        header_lines: Lines under the title (bench, judge).
        notes: Lines at the end (skipped metrics, judge usage, problems).
        required: Metrics shown even without any scored value.
    """
    cols = [*subsets, AVG]
    parts = ["# Evaluation", "", *header_lines]
    shown = present_metrics(summary, required=required)
    for m in shown:
        body = [[model, *(_fmt(summary[m.key][model][c], m.digits) for c in cols)] for model in models]
        parts += ["", f"## {m.heading}", "", _md_table(["Model", *cols], body)]
    if any(m.key == "editing_success" for m in shown):
        # The paper's Table 3: subsets down, (model, ES/ME) across.
        header = ["Subset"] + [f"{model} {k}" for model in models for k in ("ES", "ME")]
        body = []
        for c in cols:
            row = [c]
            for model in models:
                for key in ("editing_success", "minimal_editing"):
                    cell = summary[key][model][c]
                    row.append("–" if cell["mean"] is None else f"{cell['mean']:.2f}")
            body.append(row)
        score_row = ["Judge"]
        for model in models:
            cell = summary["judge_score"][model][AVG]
            score_row += ["–" if cell["mean"] is None else f"{cell['mean']:.2f}", ""]
        body.append(score_row)
        parts += ["", "## ES / ME breakdown (as the paper's Table 3)", "", _md_table(header, body)]
    if primary in summary:
        body = [
            [model, *(f"{summary[primary][model][c]['scored']}/{summary[primary][model][c]['total']}" for c in cols)]
            for model in models
        ]
        label = next((m.label for m in IMAGE_METRICS if m.key == primary), primary)
        parts += ["", f"## Scored samples ({label})", "", _md_table(["Model", *subsets, "All"], body)]
    if notes:
        parts += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    return "\n".join(parts) + "\n"


def render_csv(
    summary: Mapping[str, Any], models: Sequence[str], subsets: Sequence[str], required: Sequence[str] = ()
) -> str:
    """Wide CSV: a row per (metric, model); a column per subset and ``Avg.``, then scored counts."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    cols = [*subsets, AVG]
    writer.writerow(["metric", "model", *cols, *(f"scored:{c}" for c in cols), *(f"total:{c}" for c in cols)])
    for m in present_metrics(summary, required=required):
        for model in models:
            cells = summary[m.key][model]
            writer.writerow(
                [
                    m.key,
                    model,
                    *("" if cells[c]["mean"] is None else f"{cells[c]['mean']:.6g}" for c in cols),
                    *(cells[c]["scored"] for c in cols),
                    *(cells[c]["total"] for c in cols),
                ]
            )
    return buf.getvalue()


def summary_json(
    summary: Mapping[str, Any],
    models: Sequence[str],
    subsets: Sequence[str],
    extra: Mapping[str, Any],
    required: Sequence[str] = (),
) -> dict[str, Any]:
    """The machine-readable report: metrics with labels and directions, plus ``extra``."""
    metrics = {
        m.key: {"label": m.label, "higher_is_better": m.higher_is_better, "values": summary[m.key]}
        for m in present_metrics(summary, required=required)
    }
    return {"models": list(models), "subsets": list(subsets), "average": AVG, "metrics": metrics, **extra}


# -- action tables (Table 1) -------------------------------------------------------------------

ACTION_COLUMNS = (("bertscore", "BS"), ("rouge1", "R-1"), ("rougeL", "R-L"), ("bleu", "BLEU"))


def render_action_markdown(
    summaries: Mapping[str, Mapping[str, Any]], bertscore_label: str, notes: Sequence[str] = ()
) -> str:
    """Table 1 as Markdown: a row per model, then one table per subset."""
    labels = {"bertscore": bertscore_label, "rouge1": "R-1", "rougeL": "R-L", "bleu": "BLEU"}
    keys = [k for k, _ in ACTION_COLUMNS if any(s["overall"].get(k) is not None for s in summaries.values())]

    def table(pick) -> str:
        body = []
        for model, summ in summaries.items():
            cell = pick(summ)
            body.append(
                [model, *("–" if cell.get(k) is None else f"{cell[k]:.3f}" for k in keys), f"{cell['scored']}/{cell['total']}"]
            )
        return _md_table(["Model", *(labels[k] for k in keys), "scored"], body)

    parts = ["# Action prediction", "", table(lambda s: s["overall"])]
    subsets = sorted({sub for s in summaries.values() for sub in s["subsets"]})
    for sub in subsets:
        parts += ["", f"## {sub}", "", table(lambda s, sub=sub: s["subsets"].get(sub, {"scored": 0, "total": 0}))]
    if notes:
        parts += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    return "\n".join(parts) + "\n"


def render_action_csv(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """A row per (model, subset or ``all``) with the four metrics and counts."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["model", "subset", *(k for k, _ in ACTION_COLUMNS), "scored", "total"])
    for model, summ in summaries.items():
        for name, cell in [("all", summ["overall"]), *summ["subsets"].items()]:
            writer.writerow(
                [model, name, *("" if cell.get(k) is None else f"{cell[k]:.6g}" for k, _ in ACTION_COLUMNS),
                 cell["scored"], cell["total"]]
            )
    return buf.getvalue()
