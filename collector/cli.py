"""``netmon-collector``: the collector's command line."""

from __future__ import annotations

import argparse
import sys

from netmon import __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; subcommands register here."""
    parser = argparse.ArgumentParser(
        prog="netmon-collector",
        description="hatinh-netmon collector: MQTT to InfluxDB, dead letters, bulletin, dashboards.")
    parser.add_argument("--version", action="version", version=f"netmon-collector {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
