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
