"""``netmon-agent``: the probe agent's command line.

Each command is a module with ``register(subparsers)`` (see :mod:`netmon.cli`); list it
in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import sys

from netmon import cli

#: Modules that register a subcommand (``register(subparsers) -> None``).
COMMANDS: tuple[str, ...] = (
    "agent.commands",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    return cli.build_parser(
        "netmon-agent",
        "hatinh-netmon probe agent: measure links, spool results, "
        "publish over MQTT.",
        COMMANDS)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    return cli.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
