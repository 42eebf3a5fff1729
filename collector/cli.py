"""``netmon-collector``: the collector's command line.

Each command is a module with ``register(subparsers)`` (see :mod:`netmon.cli`); list it
in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import sys

from netmon import cli

#: Modules that register a subcommand (``register(subparsers) -> None``).
COMMANDS: tuple[str, ...] = (
    "collector.commands.run",
    "collector.commands.check_config",
    "collector.commands.dead_letters",
    "collector.commands.probes",
    "collector.commands.bulletin",
    "collector.commands.dashboards",
    "collector.commands.rollups",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    return cli.build_parser(
        "netmon-collector",
        "hatinh-netmon collector: MQTT to InfluxDB, dead letters, bulletin, "
        "dashboards, fleet.",
        COMMANDS)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    return cli.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
