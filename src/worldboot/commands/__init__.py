"""Subcommands of the ``worldboot`` CLI, one module each, found by :func:`worldboot.cli.build_parser`.

A module here defines ``register(subparsers)``; it adds a parser with a copy-paste example in
its epilog and sets ``func`` to a handler that imports heavy libraries lazily and returns an
exit code.
"""

import argparse
import sys

from worldboot.bounds import SEED_MAX, shown_number

HELP_FORMATTER = argparse.RawDescriptionHelpFormatter


class CommandParser(argparse.ArgumentParser):
    """The parser of one subcommand; with ``default_verb`` set, its first word selects a verb
    and ``default_verb`` is meant when that word is not one of ``verbs``.

    argparse has no default subcommand; inserting the verb before parsing keeps every option of
    the default verb usable before or after its positionals (``--bench B PRED`` and ``PRED
    --bench B``).
    """

    default_verb: str | None = None
    verbs: frozenset[str] = frozenset()

    def parse_known_args(self, args=None, namespace=None):  # noqa: D102 - argparse's signature
        if self.default_verb is None:
            return super().parse_known_args(args, namespace)
        args = list(sys.argv[1:] if args is None else args)
        if args and args[0] not in self.verbs and args[0] not in ("-h", "--help"):
            args.insert(0, self.default_verb)
        return super().parse_known_args(args, namespace)


def ranged(kind: type, low: float, high: float | None = None):
    """An argparse ``type``: a number of ``kind`` within ``[low, high]`` (no upper bound when
    ``high`` is None); argparse then prints one line naming the flag and exits with 2."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if high is None and not value >= low:  # also false for nan
            raise argparse.ArgumentTypeError(f"must be at least {shown_number(low)}, got {text}")
        if high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not between {shown_number(low)} and {shown_number(high)}")
        return value

    parse.__name__ = kind.__name__
    return parse


#: A whole number of at least 1.
positive_int = ranged(int, 1)
#: A seed: what every random generator here takes (:data:`worldboot.bounds.SEED_MAX`).
seed_int = ranged(int, 0, SEED_MAX)


def add_ray_arguments(p: argparse.ArgumentParser, items: str) -> None:
    """``--engine`` and the Ray Data options of a per-item stage (None when not given, so a
    config file's ``engine`` and ``ray.*`` keys stay in force)."""
    g = p.add_argument_group("engine")
    g.add_argument("--engine", choices=("local", "ray"),
                   help=f"local (default): this process; ray: Ray Data actors, each with a copy of the model, "
                        f"over the {items}")
    g.add_argument("--ray-address", metavar="ADDR",
                   help="a running Ray cluster (HEAD:6379, ray://HEAD:10001 or auto); default: RAY_ADDRESS, "
                        "else a local Ray")
    g.add_argument("--actors", type=int, help="model actors with --engine ray (default 1)")
    g.add_argument("--gpus-per-actor", type=float, help="GPUs per actor (default 0)")


def ray_flags(args: argparse.Namespace) -> dict[str, object]:
    """The options of :func:`add_ray_arguments` as dotted config keys (None: not given)."""
    return {"engine": args.engine, "ray.address": args.ray_address, "ray.actors": args.actors,
            "ray.gpus_per_actor": args.gpus_per_actor}


def check_ray_flags(args: argparse.Namespace, engine: str) -> None:
    """Refuse Ray options for a run whose resolved ``engine`` is not Ray (they would be
    silently ignored)."""
    from worldboot.errors import UsageError

    given = [flag for flag, value in (("--ray-address", args.ray_address), ("--actors", args.actors),
                                      ("--gpus-per-actor", args.gpus_per_actor)) if value is not None]
    if given and engine != "ray":
        raise UsageError(f"{given[0]} applies to --engine ray, and this run's engine is {engine}")


def check_verifier_flags(args: argparse.Namespace, verifier: str | None) -> None:
    """Refuse ``--verifier-score`` for a run with no verifier (the resolved ``verifier.path``):
    it ranks the verifier's scores, and would be silently ignored."""
    from worldboot.errors import UsageError

    if args.verifier_score is not None and not verifier:
        raise UsageError("--verifier-score ranks a verifier's scores, and this run has none: give --verifier MODEL_DIR")
