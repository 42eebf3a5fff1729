"""The collector's durable memory of what it stored: result id -> content digest, and the
``isp`` / ``target`` values each probe used per UTC day (docs/protocol.md, "Limits").

One SQLite file (``integrity.index_path``, WAL mode), used by the writer thread only:
:meth:`ResultIndex.admit` decides, for one batch, which results may be written and which
are dead letters, and commits its entries *before* the batch is written to InfluxDB, so
whatever is in InfluxDB is in the index (a crash between the commit and the write leaves
an entry without a point; the broker redelivers the same content, which the index
admits again).

- same id, same digest: an idempotent redelivery (the agent resends until it gets a
  receipt), written again over its own point - harmless;
- same id, another digest: ``conflict``; never merged into the stored point;
- a probe's ``isp`` (or ``target``) value that would be its ``max_isps_per_day``+1-th
  distinct value on the result's UTC day (of ``started_at``): ``cardinality``.

The index belongs to one collector process. With ``mqtt.workers > 1`` each worker has
its own file (``<name>-<i>``), and a shared subscription hands a probe's messages to any
worker: a conflict is then caught only when both messages reach the same worker, and
each worker allows the per-day limit on its own (at most ``workers`` x the limit).
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from collector.core.schema import to_ms
from netmon.contract import ResultMessage
from netmon.errors import EXIT_INPUT, NetmonError

log = logging.getLogger(__name__)

_DAY_MS = 86_400_000
#: Ids per ``IN (...)`` lookup (SQLite allows at least 999 parameters).
_QUERY_CHUNK = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id TEXT PRIMARY KEY,
    digest BLOB NOT NULL,
    started_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS results_started ON results (started_ms);
CREATE TABLE IF NOT EXISTS day_values (
    probe TEXT NOT NULL,
    day INTEGER NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (probe, day, kind, value)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS day_values_day ON day_values (day);
"""


def content_digest(payload: bytes) -> bytes:
    """A digest of a result payload's bytes as received.

    The bytes, not the collector's model of them: a collector upgrade that adds an
    optional field to the contract must not turn every later redelivery into a
    conflict. The agent resends the very bytes it spooled and ``dead-letters replay``
    the very bytes it kept, so a redelivery is always byte-identical; a message with the
    same id and other bytes (even the same fields in another order) was made by
    something else and is a ``conflict``. (A canonical-JSON digest cost 35 µs per
    result, this one 1 µs.)"""
    return hashlib.blake2b(payload, digest_size=16).digest()


class ResultIndexError(NetmonError, OSError):
    """The index file cannot be opened or created (``integrity.index_path``): a config
    problem for the operator (exit 2)."""

    exit_code = EXIT_INPUT


@dataclass(frozen=True)
class Verdict:
    """Why a result may not be written: a dead-letter reason and its detail."""

    reason: str
    detail: str


class ResultIndex:
    """The SQLite index; not thread-safe (the writer thread owns it)."""

    def __init__(self, path: Path, max_age_days: int = 400, max_isps_per_day: int = 8,
                 max_targets_per_day: int = 64) -> None:
        self.path = path
        self.max_age_ms = max_age_days * _DAY_MS
        self.limits = {"isp": max_isps_per_day, "target": max_targets_per_day}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # timeout: `dead-letters replay` may hold the write lock for a moment.
            self._db = sqlite3.connect(path, timeout=60, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit survives a power cut; once per batch, not per result.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ResultIndexError(
                f"integrity.index_path: cannot open the result index {path}: {exc} (a "
                "folder the collector's account can write, e.g. its state directory)"
            ) from None
        self._pruned_at = 0.0

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def admit(self, items: list[tuple[ResultMessage, bytes]],
              ids: list[str] | None = None) -> list[Verdict | None]:
        """For each (result, digest): None (write it) or a Verdict (dead-letter it).
        ``ids``: the results' ids as strings (``str(result.id)``), when the caller has
        them already. The admitted entries are committed before this returns."""
        self._maybe_prune()
        db = self._db
        out: list[Verdict | None] = []
        seen: dict[str, bytes] = {}
        counts: dict[tuple[str, int, str], int] = {}
        known: dict[tuple[str, int, str], set[str]] = {}
        rows: list[tuple[str, bytes, int]] = []
        values: list[tuple[str, int, str, str]] = []
        if ids is None:
            ids = [str(msg.id) for msg, _ in items]
        db.execute("BEGIN IMMEDIATE")
        try:
            # What the index holds for the batch's ids, in a few queries instead of one per
            # result (under the write lock: nothing changes it meanwhile); ids admitted
            # earlier in this batch are in ``seen``.
            unique = list(dict.fromkeys(ids))
            for start in range(0, len(unique), _QUERY_CHUNK):
                chunk = unique[start:start + _QUERY_CHUNK]
                marks = ",".join("?" * len(chunk))
                seen.update((rid, bytes(digest)) for rid, digest in db.execute(
                    f"SELECT id, digest FROM results WHERE id IN ({marks})", chunk))
            for (msg, digest), rid in zip(items, ids, strict=True):
                stored = seen.get(rid)
                if stored is not None:
                    out.append(None if stored == digest else Verdict(
                        "conflict", f"result id {rid} is already stored with different "
                        "content; the stored point is kept (docs/protocol.md, 'Limits')"))
                    continue
                started_ms = to_ms(msg.started_at)
                day = started_ms // _DAY_MS
                isps = known.get((msg.probe_id, day, "isp"))
                targets = known.get((msg.probe_id, day, "target"))
                if (isps is not None and targets is not None and msg.isp in isps
                        and msg.target in targets):
                    # The probe's usual isp and target that day (nearly every result):
                    # nothing new to count or store for the limits.
                    rows.append((rid, digest, started_ms))
                    seen[rid] = digest
                    out.append(None)
                    continue
                verdict = None
                new: list[tuple[str, int, str, str]] = []
                for kind, value in (("isp", msg.isp), ("target", msg.target)):
                    key = (msg.probe_id, day, kind)
                    if key not in known:
                        known[key] = {r[0] for r in db.execute(
                            "SELECT value FROM day_values WHERE probe = ? AND day = ? AND "
                            "kind = ?", key)}
                        counts[key] = len(known[key])
                    if value in known[key]:
                        continue
                    if counts[key] >= self.limits[kind]:
                        when = datetime.fromtimestamp(day * 86400, UTC).date().isoformat()
                        verdict = Verdict("cardinality", (
                            f"{kind} {value!r} would be probe {msg.probe_id}'s "
                            f"{counts[key] + 1}th distinct {kind} on {when} (UTC); the "
                            f"limit is {self.limits[kind]} (integrity.max_{kind}s_per_day)"))
                        break
                    new.append((msg.probe_id, day, kind, value))
                if verdict is not None:
                    out.append(verdict)
                    continue
                for probe, d, kind, value in new:
                    values.append((probe, d, kind, value))
                    known[(probe, d, kind)].add(value)
                    counts[(probe, d, kind)] += 1
                rows.append((rid, digest, started_ms))
                seen[rid] = digest
                out.append(None)
            db.executemany("INSERT INTO day_values VALUES (?, ?, ?, ?)", values)
            db.executemany("INSERT INTO results VALUES (?, ?, ?)", rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return out

    def forget(self, result_ids: list[str]) -> None:
        """Drop entries whose point InfluxDB refused for good (``influx_rejected``), so a
        corrected message with the same id is not a conflict."""
        if result_ids:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM results WHERE id = ?",
                                 [(r,) for r in result_ids])
            self._db.execute("COMMIT")

    def prune(self, now_ms: int | None = None) -> int:
        """Drop entries older than the maximum age (by ``started_at``); returns how many."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        cutoff = now_ms - self.max_age_ms
        cur = self._db.execute("DELETE FROM results WHERE started_ms < ?", (cutoff,))
        n = cur.rowcount
        self._db.execute("DELETE FROM day_values WHERE day < ?", (cutoff // _DAY_MS,))
        return n

    def _maybe_prune(self) -> None:
        now = time.monotonic()
        if self._pruned_at and now - self._pruned_at < 3600:
            return
        self._pruned_at = now
        n = self.prune()
        if n:
            log.info("result index: pruned %d entries older than %d days", n,
                     self.max_age_ms // _DAY_MS)

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM results").fetchone()[0])
