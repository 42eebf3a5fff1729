"""The command-line skeleton shared by ``netmon-agent`` and ``netmon-collector``.

Each command lives in its own module exposing ``register(subparsers)``, which adds a
parser whose ``func(args) -> int`` runs the command. Exit codes: 0 ok, 1 runtime
failure, 2 bad usage or bad config/input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from netmon import __version__


def build_parser(prog: str, description: str, commands: Sequence[str]) -> argparse.ArgumentParser:
    """A parser with ``--version`` and every command module's subcommand."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"{prog} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in commands:
        importlib.import_module(name).register(sub)
    return parser


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; help and exit 2 when none was given."""
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
