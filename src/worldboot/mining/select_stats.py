"""Statistics of a mined dataset (the paper's Table 5) and the per-class score plot (Figure 11)."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from worldboot.runs import atomic_path

# -- statistics (Table 5) and the plot (Figure 11) -------------------------------------------------

#: Class of rows whose ``label`` is empty.
NO_CLASS = "(none)"


def dataset_stats(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The columns of the paper's Table 5 for a set of annotated rows.

    Returns:
        ``videos``, ``avg_length_s`` and ``total_length_h`` (from the rows' ``duration``;
        None when absent), ``samples``, ``avg_opv`` (distinct key-frames per video),
        ``avg_apv`` (actions per video), ``avg_wpa`` (words per action), ``classes``, and
        ``per_class`` counts.
    """
    videos: dict[str, dict[str, Any]] = {}
    per_class: dict[str, int] = defaultdict(int)
    words = 0
    for row in rows:
        v = videos.setdefault(
            str(row.get("video", row["id"])), {"frames": set(), "pairs": 0, "duration": None}
        )
        v["pairs"] += 1
        v["frames"].update((row.get("source_frame", row["source"]), row.get("target_frame", row["target"])))
        if row.get("duration") is not None:
            v["duration"] = float(row["duration"])
        per_class[str(row.get("class") or row.get("label") or NO_CLASS)] += 1
        words += len(str(row["action"]).split())
    n_videos = len(videos)
    durations = [v["duration"] for v in videos.values() if v["duration"] is not None]
    return {
        "videos": n_videos,
        "avg_length_s": sum(durations) / len(durations) if durations else None,
        "total_length_h": sum(durations) / 3600 if durations else None,
        "samples": len(rows),
        "avg_opv": sum(len(v["frames"]) for v in videos.values()) / n_videos if n_videos else 0.0,
        "avg_apv": sum(v["pairs"] for v in videos.values()) / n_videos if n_videos else 0.0,
        "avg_wpa": words / len(rows) if rows else 0.0,
        "classes": len(per_class),
        "per_class": dict(sorted(per_class.items())),
    }


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def stats_markdown(name: str, before: Mapping[str, Any], after: Mapping[str, Any], score: str) -> str:
    """Table 5 (before and after selection) and per-class counts as Markdown."""
    lines = [
        f"# Synthetic trajectories: {name}",
        "",
        "OPV: observations (key-frames) per video, APV: actions per video, WPA: words per action.",
        "",
        "| set | videos | avg. length | total length | #samples | avg. OPV | avg. APV | avg. WPA | classes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for title, s in (("annotated (before selection)", before), ("selected", after)):
        length = f"{_fmt(s['avg_length_s'])} s" if s["avg_length_s"] is not None else "n/a"
        total = f"{_fmt(s['total_length_h'])} h" if s["total_length_h"] is not None else "n/a"
        lines.append(
            f"| {title} | {_fmt(s['videos'])} | {length} | {total} | {_fmt(s['samples'])} | "
            f"{_fmt(s['avg_opv'])} | {_fmt(s['avg_apv'])} | {_fmt(s['avg_wpa'])} | {_fmt(s['classes'])} |"
        )
    lines += [
        "",
        f"## Per class (score: {score} log-likelihood of the action)",
        "",
        "| class | annotated | selected | mean score (selected) |",
        "| --- | ---: | ---: | ---: |",
    ]
    means = after.get("mean_score_per_class", {})
    for cls in sorted(set(before["per_class"]) | set(after["per_class"])):
        lines.append(
            f"| {cls} | {_fmt(before['per_class'].get(cls, 0))} | {_fmt(after['per_class'].get(cls, 0))} | "
            f"{_fmt(means.get(cls), 3)} |"
        )
    return "\n".join(lines) + "\n"


def plot_class_scores(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    score_key: str,
    max_classes: int = 30,
    title: str = "",
) -> None:
    """Box plot of the scores per class (the most frequent ``max_classes``), as in Figure 11."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_class: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        by_class[str(row["class"])].append(float(row[score_key]))
    classes = sorted(by_class, key=lambda c: (-len(by_class[c]), c))[:max_classes]
    classes.sort()
    height = max(2.5, 0.3 * len(classes) + 1.2)
    fig, ax = plt.subplots(figsize=(7, height))
    if classes:
        ax.boxplot([by_class[c] for c in classes], orientation="horizontal", widths=0.6, showfliers=True)
        ax.set_yticks(range(1, len(classes) + 1), [f"{c} ({len(by_class[c])})" for c in classes])
    ax.set_xlabel(
        f"CDM log-likelihood of the action ({'mean per token' if score_key == 'score_mean' else 'sum'})"
    )
    shown = (
        f"{len(classes)} of {len(by_class)} classes"
        if len(by_class) > len(classes)
        else f"{len(classes)} classes"
    )
    ax.set_title(f"{title} ({shown})" if title else shown)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
