"""``worldboot probe``: does a model prefer real trajectories over the four negatives?"""

from __future__ import annotations

import argparse

from worldboot.commands import HELP_FORMATTER

EXAMPLE = """examples:
  worldboot probe ../shared/data/aurora-bench/test.json --model runs/base --out runs/probe
  worldboot probe data/world/manifest.jsonl --model runs/cdm --out runs/probe-cdm --max-per-subset 50 score=total
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
    p.add_argument("--model", required=True, metavar="DIR", help="model directory (base, or a trained run)")
    p.add_argument("--out", required=True, metavar="DIR", help="report directory")
    p.add_argument("--root", metavar="DIR", help="folder the manifest's image paths are relative to")
    p.add_argument("--task", help="keep only these subsets (comma-separated)")
    p.add_argument("--max-per-subset", type=int, default=None, help="probe at most N triplets per subset")
    p.add_argument("--strict", action="store_true", help="stop at the first bad entry instead of skipping it")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides: kinds=[copy_observation] directions=[world] score=mean|total batch_size=8 seed=0")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load, probe, write the report and print the tables."""
    from rich.console import Console
    from rich.markdown import Markdown
    from rich.progress import Progress

    from worldboot.config import RunDir, load_config
    from worldboot.data.formats import load_any
    from worldboot.data.negatives import NEGATIVE_KINDS
    from worldboot.data.schema import Problems
    from worldboot.errors import ConfigError, DataError
    from worldboot.evaluate.probe import DIRECTIONS, ProbeConfig, probe, write_report
    from worldboot.models import load_backbone

    cfg = load_config(ProbeConfig, None, args.overrides)
    if args.max_per_subset is not None:
        cfg.max_per_subset = args.max_per_subset
    bad = [k for k in cfg.kinds if k not in NEGATIVE_KINDS] + [d for d in cfg.directions if d not in DIRECTIONS]
    if bad:
        raise ConfigError(f"unknown kind or direction {bad[0]!r}; kinds: {', '.join(NEGATIVE_KINDS)}; "
                          f"directions: {', '.join(DIRECTIONS)}")
    console = Console(stderr=True)
    problems = Problems(strict=args.strict)
    triplets = load_any(args.manifest, root=args.root, tasks=args.task, problems=problems)
    if not triplets:
        raise DataError(f"no usable triplet in {args.manifest}")
    backbone = load_backbone(args.model)
    with RunDir(args.out, cfg, "probe") as run_dir, Progress(console=console, transient=True) as bar:
        task = bar.add_task("scoring", total=None)
        rows = probe(triplets, backbone, cfg, problems, progress=lambda d, t: bar.update(task, completed=d, total=t))
        summary = write_report(rows, args.out)
        problems.write(f"{args.out}/problems.jsonl")
        run_dir.log(f"{len(triplets)} triplets, {len(rows)} comparisons, {len(problems)} problems")
    Console().print(Markdown((run_dir.path / "probe.md").read_text()))
    for p in problems:
        console.print(f"skipped: {p}", markup=False)
    console.print(f"{len(rows)} comparisons over {len(summary['subsets']) - 1} subsets; report in {args.out}")
    return 0
