"""The demo's report: Tables 1, 2, 3 and 5, Figures 2, 3 and 7, examples, and the claims, as
``report.md`` and ``report.html``."""

from __future__ import annotations

import random
import statistics
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worldboot.demo.claims import pick
from worldboot.demo.config import (
    ABLATIONS,
    BASELINES,
    REWARD_MODELS,
    WORLD_MODELS,
)
from worldboot.evaluate.tables import AVG, IMAGE_METRICS, aggregate

if TYPE_CHECKING:
    from worldboot.demo.view import Demo

#: The judge's three numbers, as :func:`worldboot.evaluate.tables.aggregate` names them, and as
#: the report's tables do.
_METRICS = {"judge_score": "score", "editing_success": "es", "minimal_editing": "me"}


def slug(name: str) -> str:
    """A folder name for a model's name (``CWM w/o synthetic`` -> ``cwm-w-o-synthetic``)."""
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-").replace("--", "-")


def judged_rows(results: Iterable[tuple[int, dict[str, Any]]], models: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The report's view of ``worldboot evaluate``'s ``results.jsonl``: per model and test
    triplet, the world judge's ES, ME and score of each candidate (in sampling order) and the
    CDM's score of each (zeros where no verifier ranked them); one entry for single predictions.
    A prediction the judge could not score counts 0 (the world judge fails only on an image it
    cannot read)."""
    out: dict[str, list[dict[str, Any]]] = {m: [] for m in models}
    for _, row in results:
        if row["model"] not in out:
            continue  # evaluate's own oracle rows: the report computes best-of-K from the candidates
        cands = row.get("candidates") or [dict(_verdict(row.get("judge")), cdm_score=None)]
        out[row["model"]].append({
            "id": row["id"], "subset": row["subset"],
            "es": [c.get("editing_success") or 0.0 for c in cands],
            "me": [c.get("minimal_editing") or 0.0 for c in cands],
            "score": [c.get("judge_score") or 0.0 for c in cands],
            "cdm": [c.get("cdm_score") or 0.0 for c in cands],
        })
    return out


def _verdict(judge: dict[str, Any] | None) -> dict[str, Any]:
    judge = judge or {}
    return {"editing_success": judge.get("editing_success"), "minimal_editing": judge.get("minimal_editing"),
            "judge_score": judge.get("score")}


def prediction_image(demo: Demo, model: str, sample_id: str, candidate: int | None) -> Path:
    """Where ``worldboot generate`` put a model's candidate ``candidate`` of a test triplet, or
    (``None``) the prediction it chose (the CDM's pick for sampled models)."""
    return prediction_path(demo.out, model, sample_id, candidate)


def prediction_path(out: Path, model: str, sample_id: str, candidate: int | None) -> Path:
    """:func:`prediction_image` of the demo run in ``out``."""
    from worldboot.infer.outputs import file_stem

    folder = out / "predictions" / slug(model)
    stem = file_stem(sample_id)
    return folder / "images" / f"{stem}.png" if candidate is None else folder / "candidates" / stem / f"{candidate}.png"


def sampled(rows: list[dict[str, Any]]) -> bool:
    """Whether a model's rows hold several candidates (best-of-K applies)."""
    return bool(rows) and len(rows[0]["score"]) > 1


def table2(judged: dict[str, list[dict[str, Any]]], ks: list[int]) -> dict[str, Any]:
    """Per model, its best-of-K variants (the CDM picks among the first K candidates) and the
    judge's own pick of all candidates (the oracle): mean score, ES and ME per subset and
    ``"all"``, computed by :func:`worldboot.evaluate.tables.aggregate` (``"all"`` is its
    average over subsets, which hold equally many test triplets)."""
    rows: list[dict[str, Any]] = []
    labels: list[str] = []
    moved: dict[str, float] = {}  # label -> transition success over every test triplet
    for name, model_rows in judged.items():
        single = name in BASELINES or not sampled(model_rows)
        variants = [(name, 1)] if single else [(name, 1)] + [(f"{name} + best-of-{k}", k) for k in ks if k > 1]
        for label, k in variants:
            labels.append(label)
            for r in model_rows:
                i = pick(r, k) if k > 1 else 0
                rows.append({"model": label, "subset": r["subset"], "judge_score": r["score"][i],
                             "editing_success": r["es"][i], "minimal_editing": r["me"][i]})
            if model_rows and "transition" in model_rows[0]:
                moved[label] = statistics.fmean(r["transition"][pick(r, k) if k > 1 else 0] for r in model_rows)
        if not single:
            label = f"{name} oracle best-of-{max(ks)}"
            labels.append(label)
            rows += [{"model": label, "subset": r["subset"], "judge_score": max(r["score"][: max(ks)])}
                     for r in model_rows]
    subsets = sorted({r["subset"] for r in rows})
    totals = {s: sum(r["subset"] == s for r in next(iter(judged.values()))) for s in subsets}
    metrics = [m for m in IMAGE_METRICS if m.key in _METRICS]
    agg = aggregate(rows, labels, subsets, totals, metrics)
    out: dict[str, Any] = {}
    for label in labels:
        per: dict[str, dict[str, Any]] = {}
        for subset in [*subsets, AVG]:
            cell = {_METRICS[key]: agg[key][label][subset]["mean"] for key in _METRICS}
            cell = {k: v for k, v in cell.items() if v is not None}
            cell["n"] = agg["judge_score"][label][subset]["scored"]
            per["all" if subset == AVG else subset] = cell
        if label in moved:
            per["all"]["transition"] = moved[label]
        out[label] = per
    return out


def plot_k(judged: dict[str, list[dict[str, Any]]], ks: list[int], path: Path) -> None:
    """Figure 7 through :func:`worldboot.evaluate.plots.plot_score_vs_k`: the judge's score of
    the CDM's pick among K candidates, per world model; the band is the standard deviation over
    200 bootstrap resamples of the test triplets (drawn as the plot's repeats)."""
    from worldboot.evaluate.plots import plot_score_vs_k

    rows = []
    for name, model_rows in judged.items():
        if name in BASELINES or not sampled(model_rows):
            continue
        for k in ks:
            values = [r["score"][pick(r, k)] for r in model_rows]
            rng = random.Random(0)
            for b in range(200):
                rows.append({"model": name, "k": k, "repeat": b, "subset": "All",
                             "score": statistics.fmean(rng.choices(values, k=len(values)))})
    copy = statistics.fmean(r["score"][0] for r in judged["Copy"])
    plot_score_vs_k(rows, path, references={"Copy": copy}, title="Best-of-K with the CDM as verifier",
                    ylabel="world-judge score (0-10)")


def plot_examples(demo: Demo, path: Path, n: int = 5) -> None:
    """Source, target, C-FT's and the CWM's first sample, the CDM's pick of the CWM's samples
    (and the one sample of the CWM after GRPO and after DPO, when the run has them), for ``n``
    test triplets spread over the test set, with each action as a caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from worldboot.images import open_image

    test = demo.triplets("test")
    rows = test[:: max(1, len(test) // n)][:n]
    k = max(demo.cfg.best_of)
    # (label, model, candidate): the first sample, or the CDM's pick (None) of the model's samples.
    columns = [("source", "", 0), ("target", "", 0), ("C-FT", "C-FT", 0), ("CWM", "CWM", 0),
               (f"CWM + best-of-{k}", "CWM", None)]
    # The reward-optimised rows: one sample, no verifier: their only prediction.
    columns += [(row, row, None) for row in demo.reward_models()]
    # A band of 0.6 in at the top for the column labels, clear of the first row's caption.
    height = 2.2 * len(rows) + 0.55
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(1.8 * len(columns), height), squeeze=False)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.6 / height, wspace=0.08, hspace=0.45)
    for i, t in enumerate(rows):
        for j, (label, model, candidate) in enumerate(columns):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if label in ("source", "target"):
                img_path = Path(t.source if label == "source" else t.target)
            else:
                img_path = prediction_image(demo, model, t.id, candidate)
            if img_path.is_file():
                ax.imshow(open_image(img_path), interpolation="nearest")
            if i == 0:
                box = ax.get_position()
                fig.text((box.x0 + box.x1) / 2, 1 - 0.18 / height, label, ha="center", va="center", fontsize=9,
                         weight="bold")
        axes[i][0].set_title(textwrap.shorten(t.action, 70), fontsize=8, loc="left", x=0.0)
    fig.savefig(path, dpi=110)
    plt.close(fig)

def finetuning_note(demo: Demo) -> str:
    """One sentence on how the CDM and the world models were fine-tuned, against the paper's LoRA."""

    def how(name: str) -> str:
        t = demo.train_config(name)
        lora = f"LoRA r{t.lora.r}, alpha {t.lora.alpha:g}, dropout {t.lora.dropout:g}" if t.lora.enabled else "every weight"
        return f"{lora} ({t.max_steps} steps of {t.batch_size}, lr {t.optim.lr:g})"

    cdm, cwm = demo.train_config("CDM"), demo.train_config("CWM")
    note = (f"Fine-tuning: the CDM trains {how('CDM')}, each world model {how('CWM')} "
            f"(`{demo.cfg.cdm.config}` and `{demo.cfg.cwm.config}` with the preset's overrides, the runs' "
            "`config.yaml`); the paper trains LoRA r16, alpha 32, dropout 0.05.")
    if not (cdm.lora.enabled and cwm.lora.enabled):
        note += (" The tiny base learns too little through LoRA adapters in these few steps (measured in "
                 "docs/results.md), so the demo trains every weight; Anole-7B runs use the paper's LoRA "
                 "(configs/anole7b/).")
    return note


def curve_lines(curve: dict[str, Any]) -> list[str]:
    """The learning curve's figure and its points (none when the run drew no curve)."""
    if not curve or "skipped" in curve:
        return []
    points = "; ".join(f"{name}: " + ", ".join(f"{x} -> {y:.2f}" for x, y in pts) for name, pts in curve.items())
    return ["Learning curves (transition success against training examples seen, from the zero-shot "
            f"base; examples -> success): ![](figures/learning_curve.png) {points}.", ""]


def data_seen(demo: Demo) -> dict[str, dict[str, int]]:
    """Per model, the examples of each data source it trained on (Table 0 of the report)."""
    d = demo.state["data"]["result"]
    synthetic = demo.state.get("mine", {}).get("result", {}).get("selected", 0)
    out = {"CDM": {"labelled": d["train"], "recognition": d.get("recognition", 0)}}
    for name in demo.trained_world_models():
        use_synthetic = WORLD_MODELS[name][0]
        out[name] = {"labelled": d["train"], **({"synthetic": synthetic} if use_synthetic else {})}
    for row in demo.reward_models():
        r = getattr(demo.cfg, next(k for k, (rr, _) in REWARD_MODELS.items() if rr == row))
        out[row] = {f"{p} prompts": d["train"] if p == "labelled" else synthetic for p in r.prompts}
    return out

def trained(demo: Demo, name: str) -> str:
    """How model ``name`` was trained, in words: steps, batch, examples seen, its data."""
    t = demo.train_config(name)
    data = ", ".join(f"{n} {k}" for k, n in data_seen(demo)[name].items() if n)
    return f"{t.max_steps} steps of {t.batch_size}, {t.max_steps * t.batch_size} examples drawn from {data}"


def data_table(demo: Demo) -> list[str]:
    """What each model trained on: its sources and their sizes, steps, batch and examples drawn."""
    lines = ["## What each model saw", "",
             "| model | data (examples) | steps | batch | examples drawn |", "|---|---|---|---|---|"]
    for name, sources in data_seen(demo).items():
        t = demo.train_config(name)
        data = ", ".join(f"{k} {n}" for k, n in sources.items() if n)
        lines.append(f"| {name} | {data} | {t.max_steps} | {t.batch_size} | {t.max_steps * t.batch_size} |")
    share = demo.cfg.recognition_per_source
    shared = f"; {share} samples, each of another family, share a first frame" if share > 1 else ""
    lines += ["", f"The CDM alone sees the action-recognition set (first and last frames of one-action clips, "
              f"canonical texts{shared}), as the paper's CDM alone sees 15K EPIC-Kitchens samples (Appendix K); "
              "every world model sees the labelled triplets, the CWM rows also the mined synthetic ones."]
    if not demo.cfg.ablations:
        lines += ["", f"This run trains no ablation rows ({', '.join(ABLATIONS)}; `ablations: false`), so their "
                  "claims are not tested here; the `paper` preset trains them."]
    return lines


def to_html(md: str) -> str:
    """A self-contained page of the Markdown report (tables, images, lists) via markdown-it-py."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(md)
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
             "th{background:#f3f3f3}img{max-width:100%;image-rendering:pixelated}td img{width:96px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>worldboot demo</title><style>{style}</style>"
            f"</head><body>{body}</body></html>")
