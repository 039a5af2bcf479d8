"""``worldboot evaluate``: score predictions against a benchmark.

Verbs (the first word after ``evaluate``; without one, ``run`` is meant, so
``worldboot evaluate PRED --bench MANIFEST`` works as written in the docs):

* ``run``: next-observation predictions (judge, L1, CLIP-I, CLIP-T, DINO; Copy and best-of-N).
* ``actions``: predicted actions of a dynamics model (BERTScore, ROUGE-1/L, BLEU).
* ``spatial``: multiple-choice spatial reasoning accuracy of a backbone.
* ``plot``: the score-vs-K plot of test-time verification.
* ``human``: the analysis of a blind human study's votes (Table 6), :mod:`worldboot.evaluate.human`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from worldboot.commands import HELP_FORMATTER

EXAMPLE = """examples:
  worldboot evaluate runs/cwm/predictions --bench bench.jsonl --out reports/cwm
  worldboot evaluate --pred CWM=runs/cwm/pred --pred C-FT=runs/cft/pred --pred GoT=got_out/ \\
      --bench aurora-bench/test.json --out reports/aurora --judge openai --clip models/clip-vit-l14
  worldboot evaluate runs/world/pred --bench world/test.jsonl --out reports/world --judge world
  worldboot evaluate runs/cwm/pred --bench bench.jsonl --out reports/cwm judge.concurrency=8  # any config key
  worldboot evaluate actions runs/cdm/actions.jsonl --bench bench.jsonl --out reports/cdm
  worldboot evaluate spatial spatialmqa.jsonl --model runs/cwm/model --out reports/spatial
  worldboot evaluate plot reports/aurora/verification.jsonl --out fig7.png --ref GoT=3.14 --ref SE=3.41
  worldboot evaluate <verb> --help
"""

def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", metavar="YAML", help="a preset (configs/evaluate/*.yaml)")
    p.add_argument("--strict", action="store_true", default=None, help="stop at the first bad input instead of counting it")
    p.set_defaults(overrides=[])  # key=value words after the options (collected by worldboot.cli)


def _add_run(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "run",
        help="score next-observation predictions (the default verb)",
        description=(
            "Score predicted next observations of one or more models on a benchmark: the judge "
            "(min of editing success and minimal editing, 0-10), L1, CLIP-I, CLIP-T and DINO, with the "
            "Copy baseline and the best-of-N oracle. Writes results.jsonl, table.md, table.csv and "
            "table.json into --out and prints the Markdown table. 'run' may be omitted."
        ),
        epilog=EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    p.add_argument("preds", nargs="*", metavar="PRED|KEY=VALUE",
                   help="predictions folders, and dotted config overrides (e.g. judge.concurrency=8)")
    p.add_argument("--pred", dest="named_preds", action="append", default=[], metavar="NAME=DIR",
                   help="a named predictions folder (repeatable; one table row each)")
    p.add_argument("--bench", metavar="MANIFEST", help="triplet JSONL manifest or AURORA-BENCH test.json")
    p.add_argument("--out", metavar="DIR", help="report directory")
    p.add_argument("--judge", dest="judge_type", choices=["openai", "world", "none"],
                   help="judge variant (default openai: GPT-4o, needs OPENAI_API_KEY; world: the embedded world's own judge)")
    p.add_argument("--judge.model", dest="judge_model", metavar="NAME", help="judge model (default gpt-4o-2024-11-20)")
    p.add_argument("--judge.base-url", dest="judge_base_url", metavar="URL", help="OpenAI-compatible server URL")
    p.add_argument("--clip", metavar="DIR", help="CLIP model directory (enables CLIP-I and CLIP-T)")
    p.add_argument("--dino", metavar="DIR", help="DINOv2 model directory (enables DINO)")
    p.add_argument("--subsets", metavar="A,B", help="only these subsets")
    p.add_argument("--max-per-subset", type=int, metavar="N", help="only the first N samples of each subset")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _common(p)
    p.set_defaults(func=run)


def _add_actions(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "actions",
        help="score predicted actions (BERTScore, ROUGE-1/L, BLEU)",
        description=(
            "Compare a dynamics model's predicted actions ({id, action} JSONL rows) with the "
            "benchmark's, as in the paper's Table 1. BERTScore defaults to the offline MiniLM-L6 "
            "model (not comparable with roberta-large numbers)."
        ),
        epilog="example:\n  worldboot evaluate actions --pred CDM=runs/cdm/actions.jsonl --bench bench.jsonl --out reports/cdm\n",
        formatter_class=HELP_FORMATTER,
    )
    p.add_argument("preds", nargs="*", metavar="PRED_ACTIONS|KEY=VALUE",
                   help="predicted actions JSONL files, and dotted config overrides")
    p.add_argument("--pred", dest="named_preds", action="append", default=[], metavar="NAME=FILE",
                   help="a named predicted-actions file (repeatable; one table row each)")
    p.add_argument("--bench", metavar="MANIFEST", help="benchmark with the ground-truth actions")
    p.add_argument("--out", metavar="DIR", help="report directory")
    p.add_argument("--bertscore-model", metavar="DIR", help="BERTScore model (default: bundled MiniLM-L6)")
    p.add_argument("--no-bertscore", action="store_true", help="skip BERTScore (it loads a transformer)")
    _common(p)
    p.set_defaults(func=run_actions)


def _add_spatial(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "spatial",
        help="multiple-choice spatial reasoning accuracy",
        description=(
            "Score every choice of {image, question, choices, answer} JSONL items as a completion "
            "of the image and question; the most likely choice is the answer. Accuracy per file."
        ),
        epilog="example:\n  worldboot evaluate spatial spatialmqa.jsonl --model runs/cwm/model --out reports/spatial\n",
        formatter_class=HELP_FORMATTER,
    )
    p.add_argument("files", nargs="+", metavar="FILE|KEY=VALUE", help="multiple-choice JSONL files, and dotted config overrides")
    p.add_argument("--model", metavar="DIR", help="backbone directory")
    p.add_argument("--out", metavar="DIR", help="report directory")
    _common(p)
    p.set_defaults(func=run_spatial)


def _add_plot(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "plot",
        help="plot judge score against K (test-time verification)",
        description=(
            "Draw the paper's Figure 7 from rows {model, k, repeat, subset, score} (JSONL or CSV; "
            "'worldboot evaluate' writes verification.jsonl). Several files are concatenated."
        ),
        epilog="example:\n  worldboot evaluate plot reports/a/verification.jsonl --out fig7.png --ref GoT=3.14\n",
        formatter_class=HELP_FORMATTER,
    )
    p.add_argument("files", nargs="+", metavar="K_RESULTS", help="JSONL or CSV files of K results")
    p.add_argument("--out", required=True, metavar="FILE", help="image file; its suffix names the format (.png, .pdf, .svg; PNG when it has none)")
    p.add_argument("--ref", action="append", default=[], metavar="LABEL=SCORE", help="a horizontal reference line")
    p.add_argument("--title", default="Test-time verification", help="figure title")
    p.set_defaults(func=run_plot)


def _add_human(verbs: argparse._SubParsersAction) -> None:
    from worldboot.evaluate import human

    p = verbs.add_parser(
        "human", help="analyse a blind human study's votes (Table 6)",
        description=(human.__doc__ or "").strip().splitlines()[0], epilog=human.EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    human.add_arguments(p)
    p.set_defaults(func=human.main)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` command and its verbs."""
    p = sub.add_parser(
        "evaluate",
        help="score predictions: images (judge, L1, CLIP, DINO), actions, spatial reasoning",
        description=(
            "Evaluate predictions against a benchmark. The first word selects a verb; without one "
            "'run' is meant: worldboot evaluate PRED --bench MANIFEST --out DIR."
        ),
        epilog=EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    p.default_verb = "run"
    verbs = p.add_subparsers(dest="verb", metavar="VERB", parser_class=argparse.ArgumentParser)
    _add_run(verbs)
    _add_actions(verbs)
    _add_spatial(verbs)
    _add_plot(verbs)
    _add_human(verbs)
    p.verbs = frozenset(verbs.choices)
    p.set_defaults(func=lambda args: p.print_help() or 2)


# -- handlers ------------------------------------------------------------------------------------


def _split(items: list[str], args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Positional words into (inputs, ``key.sub=value`` overrides): a word with ``=`` is an
    override, as in every worldboot command (name an input with ``--pred NAME=DIR``)."""
    return [i for i in items if "=" not in i], [i for i in items if "=" in i] + list(args.overrides)


def _resolve(cls: type, args: argparse.Namespace, overrides: list[str], flags: dict[str, Any]):
    """The verb's config; precedence as in :mod:`worldboot.config` (flags win)."""
    from worldboot.config import load_config

    return load_config(cls, args.config, overrides, flags=flags)


def run(args: argparse.Namespace) -> int:
    """Evaluate next-observation predictions and print the Markdown table."""
    from worldboot.evaluate.run import EvaluateConfig, parse_named, run_evaluation

    inputs, overrides = _split(args.preds, args)
    preds = parse_named([*inputs, *args.named_preds], "predictions")
    flags: dict[str, Any] = {
        "bench": args.bench,
        "out": args.out,
        "preds": preds or None,
        "judge.type": args.judge_type,
        "judge.model": args.judge_model,
        "judge.base_url": args.judge_base_url,
        "metrics.clip": args.clip,
        "metrics.dino": args.dino,
        "subsets": [s.strip() for s in args.subsets.split(",") if s.strip()] if args.subsets else None,
        "max_per_subset": args.max_per_subset,
        "strict": args.strict,
    }
    cfg = _resolve(EvaluateConfig, args, overrides, flags)
    import os

    quiet = args.quiet or bool(os.environ.get("WORLDBOOT_NO_PROGRESS")) or not sys.stderr.isatty()
    result = run_evaluation(cfg, show_progress=not quiet)
    print(result["markdown"], end="")
    return 0


def run_actions(args: argparse.Namespace) -> int:
    """Score predicted actions and print the Markdown table."""
    from worldboot.evaluate.actions import ActionsConfig
    from worldboot.evaluate.actions import run_actions as _run_actions
    from worldboot.evaluate.run import parse_named

    inputs, overrides = _split(args.preds, args)
    flags = {
        "bench": args.bench,
        "out": args.out,
        "preds": parse_named([*inputs, *args.named_preds], "predicted actions") or None,
        "text.bertscore_model": args.bertscore_model,
        "text.bertscore": False if args.no_bertscore else None,
        "strict": args.strict,
    }
    cfg = _resolve(ActionsConfig, args, overrides, flags)
    print(_run_actions(cfg)["markdown"], end="")
    return 0


def run_spatial(args: argparse.Namespace) -> int:
    """Score multiple-choice files and print the accuracy table."""
    from worldboot.evaluate.spatial import SpatialConfig
    from worldboot.evaluate.spatial import run_spatial as _run_spatial

    files, overrides = _split(args.files, args)
    flags = {"model": args.model, "out": args.out, "files": files or None, "strict": args.strict}
    cfg = _resolve(SpatialConfig, args, overrides, flags)
    print(_run_spatial(cfg)["markdown"], end="")
    return 0


def run_plot(args: argparse.Namespace) -> int:
    """Draw the score-vs-K plot (--out checked before any file is read)."""
    import math

    from worldboot.errors import UserError
    from worldboot.evaluate.plots import figure_path, plot_score_vs_k, read_k_rows

    out = figure_path(args.out, "--out")
    refs: dict[str, float] = {}
    for item in args.ref:
        label, sep, value = item.partition("=")
        try:
            refs[label] = float(value)
        except ValueError:
            sep = ""
        if not sep or not label or not math.isfinite(refs.get(label, 0.0)):
            raise UserError(f"--ref '{item}' must look like LABEL=SCORE (a finite number)")
    rows = [r for f in args.files for r in read_k_rows(f)]
    path = plot_score_vs_k(rows, out, references=refs, title=args.title)
    print(f"wrote {path}")
    return 0
