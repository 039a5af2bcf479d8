"""``worldboot world``: make data from the procedural world, and read its images back.

``worldboot world triplets`` writes labelled (source, action, target) PNG triplets and a JSONL
manifest for the five subsets ``world/move``, ``world/count``, ``world/relation``,
``world/attribute`` and ``world/motion``. ``worldboot world clips`` writes unlabelled mp4
clips, one folder per class as in Kinetics, with a separate ground truth for evaluation.
``worldboot world parse`` prints the scene the parser reads in images (useful to check what a
generated image shows). See :mod:`worldboot.world.scene`.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import asdict
from typing import Any

from worldboot.commands import HELP_FORMATTER, seed_int

TRIPLETS_EXAMPLE = """example:
  worldboot world triplets --out data/world --n-per-subset 200 --seed 0
  worldboot world triplets --out data/world-moves --n-per-subset 50 --subsets world/move --size 96
"""
CLIPS_EXAMPLE = """example:
  worldboot world clips --out data/world-clips --n 50 --seed 0
  worldboot world clips --out data/world-clips-64 --n 10 --seed 1 --size 64 --fps 12
"""
PARSE_EXAMPLE = """example:
  worldboot world parse data/world/images/move/world-move-000000-source.png
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``world triplets``, ``world clips`` and ``world parse``."""
    p = sub.add_parser(
        "world",
        help="generate triplets and clips from the procedural world, parse its images",
        description="The procedural table-top world: labelled triplets, unlabelled clips, a scene parser.",
        epilog=TRIPLETS_EXAMPLE + "\n" + CLIPS_EXAMPLE + "\n" + PARSE_EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    wsub = p.add_subparsers(dest="world_command", metavar="SUBCOMMAND")

    t = wsub.add_parser(
        "triplets",
        help="write labelled PNG triplets and a JSONL manifest",
        description="Write n triplets per world subset: images/<family>/<id>-{source,target}.png and "
        "manifest.jsonl, whose meta holds the structured action and both scenes. Deterministic by seed.",
        epilog=TRIPLETS_EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--n-per-subset", type=int, required=True, help="triplets per subset")
    t.add_argument("--seed", type=seed_int, default=0, help="seed of the run (default: 0)")
    t.add_argument("--size", type=int, default=64, help="image side in pixels, a multiple of 4 (default: 64)")
    t.add_argument(
        "--subsets",
        default=None,
        help="comma-separated subsets, e.g. world/move,world/motion (default: all five)",
    )
    t.add_argument("--canonical", action="store_true", help="always use the canonical action text")
    t.set_defaults(func=run_triplets)

    c = wsub.add_parser(
        "clips",
        help="write unlabelled mp4 clips (a folder per class) and their ground truth",
        description="Write n mp4 clips in which several actions happen one after another, under "
        "<class>/clip_NNNNN.mp4, and ground_truth.jsonl with each action's frame span (for evaluation "
        "only). A rerun with the same settings skips clips already written.",
        epilog=CLIPS_EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    c.add_argument("--out", required=True, help="output folder")
    c.add_argument("--n", type=int, required=True, help="number of clips")
    c.add_argument("--seed", type=seed_int, default=0, help="seed of the run (default: 0)")
    c.add_argument("--size", type=int, default=96, help="frame side in pixels, a multiple of 4 (default: 96)")
    c.add_argument("--fps", type=int, default=24, help="frames per second (default: 24)")
    c.add_argument("--jitter", type=int, default=0,
                   help="largest camera shake in pixels (default: 0, a still camera, so that optical "
                        "flow sees the actions rather than the shake)")
    c.add_argument("--transition", type=int, nargs=2, default=(1, 1), metavar=("LOW", "HIGH"),
                   help="fewest and most frames an action's animation lasts (default: 1 1, a cut "
                        "between two still scenes, so that every key-frame shows a scene)")
    c.set_defaults(func=run_clips)

    r = wsub.add_parser(
        "parse",
        help="print the scene the parser reads in images",
        description="Parse rendered or generated images of the world and print their objects.",
        epilog=PARSE_EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    r.add_argument("images", nargs="+", help="image files")
    r.add_argument("--json", action="store_true", help="print each scene as JSON")
    r.set_defaults(func=run_parse)

    def show_help(args: argparse.Namespace) -> int:
        p.print_help()
        return 0

    p.set_defaults(func=show_help)


def run_triplets(args: argparse.Namespace) -> int:
    """Generate triplets and print how many per subset."""
    from worldboot.world.gen import MANIFEST, generate_triplets

    subsets = [s.strip() for s in args.subsets.split(",") if s.strip()] if args.subsets else None
    settings = {"n_per_subset": args.n_per_subset, "seed": args.seed, "size": args.size, "subsets": subsets,
                "paraphrase": not args.canonical}
    with _run_dir(args.out, settings, "world-triplets") as run:
        triplets = generate_triplets(run.path, **settings, progress=True)
        run.log(f"wrote {len(triplets)} triplets")
    for subset, n in sorted(Counter(t.subset for t in triplets).items()):
        print(f"{subset}: {n}")
    print(f"wrote {len(triplets)} triplets to {run.path / MANIFEST}")
    return 0


def _run_dir(out: str, settings: dict[str, Any], stage: str) -> Any:
    """The output folder of a ``world`` command as a run (its settings, meta and log), checked
    first: never a user's own folder, nor another stage's run (:mod:`worldboot.run_guards`)."""
    from worldboot.run_guards import claim_folder
    from worldboot.runs import RunDir

    return RunDir(claim_folder(out, stage), settings, stage, claimed=True)


def run_clips(args: argparse.Namespace) -> int:
    """Generate clips and print how many per class."""
    from worldboot.world.gen import GROUND_TRUTH, ClipSpec, generate_clips

    if args.n < 0:
        from worldboot.errors import DataError

        raise DataError(f"--n must be >= 0, got {args.n}")
    spec = ClipSpec(size=args.size, fps=args.fps, jitter=args.jitter, transition=tuple(args.transition))
    spec.check()  # before the run folder is made
    with _run_dir(args.out, {"n": args.n, "seed": args.seed, **asdict(spec)}, "world-clips") as run:
        rows = generate_clips(run.path, args.n, seed=args.seed, spec=spec, progress=True)
        run.log(f"wrote {len(rows)} clips")
    for label, n in sorted(Counter(r["label"] for r in rows).items()):
        print(f"{label}: {n}")
    frames = sum(r["n_frames"] for r in rows)
    print(
        f"wrote {len(rows)} clips ({frames} frames) to {run.path}; ground truth in {run.path / GROUND_TRUTH}"
    )
    return 0


def run_parse(args: argparse.Namespace) -> int:
    """Print each image's parsed scene."""
    import json

    from worldboot.world.render import parse_scene

    for path in args.images:
        scene = parse_scene(path)
        print(f"{path}: {json.dumps(scene.to_json()) if args.json else scene.describe()}")
    return 0
