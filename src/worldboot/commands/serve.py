"""``worldboot serve``: the web app for blind human evaluation and interactive prediction."""

from __future__ import annotations

import argparse
import ipaddress
import sys

from worldboot.commands import HELP_FORMATTER, ranged

EXAMPLE = """examples:
  # a blind best/worst study (votes go to STUDY.votes.sqlite beside the YAML unless --db)
  worldboot serve --study configs/web/example_study.yaml
  # export the votes and stop
  worldboot serve --study configs/web/example_study.yaml --export votes.csv
  # interactive prediction: candidates of a world model ranked by a dynamics model
  worldboot serve --world runs/cwm/model --verifier runs/cdm/model --samples 4
  # analyse the votes (the paper's Table 6)
  worldboot evaluate human configs/web/example_study.yaml --reference CWM
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``serve`` subcommand."""
    p = sub.add_parser(
        "serve",
        help="web app: blind human evaluation (best/worst votes) and interactive prediction",
        description=(
            "Serve the blind best/worst study of a STUDY.yaml (annotators log in with an id, votes go to "
            "SQLite) and, with --world, a page that predicts next observations from an uploaded image. "
            "Binds to 127.0.0.1 unless --host says otherwise."
        ),
        epilog=EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    p.add_argument("--study", metavar="YAML", help="the study: items, models and their output folders")
    p.add_argument(
        "--db", metavar="SQLITE", help="votes database (default: STUDY.votes.sqlite beside the YAML)"
    )
    p.add_argument("--export", metavar="CSV", help="write the votes as CSV and exit (no server)")
    p.add_argument(
        "--strict", action="store_true", help="stop at the first bad study item instead of skipping it"
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)"
    )
    p.add_argument("--port", type=ranged(int, 1, 65535), default=8000, help="port, 1-65535 (default: %(default)s)")
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="accepted Host name when binding beyond loopback (repeatable; default: any)",
    )
    p.add_argument("--world", metavar="MODEL_DIR", help="world model (CWM) for the /play page")
    p.add_argument("--verifier", metavar="MODEL_DIR", help="dynamics model (CDM) ranking the candidates")
    p.add_argument(
        "--samples", type=ranged(int, 1, 16), default=4, help="candidates per step by default, 1-16 (default: %(default)s)"
    )
    p.add_argument(
        "--temperature", type=ranged(float, 0, 100), default=1.0, help="sampling temperature (default: %(default)s)"
    )
    p.add_argument("--top-k", type=ranged(int, 0, 10**6), default=0, help="top-k sampling, 0 = off (default: %(default)s)")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the rollouts' generators (default: %(default)s)"
    )
    p.add_argument(
        "--max-upload-mb", type=ranged(float, 0.01, 1024), default=8.0, help="largest upload (default: %(default)s MB)"
    )
    p.set_defaults(func=run)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    """Load the study and models, then serve (or export)."""
    from pathlib import Path

    from worldboot.errors import UserError
    from worldboot.study.spec import default_db_path, load_study
    from worldboot.study.votes import VoteStore

    if not args.study and not args.world:
        raise UserError("give --study STUDY.yaml, --world MODEL_DIR, or both")
    if args.verifier and not args.world:
        raise UserError("--verifier ranks the candidates of --world: give --world too")
    if args.export is not None and not args.export.strip():  # an unset variable: not "serve instead"
        raise UserError("--export is empty: name the CSV file to write")
    if args.export and not args.study:
        raise UserError("--export needs --study")

    study = db_path = None
    if args.study:
        study = load_study(args.study, strict=args.strict)
        db_path = Path(args.db) if args.db else default_db_path(args.study)
        for problem in study.problems:
            print(f"skipped: {problem}", file=sys.stderr)
        print(
            f"study {study.name!r}: {len(study.items)} items, models {', '.join(study.models)}; "
            f"{len(study.problems)} skipped; votes in {db_path}",
            file=sys.stderr,
        )
    if args.export:
        # The votes and the study are what the export is made from: writing over either loses them.
        for source, what in ((db_path, "the votes database"), (Path(args.study), "the study file")):
            if Path(args.export).resolve() == source.resolve():
                raise UserError(f"--export {args.export} is {what}: name another file for the CSV")
        store = VoteStore(db_path, study.name, create=False)
        n = store.export_csv(args.export, study)
        print(f"wrote {n} votes to {args.export}")
        return 0

    predictor = None
    if args.world:
        from worldboot.models import load_backbone
        from worldboot.models.backbone import SamplingConfig
        from worldboot.web.play import Predictor

        world = load_backbone(args.world)
        verifier = load_backbone(args.verifier) if args.verifier else None
        predictor = Predictor(
            world,
            verifier,
            num_samples=args.samples,
            sampling=SamplingConfig(temperature=args.temperature, top_k=args.top_k),
            seed=args.seed,
        )

    import uvicorn

    from worldboot.web.app import LOOPBACK_HOSTS, create_app

    if _is_loopback(args.host):
        # A page elsewhere could rebind its own name to 127.0.0.1 (DNS rebinding): accept only
        # loopback names in the Host header.
        allowed = LOOPBACK_HOSTS + args.allow_host
    else:
        allowed = args.allow_host or None
        print(
            f"warning: serving on {args.host}: anyone who can reach this address can vote and upload",
            file=sys.stderr,
        )
    app = create_app(
        study,
        db_path,
        predictor,
        allowed_hosts=allowed,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
    )
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"open http://{shown_host}:{args.port}/" + ("" if study else "play"), file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
