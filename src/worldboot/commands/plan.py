"""``worldboot plan``: what a training job will need (data, steps, parameters, memory per GPU
under DDP, ZeRO-2 and ZeRO-3), before it runs, on a machine without a GPU."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from worldboot.commands import HELP_FORMATTER

if TYPE_CHECKING:
    from worldboot.train.plan import Plan

EXAMPLE = """examples:
  worldboot plan --config configs/anole7b/cft.yaml --base anole-7b --gpus 4 --gpu-memory 80 --examples 40000
  worldboot plan --config configs/anole7b/cwm.yaml --base /models/anole-7b-hf \\
      --cache aurora=runs/cache/aurora-train --cache ucf101=runs/cache/ucf101 --gpus 8 --gpu-memory 40
  worldboot plan --config configs/demo/cdm.yaml --base "$(worldboot base path --preset paper)" \\
      --cache runs/demo/cache/labelled --json
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``plan`` subcommand."""
    p = sub.add_parser(
        "plan",
        help="what a training job will need, before it runs (no GPU needed)",
        description="Size a training job before it takes the GPUs: the mixture after caps and its steps, "
        "trainable and total parameters, and the memory per GPU for DDP, ZeRO-2 and ZeRO-3 (model states "
        "from DeepSpeed's estimators, activations measured on a meta-device copy of one layer, with and "
        "without gradient checkpointing), whether it fits and the largest micro-batch that does. The model "
        "is built on the meta device from its config: no weight is read.",
        epilog=EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    p.add_argument("--config", metavar="YAML", required=True, help="a training preset (as worldboot train takes)")
    p.add_argument("--task", choices=("dynamics", "world", "world-rl", "dynamics-rl"),
                   help="the task (default: the preset's)")
    p.add_argument("--base", metavar="DIR|NAME",
                   help="a model directory, or a named config (anole-7b: transformers' Chameleon-7B config); "
                   "default: the preset's base_model")
    p.add_argument("--cache", metavar="[NAME=]DIR", action="append", default=[],
                   help="a token cache, as worldboot train takes it (repeatable); unbuilt caches count as unknown")
    p.add_argument("--examples", type=int, metavar="N",
                   help="training examples per epoch, for steps when the caches are not built yet")
    p.add_argument("--gpus", type=int, default=4, metavar="N", help="GPUs of the job (default 4, as the paper)")
    p.add_argument("--gpu-memory", type=float, default=80.0, metavar="GIB",
                   help="memory of each GPU in GiB (default 80: the paper's H100)")
    p.add_argument("--text-tokens", type=int, default=64, metavar="N",
                   help="tokens of the prompt's words and an action text (default 64)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides, e.g. micro_batch_size=8")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Resolve the config, plan it and print the plan."""
    import math
    import sys

    from worldboot.errors import ConfigError
    from worldboot.train.config import dedupe_caches
    from worldboot.train.plan import make_plan
    from worldboot.train.resolve import resolve_train_config

    if args.gpus < 1 or not (math.isfinite(args.gpu_memory) and args.gpu_memory > 0):  # nan and inf too
        raise ConfigError(f"--gpus must be at least 1 and --gpu-memory a number above 0, got {args.gpus} and "
                          f"{args.gpu_memory:g}")
    if (args.examples is not None and args.examples < 1) or args.text_tokens < 0:
        raise ConfigError(f"--examples must be at least 1 and --text-tokens at least 0, got {args.examples} and "
                          f"{args.text_tokens}")
    caches, notes = dedupe_caches(args.cache)  # one folder given twice is read once
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    cfg = resolve_train_config(args.config, args.overrides, task=args.task, caches=caches)
    model = args.base or cfg.base_model
    if not model:
        raise ConfigError(f"{args.config} names no base_model: give --base DIR, or a named config (--base anole-7b)")
    import warnings

    with warnings.catch_warnings():  # peft asks transformers a deprecated question about checkpointing
        warnings.simplefilter("ignore", FutureWarning)
        plan = make_plan(cfg, model, args.gpus, args.gpu_memory, examples=args.examples,
                         text_tokens=args.text_tokens)
    if args.json:
        print(json.dumps(plan.to_json(), indent=2))
    else:
        _print(plan, cfg.micro_batch_size, cfg.gradient_checkpointing)
    return 0


def _gib(n: float) -> str:
    return f"{n / 1024**3:.1f} GiB"


def _print(plan: Plan, micro_batch: int, checkpointing: bool) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{plan.task}[/] on {plan.model}, {plan.gpus} GPU(s) of {plan.gpu_gib:g} GiB")
    data = Table("source", "cache", "caps", "training examples", title="data (after caps and repeats)")
    for row in plan.mixture:
        caps = ", ".join(f"{k} {v}" for k, v in row["max_per_subset"].items()) or "-"
        data.add_row(row["name"], row["cache"] or "-", caps, "not built" if row["train"] is None else str(row["train"]))
    console.print(data)
    unknown = "unknown (build the caches, or give --examples)"
    console.print(f"examples per epoch {plan.examples if plan.examples is not None else unknown}; "
                  f"steps per epoch {plan.steps_per_epoch if plan.steps_per_epoch is not None else '-'}; "
                  f"steps in all {plan.total_steps if plan.total_steps is not None else '-'}")
    console.print(f"parameters: {plan.total_params:,} in all, {plan.trainable_params:,} trained "
                  f"({plan.trainable_params / plan.total_params:.2%}); {plan.sequence} tokens an example, "
                  f"{plan.loss_positions} of them in the loss")
    mem = Table("strategy", "model states", "activations", "checkpointed", "fits", "max micro-batch",
                "checkpointed", title=f"memory per GPU (bf16, micro-batch {micro_batch}; fits: "
                f"{'with' if checkpointing else 'without'} gradient checkpointing, as the config says)")
    for m in plan.memory:
        mem.add_row(m.strategy, _gib(m.model_states), _gib(m.activations), _gib(m.activations_checkpointed),
                    "yes" if m.fits else "[red]no[/]", str(m.max_micro_batch), str(m.max_micro_batch_checkpointed))
    console.print(mem)
    if plan.refusal:  # the trainer's own refusal (worldboot.train.config.accumulation_steps)
        console.print(f"[bold red]not runnable[/] on {plan.gpus} GPU(s): worldboot train would refuse it: "
                      f"{escape(plan.refusal)}")
    elif not plan.runnable:
        console.print(f"[bold red]not runnable[/] on {plan.gpus} GPU(s): no strategy fits micro-batch {micro_batch} "
                      "in memory (the table's largest micro-batches say what would)")
    else:
        console.print(f"runnable on {plan.gpus} GPU(s): a step accumulates {plan.accumulation_steps} "
                      f"micro-batch(es) of {micro_batch} on each")
    console.print("Not counted: the CUDA context, allocator fragmentation and DeepSpeed's buffers (2 GiB is kept "
                  "free for them).")
    paper = plan.paper
    if paper:
        per_step = (f", about {paper['gpu_seconds_per_step']:.0f} GPU-seconds a step at this plan's steps"
                    if "gpu_seconds_per_step" in paper else "")
        console.print(f"The paper (Appendix L.2): its {paper['run'].upper()} took about {paper['gpu_hours']} GPU "
                      f"hours on {paper['gpus']} H100 {paper['gpu_gib']}GB{per_step}; inference about "
                      f"{paper['seconds_per_sample']:.1f} s a sample on one A100 80GB "
                      f"({paper['seconds_per_sample_best_of_8']:.0f} s with best-of-8).")
