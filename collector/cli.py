"""``netmon-collector``: the collector's command line.

Each command lives in its own module exposing ``register(subparsers)``, which adds a
parser whose ``func(args) -> int`` runs the command; list the module in ``COMMANDS``.
Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad config/input.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from netmon import __version__

#: Modules that register a subcommand (``register(subparsers) -> None``).
COMMANDS: tuple[str, ...] = (
    "collector.cmd_run",
    "collector.cmd_check_config",
    "collector.cmd_dead_letters",
    "collector.cmd_probes",
    "collector.cmd_bulletin",
    "dashboards.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="netmon-collector",
        description="hatinh-netmon collector: MQTT to InfluxDB, dead letters, bulletin, "
                    "dashboards, fleet.")
    parser.add_argument("--version", action="version", version=f"netmon-collector {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
