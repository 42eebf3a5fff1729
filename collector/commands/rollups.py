"""``netmon-collector rollups rebuild``: recompute the dashboards' rollups from raw points.

The running collector keeps the rollups exact for what it writes (collector/core/rollups.py).
This command is for what it did not see: results stored before rollups existed, a change
of ``[targets]`` (the ``met`` counts), or a collector that stopped between a write and
its next rollup round. Exit codes: 0 done, 1 InfluxDB failed, 2 bad config or arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from netmon.settings import ConfigError

#: Rebuilt a week at a time: bounded memory and statements whatever the range.
_CHUNK = timedelta(days=7)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``rollups`` subcommand."""
    p = subparsers.add_parser(
        "rollups", help="recompute the hourly/daily rollups the dashboards read",
        description="Recompute the rollups (tput_1h/1d, status_1h/1d; docs/schema.md) of "
                    "every probe over a range of days, from the raw points.")
    sub = p.add_subparsers(dest="action", required=True)
    r = sub.add_parser("rebuild", help="recompute a range of days",
                       description="Recompute the rollups of [--since, --until) (UTC days).")
    r.add_argument("--config", type=Path, required=True, help="collector config file (TOML)")
    r.add_argument("--since", type=date.fromisoformat, required=True, metavar="YYYY-MM-DD")
    r.add_argument("--until", type=date.fromisoformat, default=None, metavar="YYYY-MM-DD",
                   help="exclusive (default: tomorrow)")
    r.add_argument("--probe", action="append", default=None,
                   help="only this probe (repeatable; default: every probe with results)")
    r.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    r.set_defaults(func=run)


def _err(msg: str) -> None:
    print(f"netmon-collector rollups: {msg}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit code."""
    from collector import config as config_mod
    from collector.core.influx import InfluxClient, InfluxError
    from collector.core.rollups import Rollups

    try:
        cfg = config_mod.load(args.config)
    except ConfigError as exc:
        _err(exc.report())
        return 2
    except OSError as exc:
        _err(f"--config {args.config}: {exc.strerror or exc}")
        return 2
    until = args.until or (datetime.now(UTC).date() + timedelta(days=1))
    if until <= args.since:
        _err(f"--until {until} must be after --since {args.since}")
        return 2
    start = datetime.combine(args.since, datetime.min.time(), UTC)
    end = datetime.combine(until, datetime.min.time(), UTC)
    rollups = Rollups(cfg.influxdb, cfg.targets)
    rollups.peak_hours = (cfg.bulletin.peak_start_hour, cfg.bulletin.peak_end_hour)
    written = 0
    try:
        probes = args.probe
        if not probes:
            with InfluxClient(cfg.influxdb) as client:
                res = client.query('SHOW TAG VALUES FROM "results" WITH KEY = "probe"')[0]
            probes = sorted({v[1] for s in res for v in s.values})
        t = start
        while t < end:
            nxt = min(t + _CHUNK, end)
            written += rollups.rebuild(int(t.timestamp() * 1000), int(nxt.timestamp() * 1000),
                                       probes)
            t = nxt
    except InfluxError as exc:
        _err(f"InfluxDB failed: {exc}")
        return 1
    summary = {"since": args.since.isoformat(), "until": until.isoformat(),
               "probes": len(probes), "points": written}
    print(json.dumps(summary) if args.json else
          f"{written} rollup points written for {len(probes)} probes, "
          f"{args.since} to {until} (exclusive)")
    return 0
