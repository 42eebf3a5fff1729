"""Write-behind (``[spool] write_delay_s``, issue 20) in the cases its first tests left
out: what is committed while results are held keeps its place in the queue. Real SQLite
files; the publisher against a real mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import agent.spool as spool_mod
from agent.config import BrokerConfig, SpoolConfig
from agent.publisher import Publisher
from agent.spool import Spool, SpoolError
from devstack.services import Service
from netmon.contract import StatusMessage, parse_status
from tests.helpers.agent import (
    Listener,
    Subscriber,
    agent_config,
    cli,
    kill,
    start_agent,
    tcp_test,
    wait_until,
    write_config,
)

PROBE = "test-probe-01"
RESULTS = f"netmon/v1/probes/{PROBE}/results"


def _items(n: int, start: int = 0) -> list[tuple[str, str, bytes]]:
    return [(f"r-{i:05d}", RESULTS, b'{"n": %d}' % i) for i in range(start, start + n)]


def test_results_committed_while_others_are_held_are_handed_out_after_them(
        tmp_path: Path) -> None:
    # Beyond MAX_HELD a batch is committed at once; the results held before it have seqs
    # HELD_SEQ_GAP above the file's sequence. The publisher reads on from the highest seq
    # it published (peek(cursor)): a committed result must not get a seq below the held
    # ones, or it is not published on this connection at all.
    with Spool(tmp_path / "s.db", write_delay_s=3600) as spool:
        spool.begin()
        spool.set_holding(True)
        spool.put(_items(1))
        first = spool.peek()
        assert [e.id for e in first] == ["r-00000"] and spool.held == 1
        cursor = first[-1].seq
        batch = _items(spool_mod.MAX_HELD, start=1)
        spool.put(batch)
        assert spool.held == 1  # the batch was too big to hold: committed
        assert [e.id for e in spool.peek(cursor, limit=len(batch))] == [i for i, _, _ in batch]
        assert spool.ids() == [i for i, _, _ in _items(1 + len(batch))]  # FIFO


def test_publisher_sends_results_committed_while_others_are_held(
        tmp_path: Path, broker: Service) -> None:
    """The same through the real publisher and broker: every result reaches the broker on
    the connection that is up, none waits for a reconnect."""
    sub = Subscriber("127.0.0.1", broker.port, RESULTS)
    spool = Spool(tmp_path / "s.db", write_delay_s=3600)
    spool.begin()
    cfg = BrokerConfig(host="127.0.0.1", port=broker.port, tls=False, max_inflight=100,
                       reconnect_min_s=0.1, reconnect_max_s=1.0)

    def status(state: str) -> StatusMessage:
        raise AssertionError("announce=False publishes no status")

    async def scenario() -> None:
        pub = Publisher(cfg, PROBE, f"netmon/v1/probes/{PROBE}/status", spool, status,
                        announce=False, spool_cfg=SpoolConfig(receipts=True),
                        receipts=True, receipts_topic=f"netmon/v1/probes/{PROBE}/receipts")
        await pub.start()
        try:
            assert await pub.wait_connected(60)
            deadline = time.monotonic() + 60
            while spool.write_delay_s and not spool._holding:  # set on the event loop
                assert time.monotonic() < deadline, "holding never turned on"
                await asyncio.sleep(0.05)
            spool.put([(str(uuid.uuid4()), RESULTS, b'{"first": true}')])
            pub.notify()
            deadline = time.monotonic() + 60
            while len(sub.messages) < 1:
                assert time.monotonic() < deadline, "the held result was not published"
                await asyncio.sleep(0.05)
            batch = [(str(uuid.uuid4()), RESULTS, b'{"n": %d}' % i)
                     for i in range(spool_mod.MAX_HELD)]
            spool.put(batch)  # more than may be held: committed at once
            pub.notify()
            deadline = time.monotonic() + 120
            while len(sub.messages) < 1 + len(batch):
                if time.monotonic() > deadline:
                    raise AssertionError(f"{len(sub.messages) - 1} of {len(batch)} committed "
                                         "results published on the open connection")
                await asyncio.sleep(0.1)
            assert pub.connected and pub.info.attempts == 1  # no reconnect needed
        finally:
            await pub.stop()

    try:
        asyncio.run(scenario())
    finally:
        spool.close()
        sub.close()


def test_unreadable_marker_reported_with_a_bound_agent_keeps_running(
        tmp_path: Path, broker: Service, target: Listener) -> None:
    """A marker the previous run left unreadable (cut, or a corrupt SD card) means it did
    not stop cleanly with an unknown bound: the agent must still run, measure and report
    it (status message, ``status``) with a bound a Count can carry: never more than
    MAX_HELD results are held at once."""
    data = agent_config(tmp_path, broker, {"t": tcp_test(target.port)},
                        spool={"receipt_timeout_s": 3600, "write_delay_s": 30})
    cfg = write_config(tmp_path, data)
    marker = tmp_path / "state" / "spool.db.open"
    marker.parent.mkdir(parents=True)
    marker.write_bytes(b'{"pid": 12')  # cut mid-write
    collector = Subscriber(broker.host, broker.port, f"netmon/v1/probes/{PROBE}/#")
    log = tmp_path / "agent.log"
    agent = start_agent(cfg, log)
    try:
        wait_until(lambda: "did not stop cleanly" in log.read_text() or agent.poll() is not None,
                   60, "the unclean stop logged")
        collector.wait(lambda: len(collector.results()) >= 2 or agent.poll() is not None, 60,
                       "results from the agent")
        assert agent.poll() is None, log.read_text()[-3000:]
        collector.wait(lambda: any(
            parse_status(m.payload).results_maybe_lost == spool_mod.MAX_HELD
            for m in collector.statuses()), 60, "the bound in the probe's status message")
        res = cli("status", "--config", str(cfg), "--json")
        assert json.loads(res.stdout)["unclean_stop"]["results_maybe_lost"] == \
            spool_mod.MAX_HELD, res.stdout + res.stderr
        assert f"up to {spool_mod.MAX_HELD} result(s)" in log.read_text()
        assert kill(agent, signal.SIGTERM) == 0
        assert not marker.exists(), "a clean stop removes the marker"
    finally:
        kill(agent)
        collector.close()


def test_clean_stop_on_a_full_disk_reports_the_held_results_it_could_not_commit(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A clean stop must commit what is held; when the filesystem refuses (full, the
    spool's reserve spent) the results are lost, and that is never silent: an error at
    the stop, and the marker stays, so the next start reports a bound that covers them."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(disk)],
                   check=True)
    try:
        path = disk / "spool.db"
        spool = Spool(path, write_delay_s=3600)
        spool.begin()
        spool.set_holding(True)
        held = _items(3)
        spool.put(held)
        assert spool.held == 3
        # Fill the filesystem, then spend the spool's reserve from a second writer of the
        # same file (as ``netmon-agent once`` is) until it refuses a result.
        ballast = disk / "ballast"
        with open(ballast, "wb", buffering=0) as fh, contextlib.suppress(OSError):
            for _ in range(1024):  # 4 MiB at most: the filesystem has 2
                fh.write(b"\0" * 4096)
        with Spool(path) as other, pytest.raises(SpoolError):
            for n in range(100, 100_000):  # the reserve holds a few hundred
                other.put(_items(1, start=n))
        with caplog.at_level(logging.ERROR, "netmon.agent.spool"):
            spool.close()  # the clean stop: the commit of the held results fails
        assert "3 held result(s) lost" in caplog.text
        marker = Path(f"{path}.open")
        assert marker.exists(), "a stop that lost held results must leave the marker"
        ballast.unlink()
        with Spool(path, write_delay_s=3600) as again:
            prev = again.begin()
            assert prev is not None and prev.results_maybe_lost >= len(held)
            assert not {i for i, _, _ in held} & set(again.ids())
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_updater_callbacks_from_its_worker_thread_leave_the_spool_intact(
        tmp_path: Path) -> None:
    """The updater downloads in a worker thread (``asyncio.to_thread``) and from there
    counts the bytes against the link's budget and reads what is left. The spool's
    connection and its transactions belong to the event loop's thread, which stores
    results meanwhile: a BEGIN or COMMIT from the other thread must never land inside
    the loop's transaction (storing a result then failed and the result was counted
    lost, or half of a transaction was committed). The real agent runtime, its real
    updater wiring and spool file; no broker (results go straight to the file)."""
    from agent import config
    from agent.budget import month_key
    from agent.runtime import Runtime

    data = agent_config(tmp_path, None, {}, update={"root": str(tmp_path / "versions")},
                        links={"lte": {"access": "mobile", "isp": "Viettel",
                                       "budget_mb": 10_000}})
    cfg = config.load(None, data=data)
    n = 1500

    async def main() -> tuple[list[str], list[str], float]:
        runtime = Runtime(cfg)
        task = asyncio.create_task(runtime.run())
        deadline = time.monotonic() + 60
        while runtime.updater is None:
            assert time.monotonic() < deadline, "the updater was never attached"
            await asyncio.sleep(0.05)
        updater = runtime.updater
        worker_errors: list[str] = []
        store_errors: list[str] = []

        def download() -> None:  # what Updater._install does per wheel, many times
            for _ in range(n):
                try:
                    updater.count("lte", 1000)
                    updater.budget_left("lte")
                except Exception as exc:  # every failure is the finding
                    worker_errors.append(repr(exc))

        async def store() -> None:
            for i in range(n):
                try:
                    runtime.spool.put([(str(uuid.uuid4()), RESULTS, b'{"n": %d}' % i)])
                except SpoolError as exc:
                    store_errors.append(str(exc))
                await asyncio.sleep(0)

        await asyncio.gather(asyncio.to_thread(download), store())
        month = month_key(runtime.clock.wall(), runtime.scheduler.tz)
        used = runtime.spool.usage(month).get("lte", 0.0)
        runtime.request_stop()
        await task
        return worker_errors, store_errors, used

    worker_errors, store_errors, used = asyncio.run(main())
    assert not store_errors, f"{len(store_errors)} result(s) not stored: {store_errors[:3]}"
    assert not worker_errors, f"{len(worker_errors)} updater call(s) failed: " \
        f"{worker_errors[:3]}"
    assert used == 1000.0 * n
    with Spool(tmp_path / "state" / "spool.db", readonly=True) as ro:
        assert ro.stats().depth == n
