"""The demo's ``report.md``: its sections in reading order, each a function of the run's state.

The numbers come from :mod:`worldboot.demo.report` (:func:`~worldboot.demo.report.table2`,
:func:`~worldboot.demo.report.data_table`, :func:`~worldboot.demo.report.curve_lines`) and from
the stages' results in ``stages.json``; this module only lays them out.
"""

from __future__ import annotations

import html
import os
from typing import Any

from worldboot.demo.claims import fmt
from worldboot.demo.config import ALPHA, CEILING, CHOICES, GREEDY, REWARD_MODELS, STAGES
from worldboot.demo.report import curve_lines, data_table, finetuning_note, prediction_image
from worldboot.demo.view import Demo

#: What a mined pair can span (:func:`worldboot.world.clip_truth.pair_change`), as Table 5 lists them.
SPANS = ("one action", "no change", "several actions", "mid-action")


def markdown(demo: Demo, table2: dict[str, Any], ks: list[int], claims: list[dict[str, Any]]) -> str:
    """report.md: the run's setting, the claims, Tables 1, 2, 3 and 5, the figures and examples."""
    sections = [
        setting_lines(demo), claims_lines(demo, claims), table1_lines(demo), table2_lines(table2),
        table3_lines(demo, table2), table5_lines(demo), figure_lines(demo), example_lines(demo, table2),
        time_lines(demo),
    ]
    return "\n".join(line for section in sections for line in section) + "\n"


def setting_lines(demo: Demo) -> list[str]:
    """The title, the world and data sizes, how the models were fine-tuned and what each saw."""
    st, cfg = demo.state, demo.cfg
    data = st["data"]["result"]
    return ["# worldboot demo: the paper in miniature", "",
            f"Procedural world, tiny Chameleon base `{st['base']['result']['path']}` (preset "
            f"`{cfg.base_preset}`), {data['train']} labelled training triplets, {data['test']} test triplets, "
            f"{data['clips']} unlabelled clips.", "",
            finetuning_note(demo), "", *data_table(demo), ""]


def claims_lines(demo: Demo, claims: list[dict[str, Any]]) -> list[str]:
    """Which of the paper's claims held, and how a verdict is reached."""
    lines = ["## Which of the paper's claims held on this run", ""]
    k = max(demo.cfg.best_of)
    for c in claims:
        lines.append(f"- **{c['verdict']}**: {c['claim']}. {c['evidence']}.")
        if "averaged" in c:
            a = c["averaged"]
            lines.append(f"  - averaged over each model's {k} samples: **{a['verdict']}**. {a['evidence']}.")
    n = demo.state["data"]["result"]["test"]
    lines += ["", f"p: a paired test over the {n} test triplets (the two models on the same triplet): exact "
              "McNemar for right/wrong outcomes (exact action, choice, transition success), two-sided "
              "Wilcoxon signed-rank for graded ones (scores, slots, text metrics); the choice claim also "
              "tests against chance (exact binomial) and reports the larger p. A claim's direction is the "
              f"sign of its test's own statistic. **held**: the claimed direction with p < {ALPHA}; "
              f"**not significant**: p >= {ALPHA}, this run cannot tell; **did not hold**: significant the "
              "other way. "
              f"The verdict is the paper's protocol, one sample a prediction. A world model's claim also "
              f"reads its models' one-sample figures averaged over the {k} samples each drew for best-of-K "
              "(the same expected value with less sampling noise, the noise the paper averages over "
              "several runs, its Limitations); best-of-K stays the CDM's pick. "
              "A claim that did not hold here is a measurement of this run, not a verdict on the paper; "
              "the `paper` preset trains longer on more data.", ""]
    return lines


def table1_lines(demo: Demo) -> list[str]:
    """Table 1: the base and the CDM as dynamics models."""
    lines = ["## Table 1: dynamics model, action prediction on the test triplets", "",
             "| model | action accuracy | slot accuracy† | transition success§ | action choice‡ | "
             "BERTScore (MiniLM)* | ROUGE-1 | ROUGE-L | BLEU |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, m in demo.state["cdm"]["result"].items():
        lines.append(f"| {name} | {m['action_accuracy']:.2f} | {fmt(m.get('slot_accuracy'))} | "
                     f"{fmt(m.get('transition_success'))} | {fmt(m.get('choice_accuracy'))} | "
                     f"{fmt(m.get('bertscore'))} | {fmt(m.get('rouge1'))} | {fmt(m.get('rougeL'))} | "
                     f"{fmt(m.get('bleu'))} |")
    return lines + [
        "", "*BERTScore with the offline MiniLM-L6 model: not comparable with roberta-large numbers.",
        "†The share of the true action's parts (family, kind, object colour and shape, steps, anchor, "
        "place, value) that the parsed text gets right; 0 for a text that names no action.",
        "§The text, parsed and applied by the world's rules to the source scene, gives the target "
        "scene (any wording or action that makes the same change counts); a world model's transition "
        "success is whether its image parses to the target scene (the claims compare the two).",
        f"‡Multiple choice: the true action against {CHOICES - 1} others that can happen in the same "
        "source scene, picked by the model's log p(action | source, target); chance is "
        f"{1 / CHOICES:.2f}.", ""]


def table2_lines(table2: dict[str, Any]) -> list[str]:
    """Table 2: every world model's judge score per family."""
    subsets = sorted(k for k in table2["Copy"] if k != "all")
    lines = ["## Table 2: world models, world-judge score (0-10, min of the two criteria)", "",
             "| model | " + " | ".join(s.replace("world/", "") for s in subsets) + " | all |",
             "|---" * (len(subsets) + 2) + "|"]
    for name, per in table2.items():
        lines.append(f"| {name} | " + " | ".join(fmt(per[s]["score"]) if s in per else "–" for s in subsets)
                     + f" | {fmt(per['all']['score'])} |")
    if CEILING in table2:
        lines += ["", f"The ceiling row judges the true target image after the base's tokenizer (encode, "
                  f"decode): a world model that wrote exactly the target's tokens would score "
                  f"{fmt(table2[CEILING]['all']['score'])}."]
    return lines


def table3_lines(demo: Demo, table2: dict[str, Any]) -> list[str]:
    """Table 3: editing success, minimal editing and transition success; the reward rows' runs."""
    lines = ["", "## Table 3: editing success (ES), minimal editing (ME) and transition success, all subsets", "",
             "| model | ES | ME | score | transition success§ |", "|---|---|---|---|---|"]
    for name, per in table2.items():
        if "es" in per["all"]:
            a = per["all"]
            lines.append(f"| {name} | {a['es']:.2f} | {a['me']:.2f} | {a['score']:.2f} | {fmt(a.get('transition'))} |")
    lines += ["", f"Rows marked{GREEDY} decode the same model greedily (temperature 0, one candidate); the "
              "others sample at temperature 1, as the paper does."]
    for key, (row, objective) in REWARD_MODELS.items():
        r = demo.state.get(key, {}).get("result", {})  # the run's own settings
        if r.get("steps"):
            how = (f"KL coefficient {r['beta']:g}" if objective == "grpo" else
                   f"each group's best and worst sample as the preference pair, DPO beta {r['beta']:g}")
            lines += ["", f"{row} (after the paper, as SWIRL does): the CWM with a LoRA adapter trained "
                      f"{r['steps']} {objective.upper()} steps ({r['batch_size']} {' and '.join(r['prompts'])} "
                      f"prompts a step, {r['group_size']} samples each, lr {r['lr']:g}, {how}) against the "
                      "frozen CDM's reward, the mean per token of log p_CDM(action | source, sample); one "
                      f"sample per test triplet. The reward of its training samples went from "
                      f"{r['reward_first']:.3f} to {r['reward_last']:.3f} (first and last fifth of the "
                      f"steps; spread within a group {r['spread']:.3f})."]
    return lines


def table5_lines(demo: Demo) -> list[str]:
    """Table 5: the mined pairs, Algorithm 1's selection, and the labels' precision."""
    mine = demo.state["mine"]["result"]
    lines = ["", "## Table 5: mined synthetic data", "",
             f"{mine['pairs']} key-frame pairs from the clips, {mine['selected']} kept by Algorithm 1."]
    if "pair_overlap" in mine:
        lines.append(f"Share of key-frame pairs spanning a true action: {mine['pair_overlap']:.2f}; share of "
                     f"key-frames inside an action: {mine['keyframe_hit']:.2f}.")
    lines += precision_lines(mine.get("label_precision"))
    stats = demo.out / "mining" / "synthetic" / "stats.md"
    if stats.is_file():
        lines += ["", stats.read_text()]
    return lines


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


def figure_lines(demo: Demo) -> list[str]:
    """The figures, and the probe's table."""
    k = max(demo.cfg.best_of)
    lines = ["", "## Figures", "",
             "Figure 2 (probe of the base model): ![](figures/figure2_preferences.png)", "",
             "Figure 3 (recognition weights): ![](figures/figure3_weights.png)", "",
             "Figure 7 (best-of-K with the CDM as verifier): ![](figures/figure7_best_of_k.png)", "",
             *curve_lines(demo.state.get("curve", {}).get("result", {})),
             f"Examples (temperature 1; CWM + best-of-{k} is the CDM's pick of {k} CWM samples): "
             "![](figures/examples.png)", ""]
    probe_md = demo.out / "probe" / "probe.md"
    if probe_md.is_file():
        lines += ["### Probe of the base model (Figure 2 as a table)", "", probe_md.read_text(), ""]
    return lines


def example_lines(demo: Demo, table2: dict[str, Any]) -> list[str]:
    """Five test triplets with what C-FT, the CWM and the reward rows drew for them."""
    rewarded = [row for row in demo.reward_models() if row in table2]
    shown = ["C-FT", "CWM", *rewarded]
    lines = ["## Examples", "", "| source | action | target | " + " | ".join(shown) + " |",
             "|---" * (3 + len(shown)) + "|"]
    test = demo.triplets("test")
    rel = os.path.relpath
    for t in test[:: max(1, len(test) // 5)][:5]:
        cells = [f"![]({rel(t.source, demo.out)})", html.escape(t.action), f"![]({rel(t.target, demo.out)})"]
        for name in shown:
            p = prediction_image(demo, name, t.id, None if name in rewarded else 0)
            cells.append(f"![]({rel(p, demo.out)})" if p.is_file() else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def time_lines(demo: Demo) -> list[str]:
    """Seconds and peak memory per stage."""
    lines = ["", "## Time and memory per stage", "", "| stage | seconds | peak memory (MB) |", "|---|---|---|"]
    for name in STAGES:
        if name in demo.state:
            peak = demo.state[name].get("peak_mb")
            lines.append(f"| {name} | {demo.state[name]['seconds']} | {'–' if peak is None else peak} |")
    return lines
