"""The demo's report: Tables 1, 2, 3 and 5, Figures 2, 3 and 7, examples, and the claims, as
``report.md`` and ``report.html``."""

from __future__ import annotations

import html
import os
import random
import statistics
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worldboot.demo.claims import fmt, pick
from worldboot.demo.config import (
    ALPHA,
    BASELINES,
    CEILING,
    CHOICES,
    GREEDY,
    REWARD_MODELS,
    STAGES,
    WORLD_MODELS,
)
from worldboot.evaluate.tables import AVG, IMAGE_METRICS, aggregate

if TYPE_CHECKING:
    from worldboot.demo.pipeline import Demo

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


SPANS = ("one action", "no change", "several actions", "mid-action")


def precision_lines(precision: dict[str, Any] | None) -> list[str]:
    """Table 5's label precision per clip family (the mine stage's ``label_precision``)."""
    if not precision:
        return []
    lines = ["", "Label precision: the share of mined pairs whose CDM label, applied by the world's rules "
             "to the scene of the source frame, gives the scene of the target frame (the clip generator "
             "knows both); and what the pairs span.", "",
             "| family | annotated pairs | precision | selected pairs | precision | "
             + " | ".join(f"selected: {s}" for s in SPANS) + " |",
             "|---|---|---|---|---|" + "---|" * len(SPANS)]
    for family, sel in precision["selected"].items():
        ann = precision["annotated"].get(family, {"pairs": 0, "precision": 0.0})
        lines.append(f"| {family} | {ann['pairs']} | {ann['precision']:.2f} | {sel['pairs']} | "
                     f"{sel['precision']:.2f} | " + " | ".join(str(sel["spans"].get(s, 0)) for s in SPANS) + " |")
    return lines


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
    for name, (use_synthetic, _) in WORLD_MODELS.items():
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
    lines += ["", "The CDM alone sees the action-recognition set (first and last frames of one-action clips, "
              "canonical texts), as the paper's CDM alone sees 15K EPIC-Kitchens samples (Appendix K); "
              "every world model sees the labelled triplets, the CWM rows also the mined synthetic ones."]
    return lines


def markdown(demo: Demo, table2: dict[str, Any], ks: list[int], claims: list[dict[str, Any]]) -> str:
    """report.md: the run's setting, the claims, Tables 1, 2, 3 and 5, the figures and examples.

    (Over 80 lines: the report's sections in reading order, each a few lines of Markdown; the
    tables' numbers come from :func:`table2`, :func:`data_table` and :func:`curve_lines`.)
    """
    st = demo.state
    cfg = demo.cfg
    lines = ["# worldboot demo: the paper in miniature", "",
             f"Procedural world, tiny Chameleon base `{st['base']['result']['path']}` (preset "
             f"`{cfg.base_preset}`), {st['data']['result']['train']} labelled training triplets, "
             f"{st['data']['result']['test']} test triplets, {st['data']['result']['clips']} unlabelled clips.", "",
             finetuning_note(demo), "", *data_table(demo), "",
             "## Which of the paper's claims held on this run", ""]
    for c in claims:
        lines.append(f"- **{c['verdict']}**: {c['claim']}. {c['evidence']}.")
    n = st["data"]["result"]["test"]
    lines += ["", f"p: a paired test over the {n} test triplets (the two models on the same triplet): exact "
              "McNemar for right/wrong outcomes (exact action, choice, transition success), two-sided "
              "Wilcoxon signed-rank for graded ones (scores, slots, text metrics); the choice claim also "
              "tests against chance (exact binomial) and reports the larger p. A claim's direction is the "
              f"sign of its test's own statistic. **held**: the claimed direction with p < {ALPHA}; "
              f"**not significant**: p >= {ALPHA}, this run cannot tell; **did not hold**: significant the "
              "other way. "
              "A claim that did not hold here is a measurement of this run, not a verdict on the paper; "
              "the `paper` preset trains longer on more data.", ""]
    lines += ["## Table 1: dynamics model, action prediction on the test triplets", "",
              "| model | action accuracy | slot accuracy† | transition success§ | action choice‡ | "
              "BERTScore (MiniLM)* | ROUGE-1 | ROUGE-L | BLEU |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, m in st["cdm"]["result"].items():
        lines.append(f"| {name} | {m['action_accuracy']:.2f} | {fmt(m.get('slot_accuracy'))} | "
                     f"{fmt(m.get('transition_success'))} | {fmt(m.get('choice_accuracy'))} | "
                     f"{fmt(m.get('bertscore'))} | {fmt(m.get('rouge1'))} | {fmt(m.get('rougeL'))} | "
                     f"{fmt(m.get('bleu'))} |")
    lines += ["", "*BERTScore with the offline MiniLM-L6 model: not comparable with roberta-large numbers.",
              "†The share of the true action's parts (family, kind, object colour and shape, steps, anchor, "
              "place, value) that the parsed text gets right; 0 for a text that names no action.",
              "§The text, parsed and applied by the world's rules to the source scene, gives the target "
              "scene (any wording or action that makes the same change counts); a world model's transition "
              "success is whether its image parses to the target scene (the claims compare the two).",
              f"‡Multiple choice: the true action against {CHOICES - 1} others that can happen in the same "
              "source scene, picked by the model's log p(action | source, target); chance is "
              f"{1 / CHOICES:.2f}.", ""]
    subsets = sorted(k for k in table2["Copy"] if k != "all")
    lines += ["## Table 2: world models, world-judge score (0-10, min of the two criteria)", "",
              "| model | " + " | ".join(s.replace("world/", "") for s in subsets) + " | all |",
              "|---" * (len(subsets) + 2) + "|"]
    for name, per in table2.items():
        lines.append(f"| {name} | " + " | ".join(fmt(per[s]["score"]) if s in per else "–" for s in subsets)
                     + f" | {fmt(per['all']['score'])} |")
    if CEILING in table2:
        lines += ["", f"The ceiling row judges the true target image after the base's tokenizer (encode, "
                  f"decode): a world model that wrote exactly the target's tokens would score "
                  f"{fmt(table2[CEILING]['all']['score'])}."]
    lines += ["", "## Table 3: editing success (ES), minimal editing (ME) and transition success, all subsets", "",
              "| model | ES | ME | score | transition success§ |", "|---|---|---|---|---|"]
    for name, per in table2.items():
        if "es" in per["all"]:
            a = per["all"]
            lines.append(f"| {name} | {a['es']:.2f} | {a['me']:.2f} | {a['score']:.2f} | {fmt(a.get('transition'))} |")
    lines += ["", f"Rows marked{GREEDY} decode the same model greedily (temperature 0, one candidate); the "
              "others sample at temperature 1, as the paper does."]
    for key, (row, objective) in REWARD_MODELS.items():
        rl = st.get(key, {}).get("result", {})
        if rl.get("steps"):
            r = rl  # the run's own settings
            how = (f"KL coefficient {r['beta']:g}" if objective == "grpo" else
                   f"each group's best and worst sample as the preference pair, DPO beta {r['beta']:g}")
            lines += ["", f"{row} (after the paper, as SWIRL does): the CWM with a LoRA adapter trained "
                      f"{r['steps']} {objective.upper()} steps ({r['batch_size']} {' and '.join(r['prompts'])} "
                      f"prompts a step, {r['group_size']} samples each, lr {r['lr']:g}, {how}) against the "
                      "frozen CDM's reward, the mean per token of log p_CDM(action | source, sample); one "
                      f"sample per test triplet. The reward of its training samples went from "
                      f"{r['reward_first']:.3f} to {r['reward_last']:.3f} (first and last fifth of the "
                      f"steps; spread within a group {r['spread']:.3f})."]
    stats = demo.out / "mining" / "synthetic" / "stats.md"
    mine = st["mine"]["result"]
    lines += ["", "## Table 5: mined synthetic data", "",
              f"{mine['pairs']} key-frame pairs from the clips, {mine['selected']} kept by Algorithm 1."]
    if "pair_overlap" in mine:
        lines.append(f"Share of key-frame pairs spanning a true action: {mine['pair_overlap']:.2f}; share of "
                     f"key-frames inside an action: {mine['keyframe_hit']:.2f}.")
    lines += precision_lines(mine.get("label_precision"))
    if stats.is_file():
        lines += ["", stats.read_text()]
    lines += ["", "## Figures", "",
              "Figure 2 (probe of the base model): ![](figures/figure2_preferences.png)", "",
              "Figure 3 (recognition weights): ![](figures/figure3_weights.png)", "",
              "Figure 7 (best-of-K with the CDM as verifier): ![](figures/figure7_best_of_k.png)", "",
              *curve_lines(st.get("curve", {}).get("result", {})),
              f"Examples (temperature 1; CWM + best-of-{max(demo.cfg.best_of)} is the CDM's pick of "
              f"{max(demo.cfg.best_of)} CWM samples): "
              "![](figures/examples.png)", ""]
    probe_md = demo.out / "probe" / "probe.md"
    if probe_md.is_file():
        lines += ["### Probe of the base model (Figure 2 as a table)", "", probe_md.read_text(), ""]
    rewarded = [row for row in demo.reward_models() if row in table2]
    shown = ["C-FT", "CWM", *rewarded]
    lines += ["## Examples", "", "| source | action | target | " + " | ".join(shown) + " |",
              "|---" * (3 + len(shown)) + "|"]
    test = demo.triplets("test")
    for t in test[:: max(1, len(test) // 5)][:5]:
        rel = os.path.relpath
        cells = [f"![]({rel(t.source, demo.out)})", html.escape(t.action), f"![]({rel(t.target, demo.out)})"]
        for name in shown:
            p = prediction_image(demo, name, t.id, None if name in rewarded else 0)
            cells.append(f"![]({rel(p, demo.out)})" if p.is_file() else "–")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Time and memory per stage", "", "| stage | seconds | peak memory (MB) |", "|---|---|---|"]
    for name in STAGES:
        if name in st:
            peak = st[name].get("peak_mb")
            lines.append(f"| {name} | {st[name]['seconds']} | {'–' if peak is None else peak} |")
    return "\n".join(lines) + "\n"


def to_html(md: str) -> str:
    """A self-contained page of the Markdown report (tables, images, lists) via markdown-it-py."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(md)
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
             "th{background:#f3f3f3}img{max-width:100%;image-rendering:pixelated}td img{width:96px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>worldboot demo</title><style>{style}</style>"
            f"</head><body>{body}</body></html>")
