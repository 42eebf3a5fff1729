"""``netmon-collector bulletin``: write the monthly speed bulletin (HTML, PDF, CSV).

With ``--out DIR``: one month's files into a folder. With ``--edition provisional|final``:
publish that edition whole into the public archive (``--archive`` or
``bulletin.archive_dir``), rebuild its index, write a ``bulletin_runs`` point and, for the
final edition with ``[bulletin.mail]`` enabled, mail it. ``--reindex`` only rebuilds the
archive's index pages.

Exit codes: 0 written, 1 runtime failure (InfluxDB query failed, PDF engine broken, an
edition that failed after its retries, mail not delivered), 2 bad usage: bad config, bad
``--month``, InfluxDB unreachable (``--out``), unusable ``--out``.
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
    from collector.config import CollectorConfig


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``bulletin`` subcommand."""
    p = subparsers.add_parser(
        "bulletin", help="write the monthly speed bulletin (HTML, PDF, CSV)",
        description="Write bulletin-YYYY-MM.html, .pdf and .csv (and chart PNGs) for one "
                    "calendar month in the bulletin's time zone (Asia/Ho_Chi_Minh by default), "
                    "from the results in InfluxDB. Method: docs/methodology.md.")
    p.add_argument("--config", type=Path, required=True, help="collector config file (TOML)")
    p.add_argument("--month", metavar="YYYY-MM",
                   help="the month, e.g. 2026-10, or 'previous' (the month just ended in "
                        "the bulletin's time zone)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, metavar="DIR", help="output folder")
    where.add_argument("--edition", choices=("provisional", "final"),
                       help="publish this edition into the archive (atomically)")
    where.add_argument("--reindex", action="store_true",
                       help="only rebuild the archive's index pages from its editions")
    p.add_argument("--archive", type=Path, metavar="DIR",
                   help="the public archive folder (default: bulletin.archive_dir)")
    p.add_argument("--retries", type=int, default=0, metavar="N",
                   help="with --edition: make the edition again up to N more times after "
                        "a failure (InfluxDB down, disk full); default 0")
    p.add_argument("--retry-wait", type=float, default=600.0, metavar="SECONDS",
                   help="with --edition: wait between attempts (default 600)")
    p.add_argument("--metrics-config", type=Path, metavar="FILE",
                   help="with --edition: collector config whose InfluxDB account writes "
                        "the bulletin_runs point (default: --config)")
    mail = p.add_mutually_exclusive_group()
    mail.add_argument("--mail", dest="mail", action="store_true", default=None,
                      help="mail the final edition (default: bulletin.mail.enabled)")
    mail.add_argument("--no-mail", dest="mail", action="store_false",
                      help="do not mail, even when bulletin.mail.enabled")
    p.add_argument("--lang", choices=("vi", "en"), default=None,
                   help="language (default: bulletin.language in the config, normally vi)")
    p.add_argument("--format", dest="formats", action="append", choices=("html", "pdf", "csv"),
                   help="with --out: only these outputs (repeatable; default all three)")
    p.add_argument("--json", action="store_true",
                   help="print a JSON summary (files, headline figures, timings) on stdout")
    p.set_defaults(func=run)


def _err(msg: str) -> None:
    print(f"netmon-collector bulletin: {msg}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit code."""
    from collector.bulletin.gcpause import gc_paused

    # Importing matplotlib and the rest makes ~200,000 objects that stay for the process:
    # collecting during the imports frees nothing (collector/bulletin/gcpause.py).
    with gc_paused():
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
    if args.edition or args.reindex:
        return _run_edition(args, cfg)
    if not args.month:
        _err("--month is required with --out")
        return 2
    formats = tuple(args.formats) if args.formats else ("html", "pdf", "csv")
    if args.month == "previous":
        from collector.bulletin.editions import previous_month

        args.month = previous_month(cfg.bulletin.timezone)
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
        "days_from_packs": len(res.sources.pack_days),
        "days_from_raw": len(res.sources.raw_days),
    }


def _run_edition(args: argparse.Namespace, cfg: CollectorConfig) -> int:
    """``--edition`` and ``--reindex``."""
    from collector import config as config_mod
    from collector.bulletin import archive, editions, mail
    from collector.bulletin.charts import FontError
    from collector.bulletin.generate import BulletinInputError
    from collector.bulletin.pdf import PdfError

    root = args.archive or cfg.bulletin.archive_dir
    if root is None:
        _err("--archive DIR or bulletin.archive_dir in the config is required")
        return 2
    targets = {"fixed": cfg.targets.fixed_mbps, "mobile": cfg.targets.mobile_mbps}
    if args.reindex:
        try:
            written = archive.build_index(root, cfg.bulletin.province, targets)
        except (archive.ArchiveError, FontError) as exc:
            _err(str(exc))
            return 1
        out: dict[str, object] = {"archive": str(root),
                                  "files": {k: str(v) for k, v in written.items()}}
        print(json.dumps(out, ensure_ascii=False, indent=2) if args.json
              else "\n".join(f"{k}: {v}" for k, v in written.items()))
        return 0
    if not args.month:
        _err("--month YYYY-MM or --month previous is required with --edition")
        return 2
    if args.retries < 0 or args.retry_wait < 0:
        _err("--retries and --retry-wait must not be negative")
        return 2
    metrics_cfg = cfg
    if args.metrics_config:
        try:
            metrics_cfg = config_mod.load(args.metrics_config)
        except ConfigError as exc:
            _err(f"--metrics-config: {exc.report()}")
            return 2
        except OSError as exc:
            _err(f"--metrics-config {args.metrics_config}: {exc.strerror or exc}")
            return 2
    month = editions.previous_month(cfg.bulletin.timezone) if args.month == "previous" \
        else args.month
    send = cfg.bulletin.mail.enabled if args.mail is None else args.mail
    if send and args.edition == "final":
        if not cfg.bulletin.mail.recipients:
            _err("--mail: bulletin.mail.recipients is empty in the config")
            return 2
        try:
            mail.check(cfg.bulletin.mail)
        except mail.MailConfigError as exc:
            _err(str(exc))
            return 2
    try:
        res = editions.publish(cfg, month, args.edition, root, lang=args.lang,
                               retries=args.retries, retry_wait_s=args.retry_wait)
    except (BulletinInputError, editions.EditionError, PdfError, FontError,
            archive.ArchiveError) as exc:
        _err(str(exc))
        editions.write_run_metric(metrics_cfg.influxdb, editions.run_metric_line(
            month, args.edition, False, args.retries + 1
            if isinstance(exc, editions.EditionError) else 1))
        return exc.exit_code if isinstance(exc, BulletinInputError) else 1
    mail_status = ""
    code = 0
    if send and args.edition == "final":
        try:
            mail.send(cfg.bulletin.mail, mail.build_message(
                cfg.bulletin.mail, res, cfg.bulletin.province, cfg.bulletin.public_url))
            mail_status = "sent"
        except mail.MailError as exc:
            _err(str(exc))
            mail_status = "failed"
            code = exc.exit_code
    editions.write_run_metric(metrics_cfg.influxdb, editions.run_metric_line(
        month, args.edition, True, res.attempts,
        late_results=res.change.late_results if res.change else None, mail=mail_status))
    if args.json:
        doc = summary(res.bulletin) | {
            "edition": res.edition, "folder": str(res.folder), "attempts": res.attempts,
            "results": res.results, "files": {k: str(v) for k, v in res.files.items()},
            "change": res.change.as_json() if res.change else None,
            "index": {k: str(v) for k, v in res.index.items()}, "mail": mail_status or None}
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        print(f"{res.edition} edition of {res.month}: {res.folder}")
        if res.change:
            print(f"late results: {res.change.late_results}; headline changes: "
                  f"{len(res.change.changes)}")
        if mail_status:
            print(f"mail: {mail_status}")
    return code
