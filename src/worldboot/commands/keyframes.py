"""``worldboot keyframes``: motion key-frame pairs from unlabelled videos."""

from __future__ import annotations

import argparse

from worldboot.commands import HELP_FORMATTER

EXAMPLE = """example:
  worldboot keyframes videos/ucf101 --out runs/ucf101/keyframes --k 6 --interval 20 --workers 2

  VIDEO_DIR_OR_LIST is a folder (searched recursively; the label of a video is its parent
  folder's name), one video, a CSV with columns video,label, or a text file with one path
  per line.
  Outputs: RUN/pairs.jsonl (consecutive key-frames of each video), RUN/frames/ (JPEG, or PNG
  with --image-format png), RUN/videos/ (one result per video; a rerun resumes),
  RUN/problems.jsonl, RUN/summary.json.
"""

#: Flags that map one-to-one onto KeyframeConfig fields.
FIELDS = (
    "k",
    "interval",
    "flow",
    "size",
    "stride",
    "min_score",
    "image_max_side",
    "image_format",
    "jpeg_quality",
    "workers",
    "engine",
    "strict",
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``keyframes`` subcommand."""
    p = sub.add_parser(
        "keyframes",
        help="mine motion key-frame pairs from videos (optical flow)",
        description=(
            "Score the motion of every frame with dense optical flow, keep the top K frames at least "
            "I frames apart, and pair consecutive key-frames for annotation by a dynamics model."
        ),
        epilog=EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    p.add_argument(
        "source",
        metavar="VIDEO_DIR_OR_LIST",
        help="folder of videos, one video, CSV video,label, or list file",
    )
    p.add_argument("--out", required=True, metavar="RUN", help="run directory (created; reused to resume)")
    p.add_argument("--config", metavar="YAML", help="a YAML config (e.g. configs/mining/keyframes.yaml); flags win")
    p.add_argument("--k", type=int, help="key-frames per video, K_f (default 6, as in the paper)")
    p.add_argument("--interval", type=int, help="minimum frames between key-frames, I_f (default 20)")
    p.add_argument(
        "--flow",
        choices=["dis", "farneback"],
        help="optical flow (default dis: over 10x faster than farneback)",
    )
    p.add_argument("--size", type=int, help="longer side of the frames the flow sees (default 128)")
    p.add_argument("--stride", type=int, help="flow every s-th frame, others only grabbed (default 2; 1: every frame)")
    p.add_argument(
        "--min-score", dest="min_score", type=float, help="motion a key-frame must exceed (default 0)"
    )
    p.add_argument(
        "--image-max-side",
        dest="image_max_side",
        type=int,
        help="save key-frames at most this large (default: as decoded)",
    )
    p.add_argument(
        "--image-format",
        dest="image_format",
        choices=["jpg", "png"],
        help="key-frame files (default jpg, quality 95; png is lossless and about 6x slower to write)",
    )
    p.add_argument("--jpeg-quality", dest="jpeg_quality", type=int, help="JPEG quality 1-100 (default 95)")
    p.add_argument("--workers", type=int, help="videos decoded in parallel (default 1)")
    p.add_argument("--engine", choices=["local", "ray"], help="local process pool (default) or Ray Data")
    p.add_argument("--strict", action="store_true", default=None, help="stop at the first unreadable video")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Mine and print a summary."""
    from worldboot.config import load_config
    from worldboot.mining.keyframes import KeyframeConfig, mine_videos
    from worldboot.progress import console as make_console

    cfg = load_config(KeyframeConfig, args.config, flags={name: getattr(args, name) for name in FIELDS})
    summary = mine_videos(args.source, args.out, cfg, progress=args.progress)
    console = make_console(stderr=True)
    lines = f"; {summary.listing_problems} skipped while listing them" if summary.listing_problems else ""
    console.print(
        f"{summary.videos} videos: {summary.mined} mined ({summary.resumed} from an earlier run), "
        f"{summary.videos - summary.mined} skipped, {summary.short} with fewer than {cfg.k} key-frames, "
        f"{summary.no_pairs} without a pair{lines}"
    )
    if summary.fewer_frames:
        console.print(f"  {summary.fewer_frames} mined videos decoded fewer frames than their header announces: "
                      "frames that do not decode are skipped, and the frame numbers after them shift")
    for reason, n in sorted(summary.problem_reasons.items()):
        console.print(f"  skipped {n}: {reason}")
    if summary.hidden:
        console.print(f"  left out {summary.hidden} video files with hidden names (a leading dot: a macOS "
                      "sidecar or an unfinished copy): rename one to mine it")
    console.print(f"{summary.pairs} pairs -> {args.out}/pairs.jsonl")
    if summary.problems:
        console.print(f"problems -> {args.out}/problems.jsonl")
    return 0
