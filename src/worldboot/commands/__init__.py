"""Subcommands of the ``worldboot`` CLI, one module each, found by :func:`worldboot.cli.build_parser`.

A module here defines ``register(subparsers)``; it adds a parser with a copy-paste example in
its epilog and sets ``func`` to a handler that imports heavy libraries lazily and returns an
exit code.
"""

import argparse

HELP_FORMATTER = argparse.RawDescriptionHelpFormatter
