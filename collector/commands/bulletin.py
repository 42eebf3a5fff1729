"""``netmon-collector bulletin``: write the monthly speed bulletin (HTML, PDF, CSV).

Exit codes: 0 written, 1 runtime failure (InfluxDB query failed, PDF engine broken),
2 bad usage: bad config, bad ``--month``, InfluxDB unreachable, unusable ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from netmon.settings import ConfigError

if TYPE_CHECKING:
    from collector.bulletin.generate import BulletinResult


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``bulletin`` subcommand."""
    p = subparsers.add_parser(
        "bulletin", help="write the monthly speed bulletin (HTML, PDF, CSV)",
        description="Write bulletin-YYYY-MM.html, .pdf and .csv (and chart PNGs) for one "
                    "calendar month in the bulletin's time zone (Asia/Ho_Chi_Minh by default), "
                    "from the results in InfluxDB. Method: docs/methodology.md.")
    p.add_argument("--config", type=Path, required=True, help="collector config file (TOML)")
    p.add_argument("--month", required=True, metavar="YYYY-MM", help="the month, e.g. 2026-10")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument("--lang", choices=("vi", "en"), default=None,
                   help="language (default: bulletin.language in the config, normally vi)")
    p.add_argument("--format", dest="formats", action="append", choices=("html", "pdf", "csv"),
                   help="only these outputs (repeatable; default all three)")
    p.add_argument("--json", action="store_true",
                   help="print a JSON summary (files, headline figures, timings) on stdout")
    p.set_defaults(func=run)


def _err(msg: str) -> None:
    print(f"netmon-collector bulletin: {msg}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit code."""
    from collector import config as config_mod
    from collector.bulletin.charts import FontError
    from collector.bulletin.generate import BulletinInputError, generate
    from collector.bulletin.pdf import PdfError
    from collector.core.influx import InfluxError

    try:
        cfg = config_mod.load(args.config)
    except ConfigError as exc:
        _err(exc.report())
        return 2
    except OSError as exc:
        _err(f"--config {args.config}: {exc.strerror or exc}")
        return 2
    formats = tuple(args.formats) if args.formats else ("html", "pdf", "csv")
    try:
        res = generate(cfg, args.month, args.out, args.lang, formats)
    except BulletinInputError as exc:
        _err(str(exc))
        return 2
    except InfluxError as exc:
        _err(f"InfluxDB query failed: {exc}")
        return 1
    except (PdfError, FontError) as exc:
        _err(str(exc))
        return 1
    except OSError as exc:
        _err(f"writing to {args.out} failed: {exc}")
        return 1
    if args.json:
        print(json.dumps(summary(res), ensure_ascii=False, indent=2))
    else:
        for kind, path in res.files.items():
            print(f"{kind}: {path}")
        if not res.has_data:
            _err(f"no results in {res.month}: the bulletin says so")
    return 0


def summary(res: BulletinResult) -> dict[str, object]:
    """A JSON-ready summary of a :class:`BulletinResult`."""
    rep = res.report
    head = {}
    for h in rep.headline:
        d, u = h.row.download, h.row.upload
        head[h.access] = {
            "download_median_mbps": d.summary.median if d else None,
            "upload_median_mbps": u.summary.median if u else None,
            "target_mbps": d.target if d else None,
            "rating": d.rating if d else None,
            "tests": d.summary.tests if d else 0,
            "download_change_pct": h.download_change_pct,
        }
    return {
        "month": res.month, "lang": res.lang, "has_data": res.has_data,
        "files": {k: str(v) for k, v in res.files.items()},
        "headline": head,
        "totals": vars(rep.totals),
        "communes_below_target": len(rep.below_target),
        "communes_insufficient": len(rep.insufficient),
        "timings_s": {k: round(v, 3) for k, v in res.timings_s.items()},
    }
