"""``worldboot generate``: predict the next observation of every (source, action) of a manifest."""

from __future__ import annotations

import argparse

from worldboot.commands import (
    HELP_FORMATTER,
    add_ray_arguments,
    check_ray_flags,
    check_verifier_flags,
    ray_flags,
    seed_int,
)

EXAMPLE = """examples:
  worldboot generate aurora/test.json --world runs/cwm --out runs/pred-cwm
  worldboot generate bench.jsonl --world runs/cwm --out runs/pred-bo3 --best-of 3 --verifier runs/cdm
  worldboot generate bench.jsonl --world runs/cwm --out runs/pred --repeats 3 --seed 1 \\
      sampling.temperature=1.0 sampling.top_k=0 sampling.top_p=1.0 sampling.guidance_scale=1.0
  worldboot generate aurora/test.json --config configs/anole7b/generate.yaml --world anole-cwm \\
      --verifier anole-cdm --out runs/pred --shard 0/4        # one of four jobs; the last one merges
  accelerate launch --config_file configs/accelerate/ddp.yaml -m worldboot.cli generate \\
      aurora/test.json --config configs/anole7b/generate.yaml --world anole-cwm --out runs/pred
  worldboot generate aurora/test.json --config configs/anole7b/generate.yaml --world anole-cwm \\
      --verifier anole-cdm --out runs/pred --engine ray --ray-address HEAD:6379 --actors 8 --gpus-per-actor 1

outputs (PRED): predictions.jsonl (one row per id: image, seed, candidates with scores, chosen),
images/<id>.png, candidates/<id>/<k>.png, codes/<id>.safetensors, problems.jsonl, config.yaml,
meta.json; with --repeats R, PRED/repeat-k/ per run. A killed run resumes where it stopped.
exit code: 0 (bad rows, if any, were skipped and listed in problems.jsonl), 2 on a user error
(with --strict: at the first bad row).
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``generate`` subcommand."""
    p = sub.add_parser(
        "generate",
        help="predict next observations with the world model (optionally best-of-N with the CDM)",
        description="For each (source, action) of a manifest, sample the next observation with the world "
        "model (image tokens only, exactly L of them) and decode it to a PNG. With --best-of N and a "
        "verifier, the dynamics model scores the N candidates by log p(action | source, candidate) and the "
        "best is the prediction; all candidates and scores are kept.",
        epilog=EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    p.add_argument("manifest", metavar="MANIFEST", nargs="?",
                   help="triplet JSONL, AURORA-BENCH test.json or another supported format (config: manifest)")
    p.add_argument("--world", metavar="MODEL_DIR", help="the world model (CWM): model, run or adapter directory")
    p.add_argument("--out", metavar="PRED", help="the predictions folder")
    p.add_argument("--config", metavar="YAML", help="preset (configs/generate/*.yaml, configs/anole7b/generate.yaml, configs/emu3/generate.yaml)")
    p.add_argument("--best-of", type=int, metavar="N", help="candidates per sample (config: best_of); without a "
                   "verifier the first is the prediction and all are kept for the evaluation's oracle")
    p.add_argument("--verifier", metavar="MODEL_DIR", help="the dynamics model (CDM) that picks the best candidate")
    p.add_argument("--verifier-score", choices=("total", "mean"),
                   help="rank by total log p of the action (default) or its mean per token")
    p.add_argument("--repeats", type=int, metavar="R", help="independent runs, written to PRED/repeat-k")
    p.add_argument("--seed", type=seed_int, help="run seed; each sample's seed derives from it and its id")
    p.add_argument("--batch-size", type=int, metavar="B", help="prompts per forward pass")
    p.add_argument("--shard", metavar="i/n", help="predict only the i-th of n parts (default: all, or the "
                   "accelerate process's part)")
    p.add_argument("--format", dest="data_format", metavar="FMT",
                   help="the manifest's format: aurora-bench, aurora-train, epic, jsonl (default: guessed)")
    p.add_argument("--root", help="folder the manifest's image paths are relative to")
    p.add_argument("--task", help="keep only these subsets, comma-separated")
    p.add_argument("--dtype", help="model dtype, e.g. bfloat16 (default float32)")
    p.add_argument("--device", help="cpu, cuda, cuda:1... (default: accelerate's device or cpu)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad manifest row")
    add_ray_arguments(p, "batches of samples")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted config overrides, e.g. sampling.temperature=1.0 sampling.top_k=0")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """The resolved :class:`~worldboot.infer.config.GenerateConfig` (precedence: see
    :mod:`worldboot.config`)."""
    from worldboot.config import load_config
    from worldboot.infer.config import GenerateConfig

    flags = {
        "manifest": args.manifest,
        "world": args.world,
        "out": args.out,
        "best_of": args.best_of,
        "repeats": args.repeats,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "format": args.data_format,
        "root": args.root,
        "tasks": args.task,
        "dtype": args.dtype,
        "device": args.device,
        "verifier.path": args.verifier,
        "verifier.score": args.verifier_score,
        "strict": True if args.strict else None,
        **ray_flags(args),
    }
    cfg = load_config(GenerateConfig, args.config, args.overrides or [], flags=flags)
    cfg.validate()
    check_ray_flags(args, cfg.engine)
    check_verifier_flags(args, cfg.verifier.path)
    return cfg


def run(args: argparse.Namespace) -> int:
    """Generate, then print a one-line summary."""
    import sys

    from worldboot.infer.generate import run_generate
    from worldboot.runs import parse_shard

    cfg = config_from_args(args)
    shard = parse_shard(args.shard) if args.shard else None
    try:
        summary = run_generate(cfg, shard=shard, progress=args.progress)
    finally:
        import torch.distributed as tdist

        # Under accelerate launch: without this, the other ranks abort at exit.
        if tdist.is_available() and tdist.is_initialized():
            tdist.destroy_process_group()
    part = f" (shard {summary.shard}: {summary.shard_samples})" if summary.shard != "0/1" else ""
    merged = "" if summary.merged else "; the last shard to finish merges"
    if summary.reencoded:
        print("note: the verifier has another image tokenizer: candidates were re-encoded with it "
              "(verifier.on_mismatch=error refuses instead)", file=sys.stderr)
    print(
        f"{summary.samples} samples loaded{part}: {summary.predicted} predictions now, {summary.done_before} earlier; "
        f"{summary.problems} problems, in loading and predicting -> {summary.out}{merged}",
        file=sys.stderr,
    )
    return 0
