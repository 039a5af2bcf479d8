"""``worldboot probe``: does a model prefer real trajectories over the four negatives?"""

from __future__ import annotations

import argparse

from worldboot.commands import HELP_FORMATTER

EXAMPLE = """examples:
  worldboot probe ../shared/data/aurora-bench/test.json --model runs/base --out runs/probe
  worldboot probe data/world/manifest.jsonl --model runs/cdm --out runs/probe-cdm --max-per-subset 50 score=total
  worldboot probe bench.jsonl --model anole=/models/anole-7b-hf --vlm qwen=/models/Qwen2.5-VL-7B-Instruct --out runs/probe-vlms
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``probe`` subcommand."""
    p = sub.add_parser(
        "probe",
        help="preference probe of a model on real vs manipulated trajectories (Figure 2)",
        description=(
            "For each triplet and each negative (random action, random observation, copy observation, "
            "inverse observation), in both directions (world: log p(o_t | o_s, a); dynamics: log p(a | o_s, o_t)), "
            "check whether the model scores the reference higher. Writes preferences.jsonl, probe.md/csv/json, "
            "figure2_preferences.png and figure10_nll.png."
        ),
        epilog=EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    p.add_argument("manifest", help="triplets: a JSONL manifest, AURORA-BENCH test.json, AURORA train.json or EPIC CSV")
    p.add_argument("--model", action="append", default=[], metavar="[NAME=]DIR",
                   help="a backbone directory (base, or a trained run); repeatable")
    p.add_argument("--vlm", action="append", default=[], metavar="[NAME=]DIR",
                   help="a transformers image-text-to-text model (e.g. Qwen2.5-VL), dynamics direction only; repeatable")
    p.add_argument("--out", required=True, metavar="DIR", help="report directory")
    p.add_argument("--root", metavar="DIR", help="folder the manifest's image paths are relative to")
    p.add_argument("--task", help="keep only these subsets (comma-separated)")
    p.add_argument("--max-per-subset", type=int, default=None, help="probe at most N triplets per subset (0: all, the default)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad entry instead of skipping it")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides: kinds=[copy_observation] directions=[world] score=mean|total batch_size=8 seed=0")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load, probe, write the report and print the tables."""

    from rich.markdown import Markdown

    from worldboot.config import load_config
    from worldboot.data.formats import load_any
    from worldboot.data.negatives import NEGATIVE_KINDS
    from worldboot.data.schema import Problems
    from worldboot.errors import ConfigError, DataError
    from worldboot.evaluate.probe import (
        DIRECTIONS,
        BackboneScorer,
        ProbeConfig,
        VLMScorer,
        compare_markdown,
        probe,
        write_report,
    )
    from worldboot.models import check_model_dir, load_backbone
    from worldboot.progress import console as make_console
    from worldboot.progress import progress_bar
    from worldboot.run_guards import out_folder
    from worldboot.runs import RunDir, write_atomic

    cfg = load_config(ProbeConfig, None, args.overrides, flags={"max_per_subset": args.max_per_subset})
    bad = [k for k in cfg.kinds if k not in NEGATIVE_KINDS] + [d for d in cfg.directions if d not in DIRECTIONS]
    if bad:
        raise ConfigError(f"unknown kind or direction {bad[0]!r}; kinds: {', '.join(NEGATIVE_KINDS)}; "
                          f"directions: {', '.join(DIRECTIONS)}")
    for key, values, known in (("kinds", cfg.kinds, NEGATIVE_KINDS), ("directions", cfg.directions, DIRECTIONS)):
        if not values:  # nothing to probe: an empty table, and exit 0
            raise ConfigError(f"{key} is empty: name at least one of {', '.join(known)} (or leave it out for all)")
    models = [_named(m) for m in args.model]
    vlms = [_named(m) for m in args.vlm]
    if not models and not vlms:
        raise ConfigError("give at least one --model or --vlm")
    for _, path in models + vlms:  # before the report's folder is made
        check_model_dir(path)
    names = [n for n, _ in models + vlms]
    if len(set(names)) != len(names):
        raise ConfigError(f"model names must differ: {', '.join(names)} (use NAME=DIR)")
    console = make_console(stderr=True)
    problems = Problems(strict=args.strict)
    triplets = load_any(args.manifest, root=args.root, tasks=args.task, problems=problems)
    if not triplets:
        raise DataError(f"no usable triplet in {args.manifest}")
    single = len(names) == 1
    out = out_folder(args.out, "probe")
    summaries = {}
    with RunDir(out, cfg, "probe") as run_dir:
        for kind, (name, path) in [("model", m) for m in models] + [("vlm", v) for v in vlms]:
            if kind == "model":
                scorer = BackboneScorer(load_backbone(path), cfg)
            else:
                from worldboot.evaluate.vlm import VLMDynamicsScorer

                scorer = VLMScorer(VLMDynamicsScorer(path), cfg)
            with progress_bar(None, transient=True) as bar:
                task = bar.add_task(f"scoring {name}", total=None)
                rows = probe(triplets, scorer, cfg, problems,
                             progress=lambda d, t, task=task: bar.update(task, completed=d, total=t))
            target = out if single else out / name
            summaries[name] = write_report(rows, target)
            run_dir.log(f"{name}: {len(rows)} comparisons")
            make_console().print(Markdown(f"## {name}\n\n" + (target / "probe.md").read_text()))
        if not single:
            write_atomic(out / "compare.md", compare_markdown(summaries))
            make_console().print(Markdown(compare_markdown(summaries)))
        problems.write(out / "problems.jsonl")
    for p in problems:
        console.print(f"skipped: {p}", markup=False)
    console.print(f"{len(triplets)} triplets, {len(names)} model(s); report in {out}")
    return 0


def _named(spec: str) -> tuple[str, str]:
    """``NAME=DIR`` or ``DIR`` (named after its folder)."""
    from pathlib import Path

    if "=" in spec:
        name, _, path = spec.partition("=")
        return name, path
    return Path(spec).name or spec, spec
