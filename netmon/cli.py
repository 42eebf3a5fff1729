"""The command-line skeleton shared by ``netmon-agent`` and ``netmon-collector``.

Each command lives in its own module exposing ``register(subparsers)``, which adds a
parser whose ``func(args) -> int`` runs the command. Exit codes: 0 ok, 1 runtime
failure, 2 bad usage or bad config/input, 130 interrupted. A command may return its own
code or let a :class:`netmon.errors.NetmonError` escape: :func:`run` prints the error's
report (no traceback) and exits with the error's ``exit_code``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from netmon import __version__
from netmon.errors import NetmonError


def build_parser(prog: str, description: str, commands: Sequence[str]) -> argparse.ArgumentParser:
    """A parser with ``--version`` and every command module's subcommand."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"{prog} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in commands:
        importlib.import_module(name).register(sub)
    return parser


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; help and exit 2 when none was given.

    A :class:`NetmonError` escaping the command is reported on stderr as
    ``<prog>: <report>`` and its ``exit_code`` returned; any other exception is a bug
    and keeps its traceback.
    """
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except NetmonError as exc:
        # An expected failure (bad config, broker down): the operator needs the message,
        # not a traceback.
        print(f"{parser.prog}: {exc.report()}", file=sys.stderr)
        return exc.exit_code
