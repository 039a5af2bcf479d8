"""``worldboot evaluate``: score next-observation predictions of several models on one benchmark.

Inputs are files (DESIGN section 1): a benchmark (a triplet JSONL manifest or AURORA-BENCH's
``test.json``) and one predictions directory per model. A predictions directory is either the
output of ``worldboot generate`` (``predictions.jsonl`` with ``{id, image, candidates?, chosen?}``
rows, paths relative to the directory) or any folder of images named by sample id
(``<id>.png``/``.jpg``, also under ``images/``), so a diffusion editor's outputs sit in the same
table.

For every (model, sample) the run computes L1 / CLIP-I / CLIP-T / DINO against the target and asks
the judge; it adds the Copy baseline (the source as prediction) and, for predictions with
candidates, the best-of-N oracle (the candidate the judge likes best) and the test-time
verification curve (the candidate the dynamics model likes best among K, for several K). Missing
predictions, unreadable images and judge failures are recorded per sample; the tables count
what was scored per subset.

Outputs in the report directory: ``results.jsonl`` (a row per model and sample), ``table.md``,
``table.csv``, ``table.json``, ``problems.jsonl`` (bad input lines), ``verification.jsonl`` and
``verification.png`` (when candidates carry dynamics scores), ``judge_cache.sqlite``, and the run
files ``config.yaml``, ``meta.json``, ``log.txt``.

(Just over 400 lines: the run's steps, in the order they run, each its own function; the
judging, metrics and tables they call live in their own modules.)
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from worldboot.bounds import seed_field
from worldboot.data.schema import Problems, Triplet, image_problem
from worldboot.errors import ConfigError, DataError, UserError
from worldboot.evaluate.entries import Entry, EvalProgress, compute_image_metrics, load_scorers
from worldboot.evaluate.judge import JudgeConfig, make_judge
from worldboot.evaluate.judging import failure_note, judge_entries, oracle_entries, usage_note
from worldboot.evaluate.metrics import MetricsConfig
from worldboot.evaluate.predictions import load_bench, read_predictions
from worldboot.evaluate.tables import AVG, aggregate, render_csv, render_markdown, summary_json
from worldboot.run_guards import claim_folder
from worldboot.runs import RunDir, write_atomic

COPY = "Copy"


@dataclass
class VerificationConfig:
    """The score-vs-K curve of test-time verification (the paper's Figure 7).

    For each K and repeat, every sample's dynamics model (CDM) picks the candidate with the
    highest ``score`` among K candidates drawn at random from its N; the curve is the judge score
    of the picks. One generation with N >= max(K) candidates gives the whole curve, and the judge
    scores of all candidates are needed anyway for the best-of-N oracle (the curve is drawn only
    when ``oracle`` is on, i.e. when the candidates are judged).

    Attributes:
        ks: Values of K (those above a sample's N are skipped).
        repeats: Random draws per K (mean and standard deviation are plotted).
        seed: Seed of the draws.
    """

    ks: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    repeats: int = 3
    seed: int = seed_field(0)


@dataclass
class EvaluateConfig:
    """``worldboot evaluate`` settings.

    Attributes:
        bench: Benchmark file: a triplet JSONL manifest or AURORA-BENCH ``test.json``.
        bench_root: Folder the benchmark's image paths are relative to (default: its folder).
        out: Report directory.
        preds: ``{model name: predictions directory}``; the table has a row per entry.
        judge: The judge (``judge.type``: openai, world, none).
        metrics: The image metrics.
        copy_baseline: Add the Copy row (the source image as the prediction).
        oracle: Add a best-of-N row per model whose predictions have candidates (needs a judge).
        verification: The score-vs-K curve, when candidates carry dynamics-model scores.
        subsets: Evaluate only these subsets (empty = all).
        max_per_subset: Evaluate the first N samples of each subset (0 = all); for quick checks.
        strict: Stop at the first bad input line or missing prediction instead of counting it.
    """

    bench: str = ""
    bench_root: str = ""
    out: str = ""
    preds: dict[str, str] = field(default_factory=dict)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    copy_baseline: bool = True
    oracle: bool = True
    verification: VerificationConfig = field(default_factory=VerificationConfig)
    subsets: list[str] = field(default_factory=list)
    max_per_subset: int = 0
    strict: bool = False


# -- the evaluation ------------------------------------------------------------------------------


def _subsets_in_order(triplets: Sequence[Triplet]) -> list[str]:
    return list(dict.fromkeys(t.subset for t in triplets))


def select_samples(triplets: list[Triplet], cfg: EvaluateConfig) -> list[Triplet]:
    """The samples to evaluate after ``subsets`` and ``max_per_subset``."""
    if cfg.subsets:
        unknown = sorted(set(cfg.subsets) - {t.subset for t in triplets})
        if unknown:
            raise ConfigError(f"subsets not in the benchmark: {', '.join(unknown)}")
        triplets = [t for t in triplets if t.subset in cfg.subsets]
    if cfg.max_per_subset > 0:
        taken: Counter = Counter()
        kept = []
        for t in triplets:
            if taken[t.subset] < cfg.max_per_subset:
                taken[t.subset] += 1
                kept.append(t)
        triplets = kept
    return triplets


def verification_rows(
    model: str, entries: Sequence[Entry], cfg: VerificationConfig
) -> list[dict[str, Any]]:
    """Rows of the score-vs-K curve for one model (see :class:`VerificationConfig`)."""
    usable = []
    for e in entries:
        cands = e.candidates
        if len(cands) < 1 or any(c.get("cdm_score") is None for c in cands):
            continue
        usable.append(e)
    if not usable:
        return []
    max_n = max(len(e.candidates) for e in usable)
    rows: list[dict[str, Any]] = []
    for k in sorted({k for k in cfg.ks if 1 <= k <= max_n}):
        for r in range(cfg.repeats):
            rng = np.random.default_rng([cfg.seed, k, r])
            per_subset: dict[str, list[float]] = {}
            for e in usable:
                n = len(e.candidates)
                if n < k:
                    continue
                pick = rng.choice(n, size=k, replace=False)
                best = max(pick, key=lambda i: (e.candidates[i]["cdm_score"], -i))
                score = e.candidates[int(best)].get("judge_score")
                if score is not None:
                    per_subset.setdefault(e.triplet.subset, []).append(float(score))
            means = {s: sum(v) / len(v) for s, v in per_subset.items() if v}
            for s, m in means.items():
                rows.append({"model": model, "k": k, "repeat": r, "subset": s, "score": m, "n": len(per_subset[s])})
            if means:
                rows.append({"model": model, "k": k, "repeat": r, "subset": AVG, "score": sum(means.values()) / len(means),
                             "n": sum(len(v) for v in per_subset.values())})
    return rows


def _model_entries(
    name: str, pred_dir: str, triplets: Sequence[Triplet], problems: Problems, strict: bool, notes: list[str]
) -> list[Entry]:
    """One entry per benchmark sample for a predictions folder (missing ones marked)."""
    preds = read_predictions(pred_dir, problems)
    bench_ids = {t.id for t in triplets}
    rows = []
    unreadable = 0
    for t in triplets:
        p = preds.get(t.id)
        if p is None:
            if strict:
                raise DataError(f"{pred_dir}: no prediction for sample {t.id}")
            rows.append(Entry(name, t, None, status="missing", errors=["no prediction"]))
            continue
        # Decoded here, before any judge call: a prediction image that cannot be read is a
        # problem of the line that lists it (a stop under --strict), not a silent gap later.
        why = image_problem(p.image, "prediction") if p.image else None
        if why:
            problems.add(p.file, p.line, why)
            rows.append(Entry(name, t, None, status="missing", errors=[why]))
            unreadable += 1
            continue
        e = Entry(name, t, p.image, candidate=p.chosen)
        e.candidates = [{"image": c.image, "cdm_score": c.score} for c in p.candidates]
        rows.append(e)
    missing = sum(e.status == "missing" for e in rows) - unreadable
    unused = [k for k in preds if k not in bench_ids and k.removeprefix("images/") not in bench_ids]
    if missing:
        notes.append(f"{name}: {missing} of {len(triplets)} samples have no prediction (counted as not scored).")
    if unreadable:
        notes.append(f"{name}: {unreadable} of {len(triplets)} prediction images cannot be read (counted as not "
                     "scored; listed in problems.jsonl).")
    if unused:
        notes.append(f"{name}: {len(unused)} predictions have ids not among the evaluated samples (ignored).")
    return rows


def run_evaluation(cfg: EvaluateConfig, *, show_progress: bool = True) -> dict[str, Any]:
    """Evaluate every predictions directory of ``cfg`` and write the report.

    Args:
        cfg: The resolved config (``bench``, ``out`` and at least one of ``preds`` or
            ``copy_baseline``).
        show_progress: Draw progress bars on stderr.

    Returns:
        ``{"markdown": str, "table": dict, "results": path, "problems": int}``.

    Raises:
        UserError: On a bad bench, predictions folder or config (before anything is written).
    """
    _check_config(cfg)
    out = Path(cfg.out)
    problems = Problems(cfg.strict)
    notes: list[str] = []
    # Inputs first, so a user mistake stops the run before the report directory exists.
    triplets, by_model = _load_inputs(cfg, problems, notes)
    subsets = _subsets_in_order(triplets)
    totals = Counter(t.subset for t in triplets)
    scorers = load_scorers(cfg.metrics)
    if cfg.judge.type == "world":
        from worldboot.evaluate.judge.world import check_world_bench

        check_world_bench(cfg.bench, triplets)
    claim_folder(out, "evaluate")  # before the judge's cache is made there
    judge = make_judge(cfg.judge, out / "judge_cache.sqlite")

    with RunDir(out, cfg, "evaluate", claimed=True) as run, EvalProgress(show_progress) as progress:
        run.log(f"bench {cfg.bench}: {len(triplets)} samples in {len(subsets)} subsets")
        for name, pred_dir in cfg.preds.items():
            run.log(f"{name}: predictions from {pred_dir}")
        models = list(by_model)
        if judge is not None:
            # The judge goes first: the oracle's choice decides which candidates get image metrics.
            _judge_models(judge, cfg, by_model, models, notes, progress, run.log)
        else:
            notes.append("Judge skipped (--judge none): no judge scores, no best-of-N oracle.")
        entries = [e for m in models for e in by_model[m]]
        compute_image_metrics(entries, cfg.metrics, progress, notes, run.log, scorers)
        if judge is not None and cfg.oracle:
            _write_verification(cfg, by_model, out, notes)
        markdown, table = _write_report(cfg, entries, models, subsets, totals, judge, problems, notes)
        run.log(f"wrote {len(entries)} result rows for {len(models)} models")
    return {"markdown": markdown, "table": table, "results": out / "results.jsonl", "problems": len(problems)}


# -- its steps ------------------------------------------------------------------------------------


def _check_config(cfg: EvaluateConfig) -> None:
    """Refuse a config that names no benchmark, report folder or model, or a model called Copy
    beside the Copy baseline.

    Raises:
        ConfigError: Saying what to pass.
    """
    if not cfg.bench:
        raise ConfigError("no benchmark: pass --bench MANIFEST")
    if not cfg.out:
        raise ConfigError("no report directory: pass --out DIR")
    if not cfg.preds and not cfg.copy_baseline:
        raise ConfigError("nothing to evaluate: give a predictions directory or keep copy_baseline")
    if COPY in cfg.preds and cfg.copy_baseline:
        raise ConfigError(f"the model name {COPY!r} is taken by the Copy baseline")
    if cfg.max_per_subset < 0:
        raise ConfigError(f"max_per_subset must be 0 (all) or more, got {cfg.max_per_subset}")


def _load_inputs(
    cfg: EvaluateConfig, problems: Problems, notes: list[str]
) -> tuple[list[Triplet], dict[str, list[Entry]]]:
    """The samples to evaluate, and each model's entries for them (the Copy baseline first).

    Raises:
        DataError: No sample is left after ``subsets`` and ``max_per_subset``.
    """
    triplets = select_samples(load_bench(cfg.bench, problems, cfg.bench_root or None), cfg)
    if not triplets:
        raise DataError(f"{cfg.bench}: no sample left after subsets/max_per_subset")
    by_model: dict[str, list[Entry]] = {}
    if cfg.copy_baseline:
        by_model[COPY] = [Entry(COPY, t, t.source) for t in triplets]
    for name, pred_dir in cfg.preds.items():
        by_model[name] = _model_entries(name, pred_dir, triplets, problems, cfg.strict, notes)
    return triplets, by_model


def _judge_models(
    judge: Any,
    cfg: EvaluateConfig,
    by_model: dict[str, list[Entry]],
    models: list[str],
    notes: list[str],
    progress: EvalProgress,
    log: Callable[[str], None],
) -> None:
    """Judge every model's predictions (and, with ``oracle``, their candidates), note the
    judge's cost and failures, and put each model's best-of-N row right after it."""
    try:
        judge_entries(judge, [e for m in models for e in by_model[m]], cfg.oracle, progress)
    finally:
        judge.close()
    if judge.name == "openai":
        notes.append(usage_note(cfg.judge, judge.usage))
    if judge.usage.failures:
        notes.append(failure_note(judge.name, judge.usage, by_model))
    log(f"judge {judge.name}: {json.dumps(judge.usage.to_json())}")
    if cfg.oracle:
        for name in cfg.preds:
            oracle = oracle_entries(name, by_model[name])
            if oracle is not None:
                by_model[oracle[0]] = oracle[1]
                models.insert(models.index(name) + 1, oracle[0])


def _write_verification(
    cfg: EvaluateConfig, by_model: dict[str, list[Entry]], out: Path, notes: list[str]
) -> None:
    """The score-vs-K curve of every model whose candidates carry dynamics scores, if any."""
    ver_rows: list[dict[str, Any]] = []
    for name in cfg.preds:
        ver_rows += verification_rows(name, by_model[name], cfg.verification)
    if ver_rows:
        from worldboot.evaluate.plots import plot_score_vs_k

        write_atomic(out / "verification.jsonl", "".join(json.dumps(r) + "\n" for r in ver_rows))
        plot_score_vs_k(ver_rows, out / "verification.png")
        notes.append("Test-time verification (score vs K): verification.jsonl and verification.png.")


def _write_report(
    cfg: EvaluateConfig,
    entries: Sequence[Entry],
    models: list[str],
    subsets: list[str],
    totals: Counter,
    judge: Any,
    problems: Problems,
    notes: list[str],
) -> tuple[str, dict[str, Any]]:
    """Write ``results.jsonl``, ``problems.jsonl`` (with a note on them) and the tables; returns
    the Markdown table and ``table.json``'s content (``judge``: None when there was none)."""
    out = Path(cfg.out)
    rows_json = [e.to_json() for e in entries]
    write_atomic(out / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows_json))
    summary = aggregate(rows_json, models, subsets, totals)
    if len(problems):
        problems.write(out / "problems.jsonl")
        counts = ", ".join(f"{k}: {v}" for k, v in problems.counts().most_common())
        notes.append(f"{len(problems)} input problems skipped ({counts}); see problems.jsonl.")
    header = [
        f"Benchmark: `{cfg.bench}` ({sum(totals.values())} samples; "
        + ", ".join(f"{s}: {totals[s]}" for s in subsets)
        + ")",
        f"Judge: {cfg.judge.type}" + (f" ({cfg.judge.model})" if cfg.judge.type == "openai" else ""),
        "Avg. is the mean of the subset means; `(scored/total)` marks partly scored cells.",
    ]
    primary = "judge_score" if judge is not None else "l1"
    required = ("judge_score", "editing_success", "minimal_editing") if judge is not None else ()
    markdown = render_markdown(summary, models, subsets, primary, header, notes, required)
    extra = {
        "bench": cfg.bench,
        "totals": dict(totals),
        "judge": {
            "type": cfg.judge.type,
            "model": cfg.judge.model if cfg.judge.type == "openai" else None,
            "usage": judge.usage.to_json() if judge is not None else None,
        },
        "notes": notes,
        "problems": len(problems),
    }
    table = summary_json(summary, models, subsets, extra, required)
    write_atomic(out / "table.md", markdown)
    write_atomic(out / "table.csv", render_csv(summary, models, subsets, required))
    write_atomic(out / "table.json", json.dumps(table, indent=2))
    return markdown, table


def parse_named(items: Sequence[str], what: str) -> dict[str, str]:
    """``name=path`` or bare ``path`` items into ``{name: path}`` (bare: the folder or file name).

    Raises:
        UserError: On an empty name or a name given twice.
    """
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            path = item
            p = Path(item.rstrip("/"))
            name = p.stem if p.suffix in (".jsonl", ".json") else p.name
            if name in out:  # two folders with the same name: use parent/name
                name = f"{p.parent.name}/{p.name}"
        if not name or not path:
            raise UserError(f"{what} '{item}' must look like NAME=PATH or PATH")
        if name in out:
            raise UserError(f"{what} name '{name}' is given twice; name them with NAME=PATH")
        out[name] = path
    return out
