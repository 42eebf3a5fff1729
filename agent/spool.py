"""The durable spool: results are kept in SQLite (WAL, ``synchronous=FULL``) and deleted
only when the collector's receipt names them (end-to-end receipts, issue 14) — or, with
``[spool] receipts = false``, on the broker's PUBACK as before.

* Write-behind (``[spool] write_delay_s`` > 0, the service; issue 20): while
  :meth:`Spool.set_holding` is on (the broker connection is up) a new result is held in
  memory, published from there, and its receipt deletes it there: the SD card never sees
  it. One still unreceipted ``write_delay_s`` later (:meth:`Spool.tick`), or when holding
  stops (the connection ended), or at :meth:`Spool.close`, is committed with its seq and
  sent state. A power cut loses what is held; :meth:`Spool.begin` keeps a marker file
  with a bound on that, and reports it on the next start. The budget ledger and counters
  of held results wait too (committed with the next results, every
  :data:`LEDGER_FLUSH_S`, or at once for a run on a budgeted link). Reads
  (:meth:`Spool.peek`, :meth:`Spool.due`, :meth:`Spool.stats`, the ledger) see both.
  With ``write_delay_s = 0`` every result is committed before it is published.

* Crash-safe: a result is either fully in the spool or not at all, whatever instant the
  process is killed or the power fails; a result acknowledged but not yet deleted when
  that happens is published again (the collector's writes are idempotent on the result
  id, so the duplicate on the wire does not duplicate data).
* Two states per row: *unsent* (``sent_at`` NULL: published on the next connection) and
  *sent* (the broker acknowledged it; :meth:`Spool.mark_sent`). A sent row waits for a
  receipt (:meth:`Spool.receipt` deletes it) and is handed out again by
  :meth:`Spool.due` once it has waited longer than the receipt timeout.
* Bounded: beyond ``max_results`` rows or ``max_bytes`` of payload the oldest results
  (sent or not) are evicted, counted (``evicted``, persistent) and warned about.
* FIFO: :meth:`Spool.peek` and :meth:`Spool.due` hand results out oldest first.
* Small on disk, and alive on a full one: the WAL is checkpointed every
  :data:`WAL_AUTOCHECKPOINT_PAGES` pages (after every write when the filesystem is low on
  space) and truncated to :data:`JOURNAL_SIZE_LIMIT` bytes; the file keeps
  :data:`RESERVE_BYTES` of free pages that new rows use before the file grows. When the
  filesystem has no room to grow it, new results are refused before the reserve's last
  :data:`RESERVE_FLOOR_BYTES`, so a commit never leaves the WAL waiting for blocks a
  checkpoint cannot get (which would block every later write, deletes included):
  delivery and receipts go on, and the spool recovers by itself when space returns.
* Failures are state, not tracebacks: :attr:`Spool.error` holds why writes fail (None
  once they succeed again) and :attr:`Spool.failing_since` since when storing results
  (or :meth:`Spool.probe`, a write of the same size) has failed.

The same database keeps the budget ledger (bytes used per link and month, and a running
estimate of what each test moves) so a restart does not forget what the SIM has used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from netmon.errors import NetmonError
from netmon.fsutil import atomic_write

log = logging.getLogger("netmon.agent.spool")
_K = TypeVar("_K")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    spooled_at REAL NOT NULL,
    sent_at REAL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters VALUES ('depth', 0), ('bytes', 0), ('evicted', 0),
    ('spooled', 0), ('acked', 0), ('receipted', 0);
-- Triggers keep depth/bytes right even when two processes (run and once) share the file.
CREATE TRIGGER IF NOT EXISTS spool_ins AFTER INSERT ON spool BEGIN
    UPDATE counters SET value = value + 1 WHERE name IN ('depth', 'spooled');
    UPDATE counters SET value = value + length(NEW.payload) WHERE name = 'bytes';
END;
CREATE TRIGGER IF NOT EXISTS spool_del AFTER DELETE ON spool BEGIN
    UPDATE counters SET value = value - 1 WHERE name = 'depth';
    UPDATE counters SET value = value - length(OLD.payload) WHERE name = 'bytes';
END;
CREATE TABLE IF NOT EXISTS usage (
    link TEXT NOT NULL, month TEXT NOT NULL, bytes REAL NOT NULL, runs INTEGER NOT NULL,
    PRIMARY KEY (link, month)
);
CREATE TABLE IF NOT EXISTS estimates (
    test TEXT NOT NULL, link TEXT NOT NULL, bytes REAL NOT NULL, PRIMARY KEY (test, link)
);
CREATE TABLE IF NOT EXISTS last_result (link TEXT PRIMARY KEY, at TEXT NOT NULL);
-- Spool.probe() writes and deletes a row here: as much I/O as storing a result.
CREATE TABLE IF NOT EXISTS writable (payload BLOB NOT NULL);
"""
#: After the table exists (a spool written by an agent before receipts has no sent_at).
_INDEXES = """
CREATE INDEX IF NOT EXISTS spool_sent ON spool (sent_at) WHERE sent_at IS NOT NULL;
"""
#: WAL pages before an automatic checkpoint (SQLite's default is 1000, ~4 MB): a small WAL
#: is what a full 2 MB filesystem can still hold.
WAL_AUTOCHECKPOINT_PAGES = 100
#: Bytes the WAL file is truncated to after a checkpoint resets it.
JOURNAL_SIZE_LIMIT = 512 * 1024
#: Free pages the spool keeps inside its own file (and, by the write that makes them, in
#: its WAL). New rows take these pages instead of growing the file, so on a full disk
#: checkpoints need no new blocks and marking sent, receipts and deletes keep working.
RESERVE_BYTES = 256 * 1024
#: New results are refused (counted lost) rather than eat into the last of the reserve,
#: which is kept for deliveries and receipts, when the filesystem cannot grow the file.
RESERVE_FLOOR_BYTES = RESERVE_BYTES // 4
#: Below this much free space on the filesystem every write is followed by a checkpoint
#: and big updates go in chunks: the WAL then starts over inside the blocks it has instead
#: of growing (at SQLite's own pace it would append up to WAL_AUTOCHECKPOINT_PAGES).
LOW_SPACE_BYTES = 4 * RESERVE_BYTES
LOW_SPACE_CHUNK = 25

#: Write-behind (``[spool] write_delay_s``): held results get seqs this far above the
#: file's sequence, so a result ``netmon-agent once`` commits meanwhile (autoincrement)
#: cannot take a held result's seq before it is committed with it.
HELD_SEQ_GAP = 10_000
#: At most this many results wait in memory; beyond, results are committed at once.
MAX_HELD = 2_000
#: The budget ledger of runs that are not urgent (:attr:`LedgerUpdate.urgent`: no data
#: moved on a budgeted link) waits in memory at most this long (or until results are
#: committed, or the spool is closed): a power cut loses at most this much of it (see
#: docs/agent.md, "SD-card writes").
LEDGER_FLUSH_S = 3600.0

#: Weight of the newest run in the bytes-per-run estimate.
EWMA_ALPHA = 0.3
#: At most one eviction warning this often (the counter counts every eviction).
WARN_EVERY_S = 600.0


@dataclass(frozen=True)
class Entry:
    """A spooled message."""

    seq: int
    id: str
    topic: str
    payload: bytes


@dataclass(frozen=True)
class LedgerUpdate:
    """What one run adds to the budget ledger, committed with its results
    (:meth:`Spool.put`)."""

    #: (link, month ``YYYY-MM``) -> bytes moved (each entry also counts one run).
    usage: dict[tuple[str, str], float]
    #: (test, link) -> bytes of this run, folded into the running estimate.
    estimates: dict[tuple[str, str], float]
    #: link -> RFC 3339 time of its latest result.
    last_results: dict[str, str]
    #: Commit it at once even while results are held (write-behind): the run moved data
    #: on a link with a data budget, which a power cut must not make the agent forget.
    urgent: bool = False


@dataclass(frozen=True)
class SpoolStats:
    """Counters for the status message and ``netmon-agent status``."""

    depth: int
    bytes: int
    evicted: int
    spooled: int
    acked: int
    oldest_spooled_at: float | None
    #: Rows the broker acknowledged that no receipt has deleted yet.
    awaiting_receipt: int = 0
    #: Rows deleted by a receipt (persistent).
    receipted: int = 0


@dataclass
class _Held:
    """A result kept in memory (write-behind) until its receipt or the write delay."""

    id: str
    topic: str
    payload: bytes
    spooled_at: float
    held_at: float  # time.monotonic()
    sent_at: float | None = None


@dataclass
class _Pending:
    """Ledger entries and counter increments not committed yet (write-behind)."""

    usage: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # [bytes, runs]
    estimates: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # in order
    last_results: dict[str, str] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    since: float | None = None  # monotonic time of the oldest uncommitted entry

    def empty(self) -> bool:
        return not (self.usage or self.estimates or self.last_results
                    or any(self.counters.values()))

    def count(self, name: str, n: int) -> None:
        if n:
            self.counters[name] = self.counters.get(name, 0) + n
            self.touch()

    def touch(self) -> None:
        if self.since is None:
            self.since = time.monotonic()


@dataclass(frozen=True)
class UncleanStop:
    """What the marker of a run that did not close the spool says (:meth:`Spool.begin`)."""

    #: Results that may have been in memory, uncommitted, when it stopped (an upper bound).
    results_maybe_lost: int
    write_delay_s: float
    pid: int | None
    started_at: str | None


class SpoolError(NetmonError, RuntimeError):
    """The spool file cannot be opened or written (disk full, read-only, corrupt)."""


class Spool:
    """A bounded FIFO of messages on disk. Use from one thread at a time."""

    def __init__(self, path: Path | None, max_results: int = 200_000,
                 max_bytes: int = 64_000_000, readonly: bool = False,
                 write_delay_s: float = 0.0) -> None:
        """Open (creating) the spool at ``path``; ``None`` keeps it in memory (``once
        --no-publish``, which must not touch the service's files). ``write_delay_s`` > 0:
        while :meth:`set_holding` is on (the broker connection is up), results wait in
        memory that long for their receipt before they are committed (write-behind)."""
        self.path = path
        self.max_results = max_results
        self.max_bytes = max_bytes
        self.write_delay_s = write_delay_s if path is not None and not readonly else 0.0
        self._holding = False
        self._held: dict[int, _Held] = {}  # by seq, oldest first
        self._held_ids: dict[str, int] = {}
        self._next_seq = 0
        self._pending = _Pending()
        #: The unclean-stop marker of this run (:meth:`begin`) and the held count it covers.
        self._marker: Path | None = None
        self._marked = 0
        #: Most results held at once, and results committed because their delay passed.
        self.held_peak = 0
        self.written_behind = 0
        self._warned_at = -WARN_EVERY_S
        self._reserve = path is not None and not readonly
        #: Why storing results failed last (None after a success), and since when
        #: (``time.monotonic()``) storing has failed without a success in between; the
        #: same for the other writes (no timer: they are retried by their callers).
        self.store_error: str | None = None
        self.failing_since: float | None = None
        self.other_error: str | None = None
        try:
            if path is None:
                self._db = sqlite3.connect(":memory:", isolation_level=None,
                                           check_same_thread=False)
                self._db.executescript(_SCHEMA)
                self._db.executescript(_INDEXES)
            elif readonly:
                self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10,
                                           isolation_level=None, check_same_thread=False)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(path, timeout=30, isolation_level=None,
                                           check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                # FULL: a commit is on the medium when it returns (power loss included).
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
                self._db.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
                self._db.executescript(_SCHEMA)
                self._migrate()
                self._db.executescript(_INDEXES)
                self._page = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        except sqlite3.Error as exc:
            raise SpoolError(f"spool {path}: {exc}") from None
        if path is not None and not readonly:
            path.chmod(0o600)  # results name the probe's links and ISPs; keep them private
            with contextlib.suppress(SpoolError):  # a full disk: recorded in self.error
                self._keep_reserve(0)

    def _migrate(self) -> None:
        # A spool written before receipts: add the column; its rows count as unsent.
        cols = {row[1] for row in self._db.execute("PRAGMA table_info(spool)")}
        if "sent_at" not in cols:
            self._db.execute("ALTER TABLE spool ADD COLUMN sent_at REAL")

    def close(self) -> None:
        """Commit what is held in memory, close the database (a checkpoint folds the WAL
        back into the file) and, when everything was committed, remove the unclean-stop
        marker (a run whose held results could not be committed stays reported)."""
        committed = True
        if self.write_delay_s:
            try:
                self.commit_held(everything=True)
                self.flush_ledger()
            except SpoolError as exc:
                committed = False
                log.error("closing the spool: %s; %d held result(s) lost", exc,
                          len(self._held))
        self._db.close()
        if committed and self._marker is not None:
            with contextlib.suppress(OSError):
                self._marker.unlink(missing_ok=True)
            self._marker = None

    # ------------------------------------------------------------------ write-behind

    def begin(self) -> UncleanStop | None:
        """Start a service run: record a marker next to the spool (removed by a clean
        :meth:`close`) and return what the previous run's marker says when that run did
        not stop cleanly (power cut, kill -9, crash), else None."""
        if self.path is None:
            return None
        marker = self.path.with_name(self.path.name + ".open")
        previous: UncleanStop | None = None
        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
            held_max = int(data.get("held_max", 0))
            if held_max < 0:
                raise ValueError(f"held_max {held_max}")
            previous = UncleanStop(held_max, float(data.get("write_delay_s", 0.0)),
                                   data.get("pid"), data.get("started_at"))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, AttributeError):
            # Unreadable (cut mid-write, a corrupt card): the run did not stop cleanly and
            # its own bound is unknown; no run ever holds more than MAX_HELD (a negative
            # bound broke the status message, a Count, and so the agent's start).
            previous = UncleanStop(MAX_HELD, self.write_delay_s, None, None)
        self._marker = marker
        self._marked = 0
        self._write_marker(0)
        return previous

    def _write_marker(self, held_max: int) -> None:
        if self._marker is None:
            return
        data = {"pid": os.getpid(), "held_max": held_max, "write_delay_s": self.write_delay_s,
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:
            atomic_write(self._marker, json.dumps(data))
        except OSError as exc:
            # A full disk: results are then committed at once anyway (no room to hold).
            log.warning("cannot write %s: %s", self._marker, exc)
            return
        self._marked = held_max

    def set_holding(self, on: bool) -> None:
        """Hold results in memory (on: connected, a receipt can come) or commit them at
        once (off: no receipt can come; what is held is committed now). Raises
        SpoolError when committing fails (the results stay held, tried again by
        :meth:`tick`)."""
        self._holding = on and self.write_delay_s > 0
        if not on:
            self.commit_held(everything=True)

    def tick(self) -> float | None:
        """Commit held results whose delay passed and a ledger older than
        :data:`LEDGER_FLUSH_S`; returns seconds until the next thing is due (None:
        nothing waits). Raises SpoolError when a commit fails."""
        now = time.monotonic()
        waits: list[float] = []
        if self._held:
            self.commit_held()
            if self._held:
                oldest = next(iter(self._held.values())).held_at
                waits.append(max(0.05, oldest + self.write_delay_s - now))
        since = self._pending.since
        if since is not None:
            if now - since >= LEDGER_FLUSH_S:
                self.flush_ledger()
            else:
                waits.append(since + LEDGER_FLUSH_S - now)
        return min(waits) if waits else None

    def commit_held(self, everything: bool = False) -> int:
        """Commit the held results older than ``write_delay_s`` (all with
        ``everything``), keeping their seq and sent state, with the pending ledger: one
        transaction. Returns how many were committed."""
        cutoff = time.monotonic() - self.write_delay_s
        rows = [(seq, h) for seq, h in self._held.items() if everything or h.held_at <= cutoff]
        if not rows:
            return 0
        if self._reserve:
            self._keep_reserve(sum(len(h.payload) + len(h.id) + 64 for _, h in rows))

        def insert(batch: list[tuple[int, _Held]]) -> int:
            new = 0
            for seq, h in batch:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO spool (seq, id, topic, payload, spooled_at, "
                    "sent_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (seq, h.id, h.topic, h.payload, h.spooled_at, h.sent_at))
                if not cur.rowcount:  # that seq was taken meanwhile (``once``): a new one
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO spool (id, topic, payload, spooled_at, "
                        "sent_at) VALUES (?, ?, ?, ?, ?)",
                        (h.id, h.topic, h.payload, h.spooled_at, h.sent_at))
                new += cur.rowcount
            # The insert trigger counted them as spooled again: they were when held.
            self._db.execute("UPDATE counters SET value = value - ? WHERE name = 'spooled'",
                             (new,))
            self._write_pending()
            self._evict()
            return 0
        self._chunked_one("cannot store results", rows, insert)
        for seq, h in rows:
            del self._held[seq]
            self._held_ids.pop(h.id, None)
        if not everything:
            self.written_behind += len(rows)
        self._pending = _Pending()
        return len(rows)

    def flush_ledger(self) -> None:
        """Commit the pending ledger entries and counters (nothing to do: no write)."""
        if self._pending.empty():
            self._pending = _Pending()
            return

        def write(_: list[int]) -> int:
            self._write_pending()
            return 0
        self._chunked_one("cannot write the budget ledger", [0], write)
        self._pending = _Pending()

    def _write_pending(self) -> None:
        """Inside a transaction: apply the pending ledger and counters."""
        p = self._pending
        for (link, month), (nbytes, runs) in p.usage.items():
            self._db.execute(
                "INSERT INTO usage VALUES (?, ?, ?, ?) ON CONFLICT (link, month) DO UPDATE "
                "SET bytes = bytes + excluded.bytes, runs = runs + excluded.runs",
                (link, month, nbytes, int(runs)))
        for (test, link), values in p.estimates.items():
            for value in values:
                self._fold_estimate(test, link, value)
        self._db.executemany("INSERT OR REPLACE INTO last_result VALUES (?, ?)",
                             p.last_results.items())
        for name, n in p.counters.items():
            if n:
                self._db.execute("UPDATE counters SET value = value + ? WHERE name = ?",
                                 (n, name))

    def _hold(self, items: list[tuple[str, str, bytes]], ledger: LedgerUpdate | None) -> bool:
        """Keep ``items`` in memory (write-behind) and their ledger in the pending one;
        False (nothing done) when the unclean-stop marker cannot cover them."""
        if self._marker is None:
            return False
        now, mono = time.time(), time.monotonic()
        fresh = []
        for id_, topic, payload in items:
            if id_ in self._held_ids or self._db.execute(
                    "SELECT 1 FROM spool WHERE id = ?", (id_,)).fetchone():
                continue  # already spooled: ignored, as INSERT OR IGNORE does
            fresh.append((id_, topic, payload))
        need = len(self._held) + len(fresh)
        if need > self._marked:
            # Before holding more than the marker covers: a power cut now is reported
            # with a bound that is never too low (doubled: a few marker writes per run).
            self._write_marker(max(need, 2 * self._marked, 4))
            if need > self._marked:
                return False  # the marker could not be written: commit them at once
        if self._ledger_now(ledger):
            assert ledger is not None
            run = ledger

            def write(_: list[int]) -> int:
                self._apply_ledger(run)
                self._write_pending()
                return 0
            self._chunked_one("cannot store results", [0], write)
            self._pending = _Pending()
            ledger = None
        if not self._held:
            row = self._db.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'spool'").fetchone()
            self._next_seq = max(self._next_seq, (int(row[0]) if row else 0) + HELD_SEQ_GAP)
        for id_, topic, payload in fresh:
            self._next_seq += 1
            self._held[self._next_seq] = _Held(id_, topic, payload, now, mono)
            self._held_ids[id_] = self._next_seq
        self.held_peak = max(self.held_peak, len(self._held))
        self._pending.count("spooled", len(fresh))
        if ledger is not None:
            p = self._pending
            for key, nbytes in ledger.usage.items():
                acc = p.usage.setdefault(key, [0.0, 0.0])
                acc[0] += nbytes
                acc[1] += 1
            for key, nbytes in ledger.estimates.items():
                p.estimates.setdefault(key, []).append(nbytes)
            p.last_results.update(ledger.last_results)
            p.touch()
        return True

    @staticmethod
    def _ledger_now(ledger: LedgerUpdate | None) -> bool:
        """A run whose ledger is committed at once (it moved data on a budgeted link)."""
        return ledger is not None and ledger.urgent

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ queue

    def put(self, items: Iterable[tuple[str, str, bytes]],
            ledger: LedgerUpdate | None = None) -> int:
        """Commit ``(id, topic, payload)`` messages and the ``ledger`` entries of the run
        that made them (one transaction: one fsync per run, not one per table), then evict
        the oldest beyond the caps. A message id already spooled is ignored. Returns how
        many were evicted."""
        now = time.time()
        items = list(items)
        if self._holding and items and len(self._held) + len(items) <= MAX_HELD and \
                self._hold(items, ledger):
            return 0
        if self._reserve:
            self._keep_reserve(sum(len(p) + len(i) + 64 for i, _, p in items))
        evicted = 0

        def insert(batch: list[tuple[str, str, bytes]]) -> int:
            if self._next_seq:
                # Seqs were handed to held results (HELD_SEQ_GAP above the file's): these
                # go above them, or the publisher, reading on from the highest seq it
                # published, would skip them until the next connection.
                row = self._db.execute(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'spool'").fetchone()
                base = max(self._next_seq, int(row[0]) if row else 0)
                self._next_seq = base + len(batch)
                self._db.executemany(
                    "INSERT OR IGNORE INTO spool (seq, id, topic, payload, spooled_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    ((base + k, i, t, p, now) for k, (i, t, p) in enumerate(batch, 1)))
            else:
                self._db.executemany(
                    "INSERT OR IGNORE INTO spool (id, topic, payload, spooled_at) "
                    "VALUES (?, ?, ?, ?)", ((i, t, p, now) for i, t, p in batch))
            nonlocal evicted
            evicted = self._evict()
            if ledger is not None:
                self._apply_ledger(ledger)
            self._write_pending()
            return 0
        if items:
            # One transaction whatever the space (a result is in the spool or not at all).
            self._chunked_one("cannot store results", items, insert)
            self._pending = _Pending()
        if evicted and time.monotonic() - self._warned_at > WARN_EVERY_S:
            # Rate-limited: a week-long outage must not fill the journal with warnings.
            self._warned_at = time.monotonic()
            log.warning("spool full (%d results / %d bytes max): evicted the %d oldest "
                        "result(s); %d evicted in total", self.max_results, self.max_bytes,
                        evicted, self.stats().evicted)
        return evicted

    def _apply_ledger(self, ledger: LedgerUpdate) -> None:
        for (link, month), nbytes in ledger.usage.items():
            self._db.execute(
                "INSERT INTO usage VALUES (?, ?, ?, 1) ON CONFLICT (link, month) DO UPDATE "
                "SET bytes = bytes + excluded.bytes, runs = runs + 1", (link, month, nbytes))
        for (test, link), nbytes in ledger.estimates.items():
            self._fold_estimate(test, link, nbytes)
        self._db.executemany("INSERT OR REPLACE INTO last_result VALUES (?, ?)",
                             ledger.last_results.items())

    def _fold_estimate(self, test: str, link: str, nbytes: float) -> None:
        self._db.execute(
            "INSERT INTO estimates VALUES (?, ?, ?) ON CONFLICT (test, link) DO UPDATE "
            "SET bytes = ? * bytes + ? * excluded.bytes",
            (test, link, nbytes, 1 - EWMA_ALPHA, EWMA_ALPHA))

    def _evict(self) -> int:
        depth, size = self._counter("depth"), self._counter("bytes")
        upto: int | None = None
        excess = max(depth - self.max_results, 0)
        if excess:
            row = self._db.execute("SELECT seq FROM spool ORDER BY seq LIMIT 1 OFFSET ?",
                                   (excess - 1,)).fetchone()
            upto = row[0]
            size -= self._db.execute("SELECT total(length(payload)) FROM spool WHERE seq <= ?",
                                     (upto,)).fetchone()[0]
        if size > self.max_bytes:
            # Walk the oldest rows until enough bytes are freed.
            cur = self._db.execute("SELECT seq, length(payload) FROM spool WHERE seq > ? "
                                   "ORDER BY seq", (upto or 0,))
            for seq, length in cur:
                upto, size = seq, size - length
                if size <= self.max_bytes:
                    break
            cur.close()
        if upto is None:
            return 0
        evicted = self._db.execute("DELETE FROM spool WHERE seq <= ?", (upto,)).rowcount
        self._db.execute("UPDATE counters SET value = value + ? WHERE name = 'evicted'",
                         (evicted,))
        return evicted

    def peek(self, after_seq: int = 0, limit: int = 500) -> list[Entry]:
        """Up to ``limit`` *unsent* messages with ``seq > after_seq``, oldest first."""
        rows = self._db.execute(
            "SELECT seq, id, topic, payload FROM spool WHERE seq > ? AND sent_at IS NULL "
            "ORDER BY seq LIMIT ?", (after_seq, limit)).fetchall()
        out = [Entry(seq, id_, topic, bytes(payload)) for seq, id_, topic, payload in rows]
        if self._held:
            out += [Entry(seq, h.id, h.topic, h.payload) for seq, h in self._held.items()
                    if seq > after_seq and h.sent_at is None][:limit]
            out.sort(key=lambda e: e.seq)
        return out[:limit]

    def due(self, sent_before: float, limit: int, exclude: Iterable[int] = (),
            now: float | None = None) -> list[Entry]:
        """Up to ``limit`` *sent* messages still waiting for a receipt that were sent at or
        before ``sent_before`` (wall time), oldest first, skipping the seqs in ``exclude``
        (already being resent). A ``sent_at`` in the future (the clock was set back) counts
        as due, so a clock step cannot park a result for months."""
        skip = set(exclude)
        future = (now if now is not None else time.time()) + 60
        rows = self._db.execute(
            "SELECT seq, id, topic, payload FROM spool WHERE sent_at IS NOT NULL AND "
            "(sent_at <= ? OR sent_at > ?) ORDER BY seq LIMIT ?",
            (sent_before, future, limit + len(skip))).fetchall()
        out = [Entry(seq, id_, topic, bytes(payload)) for seq, id_, topic, payload in rows
               if seq not in skip]
        if self._held:
            out += [Entry(seq, h.id, h.topic, h.payload) for seq, h in self._held.items()
                    if h.sent_at is not None and seq not in skip
                    and (h.sent_at <= sent_before or h.sent_at > future)]
            out.sort(key=lambda e: e.seq)
        return out[:limit]

    def mark_sent(self, seqs: Iterable[int], at: float | None = None) -> int:
        """Record that the broker acknowledged these rows (kept until a receipt names
        them); a resent row's time is renewed. Returns how many rows were still there."""
        when = at if at is not None else time.time()
        seqs = list(seqs)
        held = 0
        if self._held:
            rest = []
            for s in seqs:
                h = self._held.get(s)
                if h is None:
                    rest.append(s)
                else:
                    h.sent_at = when
                    held += 1
            seqs = rest
            self._pending.count("acked", held)

        def update(chunk: list[int]) -> int:
            n: int = self._db.executemany("UPDATE spool SET sent_at = ? WHERE seq = ?",
                                          ((when, s) for s in chunk)).rowcount
            self._db.execute("UPDATE counters SET value = value + ? WHERE name = 'acked'",
                             (n,))
            return n
        return held + self._chunked("cannot mark acknowledged results sent", seqs, update)

    def receipt(self, ids: Iterable[str], acked: int = 0) -> int:
        """Delete the rows a receipt names (sent or not: the collector has them). Unknown ids
        (already deleted, evicted, or a repeated receipt) are ignored. ``acked`` adds to
        the acknowledged counter in the same transaction: rows the broker acknowledged
        whose receipt came before they were marked sent. Returns how many rows were
        deleted."""
        keys = list(ids)
        held = 0
        if self._held_ids:
            rest = []
            for i in keys:
                seq = self._held_ids.pop(i, None)
                if seq is None:
                    rest.append(i)
                else:
                    del self._held[seq]
                    held += 1
            keys = rest
            self._pending.count("receipted", held)
        if not keys:
            # Everything it names was held: nothing on the SD card to delete.
            self._pending.count("acked", acked)
            return held

        def delete(chunk: list[str]) -> int:
            n: int = self._db.executemany("DELETE FROM spool WHERE id = ?",
                                          ((i,) for i in chunk)).rowcount
            if n:  # a repeated receipt deletes nothing: no page to write
                self._db.execute(
                    "UPDATE counters SET value = value + ? WHERE name = 'receipted'", (n,))
            if acked and chunk[0] is keys[0]:  # once, with the first chunk (or its retry)
                self._db.execute(
                    "UPDATE counters SET value = value + ? WHERE name = 'acked'", (acked,))
            return n
        # No checkpoint of its own (it wrote every receipt's pages to the file a second
        # time, on the SD card): SQLite's every WAL_AUTOCHECKPOINT_PAGES does, and on a
        # filesystem low on space _chunked checkpoints after each chunk.
        return held + self._chunked("cannot delete receipted results", keys, delete)

    def _chunked(self, what: str, keys: list[_K], fn: Callable[[list[_K]], int]) -> int:
        """``fn`` over ``keys`` in transactions: one normally; when the filesystem is low
        on space, chunks of :data:`LOW_SPACE_CHUNK` with a checkpoint after each, so no
        transaction needs more WAL than the file already holds. A "disk full" failure is
        retried once after a checkpoint (which lets the WAL start over)."""
        if not keys:
            return 0
        low = self._low_space()
        size = LOW_SPACE_CHUNK if low else len(keys)
        total = 0
        for start in range(0, len(keys), size):
            chunk = keys[start:start + size]
            for attempt in (1, 2):
                try:
                    with self._tx():
                        total += fn(chunk)
                    break
                except sqlite3.Error as exc:
                    if attempt == 2 or "full" not in str(exc):
                        raise self._failed(what, exc, storing=False) from None
                    self.checkpoint()
            if low:
                self.checkpoint()
        self._succeeded(storing=False)
        return total

    def _chunked_one(self, what: str, items: list[_K], fn: Callable[[list[_K]], int]
                     ) -> None:
        low = self._low_space()
        for attempt in (1, 2):
            try:
                with self._tx():
                    fn(items)
                break
            except sqlite3.Error as exc:
                if attempt == 2 or "full" not in str(exc):
                    raise self._failed(what, exc) from None
                self.checkpoint()
        if low:
            self.checkpoint()
        self._succeeded()

    def _low_space(self) -> bool:
        free = self.free_bytes() if self._reserve else None
        return free is not None and free < LOW_SPACE_BYTES

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete acknowledged messages (``receipts = false``: the PUBACK is the end);
        returns how many were still there."""
        seqs = list(seqs)
        held = 0
        if self._held:
            rest = []
            for s in seqs:
                h = self._held.pop(s, None)
                if h is None:
                    rest.append(s)
                else:
                    self._held_ids.pop(h.id, None)
                    held += 1
            seqs = rest
            self._pending.count("acked", held)
        if not seqs:
            return held
        try:
            with self._tx():
                cur = self._db.executemany("DELETE FROM spool WHERE seq = ?",
                                           ((s,) for s in seqs))
                n = cur.rowcount
                self._db.execute("UPDATE counters SET value = value + ? WHERE name = 'acked'",
                                 (n,))
        except sqlite3.Error as exc:
            raise self._failed("cannot delete acknowledged", exc, storing=False) from None
        self._succeeded(storing=False)
        return held + n

    def checkpoint(self) -> None:
        """A passive WAL checkpoint (never waits for readers; a failure is harmless: the
        next one catches up)."""
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def probe(self, nbytes: int = 2048) -> bool:
        """Try a write the size of a result (while :attr:`error` is set, to notice when
        space returns even if no result is due); True when it succeeded. A smaller write
        could fit in the WAL's existing pages while storing a result still fails."""
        try:
            if self._reserve:
                self._keep_reserve(nbytes)
            with self._tx():
                self._db.execute("INSERT INTO writable VALUES (zeroblob(?))", (nbytes,))
                self._db.execute("DELETE FROM writable")
        except SpoolError:
            return False
        except sqlite3.Error as exc:
            self._failed("cannot write", exc)
            return False
        self._succeeded()
        return True

    def free_bytes(self) -> int | None:
        """Bytes the agent may still use on the spool's filesystem (None: unknown)."""
        if self.path is None:
            return None
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    def _keep_reserve(self, need: int) -> None:
        """Make sure ``need`` bytes fit in the file's free pages with the floor left,
        growing the reserve when the filesystem has room; raise SpoolError (counted as
        a failed write) when it has not."""
        try:
            free = int(self._db.execute("PRAGMA freelist_count").fetchone()[0]) * self._page
        except sqlite3.Error as exc:
            raise self._failed("cannot read the free page count", exc) from None
        if free - need >= RESERVE_FLOOR_BYTES:
            return
        grow = RESERVE_BYTES + need - free
        avail = self.free_bytes()
        # Room for the new pages twice (the WAL frames, then the file) and a margin.
        if avail is not None and avail < 2 * grow + RESERVE_BYTES:
            where = self.path.parent if self.path is not None else "?"
            raise self._failed("filesystem full", f"{avail} bytes free on {where} (not "
                               "storing new results; the spool's reserve is kept for "
                               "delivering and deleting what it holds)")
        try:
            with self._tx():
                # A blob spread over overflow pages, deleted in the same transaction: its
                # pages stay in the file as free pages (auto_vacuum is off).
                self._db.execute("INSERT INTO writable VALUES (zeroblob(?))", (grow,))
                self._db.execute("DELETE FROM writable")
        except sqlite3.Error as exc:
            raise self._failed("cannot grow the spool's reserve", exc) from None
        self.checkpoint()

    @property
    def error(self) -> str | None:
        """Why storing results fails now, else why another write (marking sent, deleting,
        the budget ledger) failed last; None when the last of each succeeded."""
        return self.store_error or self.other_error

    def _failed(self, what: str, exc: sqlite3.Error | str, storing: bool = True
                ) -> SpoolError:
        text = f"spool {self.path}: {what}: {exc}"
        if not storing:
            self.other_error = text
            return SpoolError(text)
        self.store_error = text
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        return SpoolError(text)

    def _succeeded(self, storing: bool = True) -> None:
        if not storing:
            self.other_error = None
            return
        self.store_error = None
        self.failing_since = None

    def depth(self) -> int:
        """Messages waiting (held in memory included)."""
        return self._counter("depth") + len(self._held)

    @property
    def held(self) -> int:
        """Results held in memory now (write-behind), not on disk."""
        return len(self._held)

    def stats(self) -> SpoolStats:
        """All counters (what is held in memory and not committed yet included)."""
        rows = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        for name, n in self._pending.counters.items():
            rows[name] = rows.get(name, 0) + n
        oldest = self._db.execute("SELECT min(spooled_at) FROM spool").fetchone()[0]
        if self._held:
            first = next(iter(self._held.values())).spooled_at
            oldest = first if oldest is None else min(oldest, first)
        return SpoolStats(depth=rows.get("depth", 0) + len(self._held),
                          bytes=rows.get("bytes", 0) + sum(len(h.payload)
                                                           for h in self._held.values()),
                          evicted=rows.get("evicted", 0), spooled=rows.get("spooled", 0),
                          acked=rows.get("acked", 0), oldest_spooled_at=oldest,
                          awaiting_receipt=self.awaiting_receipt(),
                          receipted=rows.get("receipted", 0))

    def awaiting_receipt(self) -> int:
        """Rows acknowledged by the broker and not yet confirmed by a receipt."""
        try:
            row = self._db.execute(
                "SELECT count(*) FROM spool WHERE sent_at IS NOT NULL").fetchone()
        except sqlite3.OperationalError:  # read-only view of a spool from before receipts
            return 0
        return int(row[0]) + sum(1 for h in self._held.values() if h.sent_at is not None)

    def ids(self) -> list[str]:
        """Every spooled id, oldest first (for tests and diagnostics)."""
        disk = [(r[0], r[1]) for r in self._db.execute("SELECT seq, id FROM spool")]
        return [i for _, i in sorted(disk + [(s, h.id) for s, h in self._held.items()])]

    # ------------------------------------------------------------------ budget ledger

    def add_usage(self, link: str, month: str, nbytes: float) -> None:
        """Count ``nbytes`` moved by one run on ``link`` in ``month`` (``YYYY-MM``)."""
        self._write("cannot count data usage",
                    "INSERT INTO usage VALUES (?, ?, ?, 1) ON CONFLICT (link, month) DO UPDATE "
                    "SET bytes = bytes + excluded.bytes, runs = runs + 1", (link, month, nbytes))

    def usage(self, month: str) -> dict[str, float]:
        """Bytes used per link in ``month``."""
        used: dict[str, float] = dict(self._db.execute(
            "SELECT link, bytes FROM usage WHERE month = ?", (month,)).fetchall())
        for (link, mon), (nbytes, _) in self._pending.usage.items():
            if mon == month:
                used[link] = used.get(link, 0.0) + nbytes
        return used

    def update_estimate(self, test: str, link: str, nbytes: float) -> float:
        """Fold one run's bytes into the running estimate; returns the new estimate."""
        old = self.estimate(test, link)
        new = nbytes if old is None else (1 - EWMA_ALPHA) * old + EWMA_ALPHA * nbytes
        self._write("cannot update the bytes-per-run estimate",
                    "INSERT OR REPLACE INTO estimates VALUES (?, ?, ?)", (test, link, new))
        return new

    def estimate(self, test: str, link: str) -> float | None:
        """Bytes one run of ``test`` on ``link`` moves, from past results."""
        row = self._db.execute("SELECT bytes FROM estimates WHERE test = ? AND link = ?",
                               (test, link)).fetchone()
        value = float(row[0]) if row else None
        for nbytes in self._pending.estimates.get((test, link), ()):
            value = nbytes if value is None else \
                (1 - EWMA_ALPHA) * value + EWMA_ALPHA * nbytes
        return value

    def set_last_result(self, link: str, at: str) -> None:
        """Remember when ``link`` last produced a result (RFC 3339)."""
        self._write("cannot record the last result time",
                    "INSERT OR REPLACE INTO last_result VALUES (?, ?)", (link, at))

    def last_results(self) -> dict[str, str]:
        """Last result time per link."""
        last: dict[str, str] = dict(self._db.execute(
            "SELECT link, at FROM last_result").fetchall())
        return {**last, **self._pending.last_results}

    # ------------------------------------------------------------------ helpers

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    def _write(self, what: str, sql: str, params: tuple[object, ...]) -> None:
        try:
            with self._tx():
                self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise self._failed(what, exc, storing=False) from None
        self._succeeded(storing=False)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): writers queue instead of failing."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type:
            # SQLite may already have rolled back (SQLITE_FULL does): the original error
            # is what matters.
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            return
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error:
            # A failed COMMIT (disk full) leaves the transaction open; without this every
            # later BEGIN would fail with "within a transaction" even after space returns.
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise
