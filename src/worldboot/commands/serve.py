"""``worldboot serve``: the web app for blind human evaluation and interactive prediction."""

from __future__ import annotations

import argparse
import errno
import ipaddress
import socket
import sys
from pathlib import Path

from worldboot.commands import HELP_FORMATTER, ranged, seed_int
from worldboot.errors import UsageError

EXAMPLE = """examples:
  # a blind best/worst study (votes go to STUDY.votes.sqlite beside the YAML unless --db)
  worldboot serve --study configs/web/example_study.yaml
  # export the votes and stop
  worldboot serve --study configs/web/example_study.yaml --export votes.csv
  # interactive prediction: candidates of a world model ranked by a dynamics model
  worldboot serve --world runs/cwm/model --verifier runs/cdm/model --samples 4
  # analyse the votes (the paper's Table 6)
  worldboot evaluate human configs/web/example_study.yaml --reference system-b
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
    p.add_argument(
        "--export",
        metavar="CSV",
        help="write the votes as CSV and exit (no server, no image read); a new file, or an earlier export",
    )
    p.add_argument(
        "--strict", action="store_true", help="stop at the first bad study item instead of skipping it (serving)"
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
        "--seed", type=seed_int, default=0, help="seed of the rollouts' generators (default: %(default)s)"
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


def _check_host(host: str) -> None:
    """Refuse an empty ``--host``: ``--host "$HOST"`` with ``HOST`` unset would listen on every
    interface, where only this machine was meant."""
    if not host.strip():
        raise UsageError(
            "--host is empty: name the address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface)"
        )


def check_port(host: str, port: int) -> None:
    """Refuse an address the server could not listen on, before it says where to open it
    (uvicorn would report it after, as a log line, and exit 3).

    Binds (and closes) a socket on each address of ``host`` the way uvicorn's asyncio server
    does (``SO_REUSEADDR``; an IPv6 address the machine lacks is skipped while another binds).

    Raises:
        UsageError: The port is in use, needs privileges, or ``host`` is no address of this machine.
    """
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as err:
        raise UsageError(f"--host {host} is no address this machine knows ({err}): name another") from None
    failure = None
    bound = 0
    for family, kind, proto, _name, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
                bound += 1
            except OSError as err:
                if err.errno == errno.EADDRINUSE:
                    raise UsageError(f"port {port} on {host} is in use: choose another --port") from None
                if err.errno == errno.EACCES:
                    raise UsageError(
                        f"port {port} on {host} needs privileges (below 1024): choose another --port"
                    ) from None
                failure = failure or err
    if not bound:
        reason = failure.strerror if failure else "no address"
        raise UsageError(f"cannot listen on {host} port {port} ({reason}): choose another --host")


def _export(args: argparse.Namespace) -> int:
    """``--export``: the votes as CSV, from the study's YAML and the database (no image read)."""
    from worldboot.study.export import export_votes
    from worldboot.study.spec import default_db_path

    if not args.study:
        raise UsageError("--export needs --study")
    db_path = Path(args.db) if args.db else default_db_path(args.study)
    n = export_votes(args.study, db_path, args.export)
    print(f"wrote {n} votes from {db_path} to {args.export}")
    return 0


def _predictor(args: argparse.Namespace):
    """The /play page's world model (and verifier), or None without ``--world``."""
    if not args.world:
        return None
    from worldboot.models import load_backbone
    from worldboot.models.backbone import SamplingConfig
    from worldboot.web.play import Predictor

    world = load_backbone(args.world)
    verifier = load_backbone(args.verifier) if args.verifier else None
    return Predictor(
        world,
        verifier,
        num_samples=args.samples,
        sampling=SamplingConfig(temperature=args.temperature, top_k=args.top_k),
        seed=args.seed,
    )


def _allowed_hosts(args: argparse.Namespace) -> list[str] | None:
    """The ``Host`` names the server answers to (None: any), with a warning beyond loopback."""
    from worldboot.web.app import LOOPBACK_HOSTS

    if _is_loopback(args.host):
        # A page elsewhere could rebind its own name to 127.0.0.1 (DNS rebinding): accept only
        # loopback names in the Host header.
        return LOOPBACK_HOSTS + args.allow_host
    print(
        f"warning: serving on {args.host}: anyone who can reach this address can vote and upload",
        file=sys.stderr,
    )
    return args.allow_host or None


def run(args: argparse.Namespace) -> int:
    """Load the study and models, then serve (or export)."""
    from worldboot.study.spec import default_db_path, load_study
    from worldboot.study.votes import VoteStore

    if not args.study and not args.world:
        raise UsageError("give --study STUDY.yaml, --world MODEL_DIR, or both")
    if args.verifier and not args.world:
        raise UsageError("--verifier ranks the candidates of --world: give --world too")
    if args.export is not None:
        return _export(args)
    _check_host(args.host)
    check_port(args.host, args.port)

    study = db_path = None
    if args.study:
        study = load_study(args.study, strict=args.strict)
        db_path = Path(args.db) if args.db else default_db_path(args.study)
        VoteStore(db_path, study.name)  # another study's, or another program's: refused now
        for problem in study.problems:
            print(f"skipped: {problem}", file=sys.stderr)
        print(
            f"study {study.name!r}: {len(study.items)} items, models {', '.join(study.models)}; "
            f"{len(study.problems)} skipped; votes in {db_path}",
            file=sys.stderr,
        )
    predictor = _predictor(args)
    if predictor is not None:
        check_port(args.host, args.port)  # loading the models took a while: still free?

    import uvicorn

    from worldboot.web.app import create_app

    app = create_app(
        study,
        db_path,
        predictor,
        allowed_hosts=_allowed_hosts(args),
        max_upload_bytes=int(args.max_upload_mb * 2**20),
    )
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"open http://{shown_host}:{args.port}/" + ("" if study else "play"), file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
