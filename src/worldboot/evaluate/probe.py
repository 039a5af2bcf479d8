"""The preference probe (paper Section 2, Figures 2 and 10): does a model prefer real trajectories?

For every triplet (o_s, a, o_t) and each of the four negatives (random action, random
observation, copy observation, inverse observation), in both directions:

* world: log p(o_t | o_s, a), the target image tokens given the source and the action;
* dynamics: log p(a | o_s, o_t), the action text given the two observations;

the reference is preferred when its log-likelihood is strictly higher than the negative's.
A manipulation that leaves a direction's completion and condition unchanged cannot be told
apart in that direction and is skipped there (none of the four does: random action changes
the world model's condition and the dynamics model's completion).

Scores are per-token means by default: in the dynamics direction a random action has another
length than the reference, and a sum would prefer whichever text is shorter. ``score=total``
gives the sum, as some papers report.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from worldboot.config import write_atomic
from worldboot.data.negatives import NEGATIVE_KINDS, make_negatives
from worldboot.data.schema import Problems, Triplet, content_hash
from worldboot.errors import DataError
from worldboot.images import open_image
from worldboot.models.backbone import Backbone

DIRECTIONS = ("world", "dynamics")


@dataclass
class ProbeConfig:
    """What to probe.

    Attributes:
        kinds: Negative kinds (default: the paper's four).
        directions: ``world`` and/or ``dynamics``.
        score: ``mean`` log-probability per completion token, or ``total``.
        batch_size: Sequences per forward pass.
        seed: Seeds the random negatives.
        max_per_subset: Probe at most this many triplets per subset (0 = all).
    """

    kinds: list[str] = field(default_factory=lambda: list(NEGATIVE_KINDS))
    directions: list[str] = field(default_factory=lambda: list(DIRECTIONS))
    score: Literal["mean", "total"] = "mean"
    batch_size: int = 8
    seed: int = 0
    max_per_subset: int = 0


def _example(backbone: Backbone, t: Triplet, codes: dict[str, torch.Tensor], direction: str):
    src, tgt = codes[t.source], codes[t.target]
    if direction == "world":
        return backbone.world_example(src, t.action, tgt)
    return backbone.dynamics_example(src, tgt, t.action)


def _limit(triplets: Sequence[Triplet], per_subset: int) -> list[Triplet]:
    if per_subset <= 0:
        return list(triplets)
    seen: dict[str, int] = defaultdict(int)
    out = []
    for t in triplets:
        if seen[t.subset] < per_subset:
            seen[t.subset] += 1
            out.append(t)
    return out


def probe(
    triplets: Sequence[Triplet],
    backbone: Backbone,
    cfg: ProbeConfig | None = None,
    problems: Problems | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Score references and negatives; one row per (triplet, kind, direction).

    Args:
        triplets: Triplets with targets.
        backbone: The model to probe.
        cfg: Settings.
        problems: Filled with unreadable images (their triplets are skipped).
        progress: Called as ``progress(done, total)`` after each scored batch.

    Returns:
        Rows ``{id, subset, kind, direction, reference, negative, preferred}`` where
        ``reference``/``negative`` are the chosen log-likelihood scores.
    """
    cfg = cfg or ProbeConfig()
    problems = problems if problems is not None else Problems()
    triplets = _limit([t for t in triplets if t.target], cfg.max_per_subset)
    hashes: dict[str, str] = {}

    def hasher(path: str) -> str:
        if path not in hashes:
            hashes[path] = content_hash(path)
        return hashes[path]

    negatives = make_negatives(triplets, cfg.kinds, seed=cfg.seed, hasher=hasher)

    # Encode each distinct image once (AURORA chains and negatives reuse images).
    paths = sorted({p for t in triplets for p in (t.source, t.target)}
                   | {p for n in negatives for p in (n.negative.source, n.negative.target)})
    codes: dict[str, torch.Tensor] = {}
    readable = []
    images = []
    for p in paths:
        try:
            images.append(open_image(p))
            readable.append(p)
        except DataError as err:
            problems.add(p, 0, str(err))
    for start in range(0, len(readable), cfg.batch_size):
        enc = backbone.encode_images(images[start : start + cfg.batch_size])
        for i, p in enumerate(readable[start : start + cfg.batch_size]):
            codes[p] = enc.codes[i]
    ok = set(codes)

    def usable(t: Triplet) -> bool:
        return t.source in ok and t.target in ok

    jobs: list[tuple[str, Triplet]] = []  # (key, triplet)
    keys: dict[tuple[str, str], int] = {}
    for t in triplets:
        if usable(t):
            for d in cfg.directions:
                keys[("ref", t.id, d)] = len(jobs)
                jobs.append((d, t))
    pairs = []
    for n in negatives:
        if not (usable(n.reference) and usable(n.negative)):
            continue
        for d in cfg.directions:
            keys[("neg", n.reference.id, n.kind, d)] = len(jobs)
            jobs.append((d, n.negative))
            pairs.append((n, d))
    examples = [_example(backbone, t, codes, d) for d, t in jobs]
    scores: list[float] = []
    for start in range(0, len(examples), cfg.batch_size):
        s = backbone.score(examples[start : start + cfg.batch_size], batch_size=cfg.batch_size)
        scores.extend((s.mean if cfg.score == "mean" else s.total).tolist())
        if progress:
            progress(min(start + cfg.batch_size, len(examples)), len(examples))
    rows = []
    for n, d in pairs:
        ref = scores[keys[("ref", n.reference.id, d)]]
        neg = scores[keys[("neg", n.reference.id, n.kind, d)]]
        rows.append(
            {
                "id": n.reference.id,
                "subset": n.reference.subset,
                "kind": n.kind,
                "direction": d,
                "reference": ref,
                "negative": neg,
                "preferred": bool(ref > neg),
            }
        )
    return rows


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Percent of rows where the reference is preferred, per direction, kind and subset.

    Returns:
        ``{"cells": [{direction, kind, subset, n, preferred, percent}], "subsets": [...],
        "kinds": [...]}`` with an ``all`` subset pooling every row.
    """
    groups: dict[tuple[str, str, str], list[bool]] = defaultdict(list)
    for r in rows:
        for subset in (r["subset"], "all"):
            groups[(r["direction"], r["kind"], subset)].append(r["preferred"])
    cells = [
        {"direction": d, "kind": k, "subset": s, "n": len(v), "preferred": sum(v), "percent": 100.0 * sum(v) / len(v)}
        for (d, k, s), v in sorted(groups.items())
    ]
    subsets = sorted({r["subset"] for r in rows}) + ["all"]
    kinds = [k for k in NEGATIVE_KINDS if any(r["kind"] == k for r in rows)]
    return {"cells": cells, "subsets": subsets, "kinds": kinds}


def markdown(summary: dict[str, Any]) -> str:
    """One table per direction: rows are subsets, columns the negative kinds (percent preferred, n)."""
    lines = []
    for direction in DIRECTIONS:
        cells = {(c["kind"], c["subset"]): c for c in summary["cells"] if c["direction"] == direction}
        if not cells:
            continue
        what = "log p(o_t | o_s, a)" if direction == "world" else "log p(a | o_s, o_t)"
        lines += [f"### {direction} direction: {what}", ""]
        lines.append("| subset | " + " | ".join(k.replace("_", " ") for k in summary["kinds"]) + " |")
        lines.append("|---" * (len(summary["kinds"]) + 1) + "|")
        for s in summary["subsets"]:
            row = []
            for k in summary["kinds"]:
                c = cells.get((k, s))
                row.append(f"{c['percent']:.1f}% ({c['n']})" if c else "–")
            lines.append(f"| {s} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_preferences(summary: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Figure 2 in miniature: bars of percent preferred per kind, grouped by subset, per direction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    kinds, subsets = summary["kinds"], summary["subsets"]
    fig, axes = plt.subplots(2, 1, figsize=(max(6, 1.4 * len(subsets) + 2), 6.5), sharex=True)
    width = 0.8 / max(len(kinds), 1)
    x = np.arange(len(subsets))
    for ax, direction in zip(axes, DIRECTIONS, strict=True):
        cells = {(c["kind"], c["subset"]): c["percent"] for c in summary["cells"] if c["direction"] == direction}
        for i, k in enumerate(kinds):
            vals = [cells.get((k, s), np.nan) for s in subsets]
            ax.bar(x + (i - (len(kinds) - 1) / 2) * width, vals, width, label=k.replace("_", " "))
        ax.axhline(50, color="grey", lw=0.8, ls="--")
        ax.set_ylim(0, 100)
        ax.set_ylabel("% reference preferred")
        ax.set_title("dynamics: log p(a | o_s, o_t)" if direction == "dynamics" else "world: log p(o_t | o_s, a)")
    axes[-1].set_xticks(x, subsets, rotation=20)
    axes[0].legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_nll_scatter(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Figure 10 in miniature: reference NLL against negative NLL, one panel per kind and direction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in NEGATIVE_KINDS if any(r["kind"] == k for r in rows)]
    fig, axes = plt.subplots(2, max(len(kinds), 1), figsize=(3.2 * max(len(kinds), 1), 6.4), squeeze=False)
    for i, direction in enumerate(DIRECTIONS):
        for j, k in enumerate(kinds):
            ax = axes[i][j]
            sel = [r for r in rows if r["kind"] == k and r["direction"] == direction]
            if sel:
                xs = [-r["reference"] for r in sel]
                ys = [-r["negative"] for r in sel]
                ax.scatter(xs, ys, s=8, alpha=0.6)
                lo, hi = min(xs + ys), max(xs + ys)
                ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
            ax.set_title(f"{direction}: {k.replace('_', ' ')}", fontsize=9)
            ax.set_xlabel("NLL reference", fontsize=8)
            ax.set_ylabel("NLL negative", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(rows: Sequence[dict[str, Any]], out: str | os.PathLike[str]) -> dict[str, Any]:
    """Write ``preferences.jsonl``, ``probe.md``, ``probe.csv``, ``probe.json`` and the two figures."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "preferences.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    summary = summarise(rows)
    write_atomic(out / "probe.json", json.dumps(summary, indent=2))
    header = "direction,kind,subset,n,preferred,percent\n"
    write_atomic(
        out / "probe.csv",
        header + "".join(f"{c['direction']},{c['kind']},{c['subset']},{c['n']},{c['preferred']},{c['percent']:.2f}\n"
                         for c in summary["cells"]),
    )
    write_atomic(out / "probe.md", markdown(summary))
    if rows:
        plot_preferences(summary, out / "figure2_preferences.png")
        plot_nll_scatter(rows, out / "figure10_nll.png")
    return summary
