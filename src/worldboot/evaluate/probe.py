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
from PIL import Image

from worldboot.bounds import bounded, seed_field
from worldboot.data.negatives import NEGATIVE_KINDS, make_negatives
from worldboot.data.schema import Problems, Triplet, content_hash
from worldboot.errors import DataError
from worldboot.images import open_image
from worldboot.models.backbone import Backbone
from worldboot.runs import write_atomic

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
    batch_size: int = bounded(8, ge=1)
    seed: int = seed_field(0)
    max_per_subset: int = bounded(0, ge=0)


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


class BackboneScorer:
    """Scores triplets with one of our backbones, in both directions, in batches.

    Each distinct image is encoded once (AURORA chains and negatives reuse images).
    """

    directions = DIRECTIONS

    def __init__(self, backbone: Backbone, cfg: ProbeConfig) -> None:
        self.backbone = backbone
        self.cfg = cfg
        self.codes: dict[str, torch.Tensor] = {}

    def prepare(self, paths: Sequence[str], problems: Problems) -> set[str]:
        """Encode the images; returns the readable paths."""
        readable, images = [], []
        for p in paths:
            try:
                images.append(open_image(p))
                readable.append(p)
            except DataError as err:
                problems.add(p, 0, str(err))
        bs = self.cfg.batch_size
        for start in range(0, len(readable), bs):
            enc = self.backbone.encode_images(images[start : start + bs])
            for i, p in enumerate(readable[start : start + bs]):
                self.codes[p] = enc.codes[i]
        return set(self.codes)

    def score(self, jobs: Sequence[tuple[str, Triplet]], progress=None) -> list[float]:
        """Scores of ``(direction, triplet)`` jobs."""
        bb, codes, bs = self.backbone, self.codes, self.cfg.batch_size
        examples = [
            bb.world_example(codes[t.source], t.action, codes[t.target]) if d == "world"
            else bb.dynamics_example(codes[t.source], codes[t.target], t.action)
            for d, t in jobs
        ]
        out: list[float] = []
        for start in range(0, len(examples), bs):
            s = bb.score(examples[start : start + bs], batch_size=bs)
            out.extend((s.mean if self.cfg.score == "mean" else s.total).tolist())
            if progress:
                progress(min(start + bs, len(examples)), len(examples))
        return out


class VLMScorer:
    """Scores triplets with a transformers VLM (:mod:`worldboot.evaluate.vlm`): dynamics only."""

    directions = ("dynamics",)

    def __init__(self, vlm, cfg: ProbeConfig) -> None:
        self.vlm = vlm
        self.cfg = cfg
        self.images: dict[str, Image.Image] = {}

    def prepare(self, paths: Sequence[str], problems: Problems) -> set[str]:
        for p in paths:
            try:
                self.images[p] = open_image(p)
            except DataError as err:
                problems.add(p, 0, str(err))
        return set(self.images)

    def score(self, jobs: Sequence[tuple[str, Triplet]], progress=None) -> list[float]:
        out = []
        for i, (_, t) in enumerate(jobs):
            total, mean, _ = self.vlm.score(self.images[t.source], self.images[t.target], t.action)
            out.append(mean if self.cfg.score == "mean" else total)
            if progress:
                progress(i + 1, len(jobs))
        return out


def probe(
    triplets: Sequence[Triplet],
    model: Backbone | BackboneScorer | VLMScorer,
    cfg: ProbeConfig | None = None,
    problems: Problems | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Score references and negatives; one row per (triplet, kind, direction).

    Args:
        triplets: Triplets with targets.
        model: A backbone (both directions), or a scorer (a VLM: dynamics only).
        cfg: Settings.
        problems: Filled with unreadable images (their triplets are skipped).
        progress: Called as ``progress(done, total)`` while scoring.

    Returns:
        Rows ``{id, subset, kind, direction, reference, negative, preferred}`` where
        ``reference``/``negative`` are the chosen log-likelihood scores.
    """
    cfg = cfg or ProbeConfig()
    problems = problems if problems is not None else Problems()
    scorer = model if isinstance(model, (BackboneScorer, VLMScorer)) else BackboneScorer(model, cfg)
    directions = [d for d in cfg.directions if d in scorer.directions]
    triplets = _limit([t for t in triplets if t.target], cfg.max_per_subset)
    hashes: dict[str, str] = {}

    def hasher(path: str) -> str:
        if path not in hashes:
            hashes[path] = content_hash(path)
        return hashes[path]

    negatives = make_negatives(triplets, cfg.kinds, seed=cfg.seed, hasher=hasher)
    paths = sorted({p for t in triplets for p in (t.source, t.target)}
                   | {p for n in negatives for p in (n.negative.source, n.negative.target)})
    ok = scorer.prepare(paths, problems)

    def usable(t: Triplet) -> bool:
        return t.source in ok and t.target in ok

    jobs: list[tuple[str, Triplet]] = []
    keys: dict[tuple, int] = {}
    for t in triplets:
        if usable(t):
            for d in directions:
                keys[("ref", t.id, d)] = len(jobs)
                jobs.append((d, t))
    pairs = []
    for n in negatives:
        if not (usable(n.reference) and usable(n.negative)):
            continue
        for d in directions:
            keys[("neg", n.reference.id, n.kind, d)] = len(jobs)
            jobs.append((d, n.negative))
            pairs.append((n, d))
    scores = scorer.score(jobs, progress)
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


def compare_markdown(summaries: dict[str, dict[str, Any]], direction: str = "dynamics") -> str:
    """Several models in one table: percent preferred over all subsets, per negative kind."""
    kinds = [k for k in NEGATIVE_KINDS if any(k in s["kinds"] for s in summaries.values())]
    lines = [f"### {direction} direction, all subsets: % reference preferred", "",
             "| model | " + " | ".join(k.replace("_", " ") for k in kinds) + " |",
             "|---" * (len(kinds) + 1) + "|"]
    for name, summary in summaries.items():
        cells = {c["kind"]: c for c in summary["cells"] if c["direction"] == direction and c["subset"] == "all"}
        lines.append(f"| {name} | " + " | ".join(
            f"{cells[k]['percent']:.1f}% ({cells[k]['n']})" if k in cells else "–" for k in kinds) + " |")
    return "\n".join(lines) + "\n"


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
    width = max(6, 1.4 * len(subsets) + 2)
    fig, axes = plt.subplots(2, 1, figsize=(width, 7), sharex=True, layout="constrained")
    bar = 0.8 / max(len(kinds), 1)
    x = np.arange(len(subsets))
    for ax, direction in zip(axes, DIRECTIONS, strict=True):
        cells = {(c["kind"], c["subset"]): c["percent"] for c in summary["cells"] if c["direction"] == direction}
        for i, k in enumerate(kinds):
            vals = [cells.get((k, s), np.nan) for s in subsets]
            ax.bar(x + (i - (len(kinds) - 1) / 2) * bar, vals, bar, label=k.replace("_", " "))
        ax.axhline(50, color="grey", lw=0.8, ls="--")
        ax.set_ylim(0, 100)
        ax.set_ylabel("% reference preferred")
        ax.set_title("dynamics: log p(a | o_s, o_t)" if direction == "dynamics" else "world: log p(o_t | o_s, a)")
    axes[-1].set_xticks(x, subsets, rotation=20)
    # Above the panels, outside the axes: inside, it would cover the bars (up to 100 %).
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside upper center", fontsize=8, ncol=len(kinds) if width >= 8 else 2)
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
