"""``netmon-collector dead-letters list|replay``: inspect rejected messages and re-ingest
them after a fix.

``replay`` runs each selected record through the collector's own path in-process
(validation, the *current* site registry, schema, InfluxDB write) - no broker needed, so
it works even where broker ACLs forbid publishing on probe topics. Records that now go
through are removed from the file (``--keep`` leaves them); the others stay, with their
reason updated. Safe while the collector runs (the file is locked during the rewrite,
which replaces it atomically: a crash mid-replay leaves the old file or the new one),
and idempotent: a point written twice is the same point. Replay consults the collector's
result index, so a ``conflict`` stays a dead letter.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from collector import config as collector_config
from collector.core.deadletters import DeadLetter, DeadLetterStore
from collector.core.registry import RegistryError
from netmon.settings import ConfigError


def register(sub: Any) -> None:
    """Add ``dead-letters list`` and ``dead-letters replay``."""
    p = sub.add_parser("dead-letters", help="list or replay rejected messages",
                       description="Inspect the dead-letter store and re-ingest after a fix.")
    dsub = p.add_subparsers(dest="dl_command", metavar="ACTION")
    for name, func, helptext in (
        ("list", _list, "show dead letters (newest last)"),
        ("replay", _replay, "re-ingest dead letters through validation and the registry"),
    ):
        sp = dsub.add_parser(name, help=helptext, description=helptext)
        sp.add_argument("--config", type=Path, required=True, help="collector TOML file")
        sp.add_argument("--reason", action="append", default=[],
                        help="only this reason (repeatable), e.g. unknown_probe")
        sp.add_argument("--probe", action="append", default=[], help="only this probe id")
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "list":
            sp.add_argument("--limit", type=int, default=0, help="only the last N")
            sp.add_argument("--payload", action="store_true", help="show raw payloads")
        else:
            sp.add_argument("--dry-run", action="store_true",
                            help="validate only: say what would go through, write nothing")
            sp.add_argument("--keep", action="store_true",
                            help="leave replayed records in the file")
        sp.set_defaults(func=func)
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])


def _select(args: argparse.Namespace) -> tuple[collector_config.CollectorConfig,
                                                list[DeadLetter]]:
    cfg = collector_config.load(args.config)
    records = DeadLetterStore(cfg.dead_letters.path).read()
    if args.reason:
        records = [r for r in records if r.reason in args.reason]
    if args.probe:
        records = [r for r in records if r.probe_id in args.probe]
    return cfg, records


def _list(args: argparse.Namespace) -> int:
    try:
        cfg, records = _select(args)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    if args.limit > 0:
        records = records[-args.limit:]
    if args.json:
        for r in records:
            sys.stdout.write(r.to_line().decode("utf-8"))
        return 0
    for r in records:
        print(f"{r.at}  {r.reason:<17} {r.probe_id or '-':<20} {r.id[:8]}  {r.detail[:160]}")
        if args.payload:
            print(f"    topic: {r.topic}")
            raw = r.payload if r.payload is not None else f"{r.payload_b64} (base64)"
            print(f"    payload: {raw}")
    counts = Counter(r.reason for r in records)
    summary = ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"
    print(f"{len(records)} dead letters in {cfg.dead_letters.path} ({summary})", file=sys.stderr)
    return 0


def _replay(args: argparse.Namespace) -> int:
    try:
        cfg, records = _select(args)
        registry = collector_config.open_registry(cfg, args.config)
    except (ConfigError, RegistryError) as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    from collector.core.influx import InfluxClient, InfluxError
    from collector.core.ingest import validate
    from collector.core.integrity import ResultIndex
    from collector.core.selfmetrics import Stats
    from collector.core.writer import Item, Writer
    from netmon.contract import Topics

    topics = Topics(cfg.mqtt.topic_prefix)
    good: list[Item] = []
    ok_ids: set[str] = set()
    still: dict[str, DeadLetter] = {}
    for r in records:
        it = validate(r.topic, r.raw(), topics, registry)
        if it.dead is None:
            good.append(it)
            ok_ids.add(r.id)
        else:
            still[r.id] = r.model_copy(update={"reason": it.dead.reason,
                                               "detail": it.dead.detail})
    if not args.dry_run and good:
        try:
            # The collector's result index (the SQLite file allows a second process): a
            # conflict stays a conflict, and what goes through counts towards the limits.
            integ = cfg.integrity
            index = ResultIndex(integ.index_path, integ.index_max_age_days,
                                integ.max_isps_per_day, integ.max_targets_per_day)
            try:
                with InfluxClient(cfg.influxdb) as client:
                    writer = Writer(client, cfg.writer, Stats(),
                                    create_database=cfg.influxdb.create_database, index=index)
                    rejected = writer.process_batch(good)
            finally:
                index.close()
        except (InfluxError, RuntimeError) as exc:
            print(f"error: InfluxDB: {exc}", file=sys.stderr)
            return 1
        except (OSError, sqlite3.Error) as exc:
            print(f"error: result index {cfg.integrity.index_path} (integrity.index_path): "
                  f"{exc}", file=sys.stderr)
            return 1
        # a point InfluxDB itself refused stays a dead letter
        by_payload = {(r.topic, r.raw()): r for r in records}
        for rec in rejected:
            orig = by_payload.get((rec.topic, rec.raw()))
            if orig is not None:
                ok_ids.discard(orig.id)
                still[orig.id] = orig.model_copy(update={"reason": rec.reason,
                                                         "detail": rec.detail})
    removed = 0
    if not args.dry_run:
        removed = DeadLetterStore(cfg.dead_letters.path).remove(
            set() if args.keep else ok_ids, still)
    result = {"selected": len(records), "replayed": len(ok_ids), "removed": removed,
              "still_rejected": len(still), "dry_run": args.dry_run,
              "reasons": dict(Counter(r.reason for r in still.values()))}
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        verb = "would go through" if args.dry_run else "replayed"
        print(f"{len(records)} selected: {len(ok_ids)} {verb}, {len(still)} still rejected "
              f"({', '.join(f'{k}={v}' for k, v in sorted(result['reasons'].items())) or '-'})")
    return 0
