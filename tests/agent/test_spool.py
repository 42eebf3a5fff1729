"""The durable spool: FIFO, bounded with counted eviction, crash-safe (real SQLite files,
a real SIGKILLed writer process)."""

from __future__ import annotations

import logging
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.spool import Spool
from tests.helpers.agent import REPO


def put(spool: Spool, n: int, start: int = 0, size: int = 100) -> None:
    for i in range(start, start + n):
        spool.put([(f"id-{i}", "t/results", b"x" * size)])


def test_fifo_and_ack(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        put(spool, 5)
        entries = spool.peek(limit=3)
        assert [e.id for e in entries] == ["id-0", "id-1", "id-2"]
        assert [e.id for e in spool.peek(entries[-1].seq)] == ["id-3", "id-4"]
        assert spool.ack([entries[0].seq, entries[2].seq]) == 2
        assert spool.ids() == ["id-1", "id-3", "id-4"]
        assert spool.ack([entries[0].seq]) == 0  # acking twice is harmless
        stats = spool.stats()
        assert (stats.depth, stats.acked, stats.spooled, stats.bytes) == (3, 2, 5, 300)


def test_same_result_id_is_spooled_once(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        spool.put([("a", "t", b"1"), ("a", "t", b"1")])
        spool.put([("a", "t", b"1")])
        assert spool.ids() == ["a"]


def test_cap_on_count_evicts_oldest_and_counts(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "netmon.agent.spool"), \
            Spool(tmp_path / "s.db", max_results=10) as spool:
        put(spool, 25)
        assert spool.ids() == [f"id-{i}" for i in range(15, 25)]
        assert spool.stats().evicted == 15
    assert "evicted" in caplog.text and "spool full" in caplog.text
    with Spool(tmp_path / "s.db", max_results=10) as spool:  # the counter is persistent
        assert spool.stats().evicted == 15


def test_cap_on_bytes(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db", max_bytes=10_000) as spool:
        put(spool, 50, size=1000)
        stats = spool.stats()
        assert stats.bytes == 10_000 and stats.depth == 10
        assert spool.ids()[-1] == "id-49"  # the newest are kept
        assert stats.evicted == 50 - stats.depth


def test_file_is_private_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Spool(path) as spool:
        put(spool, 1)
        assert path.stat().st_mode & 0o077 == 0
        mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"


WRITER = """
import sys, itertools
from pathlib import Path
from agent.spool import Spool
s = Spool(Path(sys.argv[1]))
for i in itertools.count():
    s.put([(f"id-{i}", "t", b"p" * 200)])
    if i % 50 == 0:
        s.ack([e.seq for e in s.peek(limit=10)])
    print(i, flush=True)
"""


def test_sigkill_during_writes_loses_nothing_committed(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    last = -1
    deadline = time.monotonic() + 20
    while last < 300 and time.monotonic() < deadline:
        last = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert last >= 300
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Spool(path) as spool:
        ids = spool.ids()
        nums = [int(i.split("-")[1]) for i in ids]
        # every put reported done is there (but the acked oldest), in order, counters right
        assert nums == list(range(nums[0], nums[-1] + 1)) and nums[-1] >= last
        acked = spool.stats().acked
        assert spool.stats().depth == len(ids)
        assert spool.stats().spooled - acked == len(ids)


# --------------------------------------------------------------------------- receipts


def test_sent_rows_stay_until_a_receipt_names_them(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        put(spool, 5)
        seqs = [e.seq for e in spool.peek()]
        assert spool.mark_sent(seqs[:3], at=1000.0) == 3
        # Sent rows are not handed out as new, and are still there, counted.
        assert [e.id for e in spool.peek()] == ["id-3", "id-4"]
        assert spool.ids() == [f"id-{i}" for i in range(5)]
        st = spool.stats()
        assert (st.depth, st.awaiting_receipt, st.acked, st.receipted) == (5, 3, 3, 0)
        # A receipt deletes what it names, sent or not; unknown ids are ignored.
        assert spool.receipt(["id-0", "id-4", "never-spooled"]) == 2
        assert spool.ids() == ["id-1", "id-2", "id-3"]
        assert spool.receipt(["id-0"]) == 0  # a repeated receipt is harmless
        st = spool.stats()
        assert (st.depth, st.awaiting_receipt, st.receipted) == (3, 2, 2)


def test_due_oldest_first_bounded_excluding_in_flight(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        put(spool, 6)
        seqs = [e.seq for e in spool.peek()]
        spool.mark_sent(seqs[:4], at=1000.0)
        spool.mark_sent(seqs[4:5], at=2000.0)
        assert [e.id for e in spool.due(1500.0, 10, now=2001.0)] == \
            ["id-0", "id-1", "id-2", "id-3"]
        assert [e.id for e in spool.due(1500.0, 2, now=2001.0)] == ["id-0", "id-1"]
        assert [e.id for e in spool.due(1500.0, 2, exclude=[seqs[0]], now=2001.0)] == \
            ["id-1", "id-2"]
        # Resent and acknowledged again: the wait starts over.
        spool.mark_sent(seqs[:1], at=2500.0)
        assert [e.id for e in spool.due(1500.0, 10, now=2501.0)] == ["id-1", "id-2", "id-3"]
        # The clock was set back a year: rows "sent in the future" are due, not parked.
        assert [e.id for e in spool.due(1500.0 - 3e7, 10, now=2501.0 - 3e7)] == \
            [f"id-{i}" for i in range(5)]


def test_eviction_counts_sent_rows(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db", max_results=10) as spool:
        put(spool, 8)
        spool.mark_sent([e.seq for e in spool.peek()])
        put(spool, 5, start=8)
        # 13 rows (8 awaiting a receipt) > 10: the 3 oldest go, sent or not.
        assert spool.ids() == [f"id-{i}" for i in range(3, 13)]
        st = spool.stats()
        assert (st.evicted, st.awaiting_receipt, st.depth) == (3, 5, 10)


def test_spool_from_before_receipts_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
            topic TEXT NOT NULL, payload BLOB NOT NULL, spooled_at REAL NOT NULL);
        CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO counters VALUES ('depth', 1), ('bytes', 3), ('evicted', 0),
            ('spooled', 1), ('acked', 0);
        INSERT INTO spool (id, topic, payload, spooled_at) VALUES ('old-1', 't', X'616263', 1);
    """)
    db.close()
    with Spool(path, readonly=True) as ro:  # `status` on an old file: no column yet
        assert ro.stats().awaiting_receipt == 0
    with Spool(path) as spool:
        assert [e.id for e in spool.peek()] == ["old-1"]  # unsent: published again
        spool.mark_sent([spool.peek()[0].seq])
        assert spool.stats().awaiting_receipt == 1 and spool.stats().depth == 1


def test_wal_stays_small(tmp_path: Path) -> None:
    from agent.spool import JOURNAL_SIZE_LIMIT, WAL_AUTOCHECKPOINT_PAGES
    path = tmp_path / "s.db"
    with Spool(path) as spool:
        page = spool._db.execute("PRAGMA page_size").fetchone()[0]
        assert spool._db.execute("PRAGMA journal_size_limit").fetchone()[0] == \
            JOURNAL_SIZE_LIMIT
        assert spool._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == \
            WAL_AUTOCHECKPOINT_PAGES
        biggest = 0
        for i in range(200):  # ~5 MB through the spool, as results come and go
            spool.put([(f"id-{i}-{j}", "t", b"r" * 1000) for j in range(25)])
            spool.mark_sent([e.seq for e in spool.peek()])
            spool.receipt([f"id-{i}-{j}" for j in range(25)])
            biggest = max(biggest, Path(f"{path}-wal").stat().st_size)
    # SQLite's default would let it reach ~4 MB (1000 pages) before the first checkpoint.
    assert biggest <= max(JOURNAL_SIZE_LIMIT, (WAL_AUTOCHECKPOINT_PAGES + 30) * (page + 24))


def test_ledger_committed_with_the_results(tmp_path: Path) -> None:
    from agent.spool import EWMA_ALPHA, LedgerUpdate
    with Spool(tmp_path / "s.db") as spool:
        spool.put([("a", "t", b"1")], LedgerUpdate(
            usage={("lte", "2026-06"): 100.0}, estimates={("speed", "lte"): 100.0},
            last_results={"lte": "2026-06-01T00:00:00.000Z"}))
        spool.put([("b", "t", b"2")], LedgerUpdate(
            usage={("lte", "2026-06"): 50.0}, estimates={("speed", "lte"): 200.0},
            last_results={"lte": "2026-06-01T01:00:00.000Z"}))
        assert spool.usage("2026-06") == {"lte": 150.0}
        assert spool.estimate("speed", "lte") == pytest.approx(
            (1 - EWMA_ALPHA) * 100.0 + EWMA_ALPHA * 200.0)
        assert spool.last_results() == {"lte": "2026-06-01T01:00:00.000Z"}
        runs = spool._db.execute("SELECT runs FROM usage").fetchone()[0]
        assert runs == 2


# --------------------------------------------------------------------------- write-behind

def _on_disk(path: Path, needle: str) -> bool:
    """Whether ``needle`` is anywhere in the spool's file or WAL (raw bytes)."""
    raw = b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    return needle.encode() in raw


def _rows_ever_inserted(path: Path) -> int:
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'spool'").fetchone()
    return int(row[0]) if row else 0


def test_write_behind_receipted_results_never_reach_the_file(tmp_path: Path) -> None:
    from agent.spool import LedgerUpdate
    path = tmp_path / "s.db"
    spool = Spool(path, write_delay_s=3600)
    assert spool.begin() is None  # a fresh spool: no previous run to report
    spool.set_holding(True)
    ids = [f"held-result-{i}" for i in range(3)]
    for i in ids:
        spool.put([(i, "t/results", b'{"id": "' + i.encode() + b'"}')], LedgerUpdate(
            usage={("lte", "2026-06"): 10.0}, estimates={},
            last_results={"lte": "2026-06-01T00:00:00.000Z"}))
    entries = spool.peek()
    assert [e.id for e in entries] == ids
    assert spool.mark_sent([e.seq for e in entries]) == 3
    assert spool.receipt(ids[:2]) == 2
    # Counted as the file would have counted them, but nothing was written.
    stats = spool.stats()
    assert (stats.depth, stats.spooled, stats.acked, stats.receipted,
            stats.awaiting_receipt) == (1, 3, 3, 2, 1)
    assert spool.usage("2026-06") == {"lte": 30.0}
    assert _rows_ever_inserted(path) == 0
    assert not any(_on_disk(path, i) for i in ids)
    with Spool(path, readonly=True) as other:  # what ``status`` reads meanwhile
        assert other.ids() == [] and other.stats().spooled == 0
    spool.close()  # a clean stop commits the unreceipted one, sent, with the ledger
    with Spool(path) as again:
        assert again.ids() == [ids[2]]
        assert [e.id for e in again.due(float("inf"), 10)] == [ids[2]]
        stats = again.stats()
        assert (stats.spooled, stats.acked, stats.receipted) == (3, 3, 2)
        assert again.usage("2026-06") == {"lte": 30.0}
        assert again._db.execute("SELECT runs FROM usage").fetchone()[0] == 3
    assert not _on_disk(path, ids[0]) and not _on_disk(path, ids[1])
    assert not Path(f"{path}.open").exists(), "a clean stop removes the marker"


def test_write_behind_commits_after_the_delay_and_when_holding_stops(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Spool(path, write_delay_s=0.2) as spool:
        spool.begin()
        spool.set_holding(True)
        due_at = time.monotonic() + 0.2  # before put: it is held at or after this - 0.2
        spool.put([("late", "t", b"1")])
        assert spool_ids_ro(path) == []
        while time.monotonic() < due_at:
            assert spool.tick() is not None  # something waits: the held result
            time.sleep(0.01)
        wait = spool.tick()
        assert spool_ids_ro(path) == ["late"] and spool.held == 0 and wait is None
        assert spool.written_behind == 1
        # The connection went down: no receipt can come, held results go to the file now
        # (the delay here is an hour).
        spool.write_delay_s = 3600
        spool.put([("outage", "t", b"2")])
        assert spool_ids_ro(path) == ["late"]
        spool.set_holding(False)
        assert spool_ids_ro(path) == ["late", "outage"]
        spool.put([("disconnected", "t", b"3")])  # not holding: committed at once
        assert spool_ids_ro(path) == ["late", "outage", "disconnected"]
        assert spool.stats().spooled == 3


def test_write_behind_commits_a_budgeted_runs_ledger_at_once(tmp_path: Path) -> None:
    from agent.spool import EWMA_ALPHA, LedgerUpdate
    path = tmp_path / "s.db"
    with Spool(path, write_delay_s=3600) as spool:
        spool.begin()
        spool.set_holding(True)
        # Fibre (no budget): the run's ledger waits in memory, and reads see it.
        spool.put([("fibre-1", "t", b"1")], LedgerUpdate(
            usage={("fibre", "2026-06"): 1e9}, estimates={("speed", "fibre"): 1e9},
            last_results={}))
        spool.put([("fibre-2", "t", b"1")], LedgerUpdate(
            usage={("fibre", "2026-06"): 2e9}, estimates={("speed", "fibre"): 2e9},
            last_results={}))
        assert spool.usage("2026-06") == {"fibre": 3e9}
        assert spool.estimate("speed", "fibre") == pytest.approx(
            (1 - EWMA_ALPHA) * 1e9 + EWMA_ALPHA * 2e9)
        # The SIM (a budget): committed at once, with what was pending.
        spool.put([("lte-1", "t", b"1")], LedgerUpdate(
            usage={("lte", "2026-06"): 5e8}, estimates={("speed", "lte"): 5e8},
            last_results={}, urgent=True))
        assert spool.held == 3
        with Spool(path, readonly=True) as other:
            # A metered SIM's budget must not forget a big run on a power cut.
            assert other.usage("2026-06") == {"lte": 5e8, "fibre": 3e9}
            assert other.estimate("speed", "lte") == 5e8
            assert other.estimate("speed", "fibre") == pytest.approx(
                (1 - EWMA_ALPHA) * 1e9 + EWMA_ALPHA * 2e9)
            assert other.ids() == []


def test_unclean_stop_reported_with_a_bound(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    # A real process killed -9 while it holds results in memory.
    code = f"""
import os, signal
from pathlib import Path
from agent.spool import Spool
spool = Spool(Path({str(path)!r}), write_delay_s=3600)
spool.begin()
spool.set_holding(True)
for i in range(5):
    spool.put([(f"r{{i}}", "t", b"x")])
print("held", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL and "held" in proc.stdout, proc.stderr
    with Spool(path, write_delay_s=30) as spool:
        prev = spool.begin()
        assert prev is not None and prev.results_maybe_lost >= 5
        assert prev.write_delay_s == 3600
        assert spool.ids() == []  # they were lost: that is the documented trade-off
    with Spool(path, write_delay_s=30) as spool:
        assert spool.begin() is None  # the previous run closed cleanly


def spool_ids_ro(path: Path) -> list[str]:
    """Ids in the file as another process sees them."""
    with Spool(path, readonly=True) as ro:
        return ro.ids()
