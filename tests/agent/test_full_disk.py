"""A full disk on the probe: the spool on a tiny tmpfs this test mounts (root only), the
real agent process, a real mosquitto and a subscriber playing the collector.

What must hold: every result the agent made is either spooled or counted in
``spool_lost`` (exact), the status message and ``netmon-agent status`` show the error,
what is already spooled keeps being delivered and receipted, the agent recovers by itself
when space returns, and it exits 1 after ``[spool] unusable_exit_s`` of failures."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.services import Service
from netmon.contract import parse_status
from tests.helpers.agent import (
    Listener,
    Subscriber,
    agent_config,
    cli,
    fresh_state,
    kill,
    spool_ids,
    spool_sent_ids,
    spool_unsent_ids,
    start_agent,
    tcp_test,
    wait_until,
    write_config,
)

PROBE = "test-probe-01"
TOPICS = f"netmon/v1/probes/{PROBE}/#"

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="mounting a tmpfs needs root (CI runs as root)")


@pytest.fixture
def target() -> Iterator[Listener]:
    listener = Listener()
    yield listener
    listener.close()


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (the size the issue saw fail), unmounted at the end whatever
    happened."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mnt)],
                   check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory: Path) -> Path:
    """Write a ballast file until the filesystem refuses more (ENOSPC)."""
    ballast = directory / "ballast"
    with open(ballast, "wb", buffering=0) as fh:
        while True:
            try:
                fh.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
    with open(ballast, "ab", buffering=0) as fh:  # the last partial block, too
        for _ in range(4096):
            try:
                fh.write(b"\0")
            except OSError:
                break
    return ballast


def state(path: Path) -> dict[str, Any]:
    """The agent's state file, fresh ({} while it is being rewritten in place)."""
    return fresh_state(path)


def test_full_disk_counted_shown_delivering_and_recovers(
        tmp_path: Path, disk: Path, broker: Service, target: Listener) -> None:
    # Six results a second: the full disk still takes results into the spool's reserve
    # (192 KiB above its floor) before it refuses them. write_delay_s = 0: every result
    # takes the commit path this test is about (write-behind takes it after its delay or
    # when the connection drops; a frozen broker keeps the connection "up" for a while).
    data = agent_config(tmp_path, broker,
                        {f"t{i}": tcp_test(target.port) for i in range(6)},
                        spool={"path": str(disk / "spool.db"), "receipt_timeout_s": 3600,
                               "unusable_exit_s": 3600, "write_delay_s": 0})
    cfg = write_config(tmp_path, data)
    spool = disk / "spool.db"
    state_file = disk / "agent-state.json"  # on the full disk too, as on a probe
    log = tmp_path / "agent.log"
    collector = Subscriber(broker.host, broker.port, TOPICS)
    agent = start_agent(cfg, log)
    frozen = False
    try:
        wait_until(lambda: len(spool_sent_ids(spool)) >= 4, 30, "results sent")
        # Freeze the broker: what is measured from now on stays spooled, unsent.
        os.kill(broker.proc.pid, signal.SIGSTOP)
        frozen = True
        wait_until(lambda: len(spool_unsent_ids(spool)) >= 3, 30, "results spooled unsent")
        ballast = fill(disk)

        def lost() -> int:
            return int(state(state_file).get("results", {}).get("lost") or 0)
        wait_until(lambda: lost() >= 3, 180, "results counted lost on the full disk")
        unsent = spool_unsent_ids(spool)
        assert unsent, "the unsent backlog is still in the spool"

        # Delivery of what is spooled continues: the broker comes back and the backlog
        # goes out although the disk is full.
        os.kill(broker.proc.pid, signal.SIGCONT)
        frozen = False
        collector.wait(lambda: set(unsent) <= {r["id"] for r in collector.results()}, 30,
                       "the spooled backlog delivered while the disk is full")
        wait_until(lambda: set(unsent) <= set(spool_sent_ids(spool)), 30,
                   "the backlog marked sent on the full disk")

        # The status message and `netmon-agent status` show the error and the count.
        def failing_status() -> bool:
            msgs = [json.loads(m.payload) for m in collector.statuses()]
            return any(m.get("spool_error") and (m.get("spool_lost") or 0) >= 3
                       for m in msgs)
        collector.wait(failing_status, 30, "a status message with spool_error and spool_lost")
        msg = next(parse_status(m.payload, PROBE) for m in reversed(collector.statuses())
                   if json.loads(m.payload).get("spool_error"))
        assert msg.spool_error is not None and "filesystem full" in msg.spool_error
        res = cli("status", "--config", str(cfg), "--json")
        assert res.returncode == 0, res.stderr
        shown = json.loads(res.stdout)
        assert shown["spool_error"] and shown["spool_lost"] >= 3
        text = cli("status", "--config", str(cfg)).stdout
        assert "spool ERROR:" in text and "bytes free on" in text
        assert "result(s) lost" in log.read_text()

        # Receipts delete rows on the full disk (a few: not enough to take new results).
        some = unsent[:5]
        collector.receipt(PROBE, some)
        wait_until(lambda: not set(some) & set(spool_ids(spool)), 30,
                   "receipted rows deleted on the full disk")

        # Space returns: the agent recovers by itself.
        spooled_at_free = state(state_file).get("results", {}).get("spooled_total") or 0
        ballast.unlink()
        lost_when_freed = lost()
        wait_until(lambda: (state(state_file).get("results", {}).get("spooled_total") or 0)
                   >= spooled_at_free + 12, 60, "new results spooled after space returned")
        wait_until(lambda: "writable again" in log.read_text(), 60, "the recovery logged")
        collector.wait(lambda: any(json.loads(m.payload).get("state") == "online" and
                                   json.loads(m.payload).get("spool_error") is None and
                                   (json.loads(m.payload).get("spool_lost") or 0) >= 3
                                   for m in collector.statuses()[-3:]), 30,
                       "a status message without spool_error after recovery")
        # Exact: every result made was either spooled or counted lost. One snapshot of
        # the running agent (the state file is written after each store).
        snap: dict[str, Any] = {}

        def consistent_snapshot() -> bool:
            nonlocal snap
            snap = state(state_file).get("results", {})
            return bool(snap)
        wait_until(consistent_snapshot, 10, "a readable state file")
        assert snap["made"] == snap["spooled_total"] + snap["lost"], snap
        assert snap["lost"] >= lost_when_freed >= 3
        # And the agent's count of results matches the connections the target saw (the
        # one in flight at this instant may be counted by the target only).
        assert target.accepted - 6 <= snap["made"] <= target.accepted, (snap, target.accepted)
        assert agent.poll() is None, "the agent must not exit on a full disk it recovers from"
    finally:
        if frozen:
            os.kill(broker.proc.pid, signal.SIGCONT)
        kill(agent)
        collector.close()


def test_spool_unusable_longer_than_unusable_exit_s_exits_1(
        tmp_path: Path, disk: Path, broker: Service, target: Listener) -> None:
    data = agent_config(tmp_path, broker, {f"t{i}": tcp_test(target.port) for i in range(6)},
                        spool={"path": str(disk / "spool.db"), "unusable_exit_s": 4,
                               "write_delay_s": 0})  # every result commits: see above
    cfg = write_config(tmp_path, data)
    log = tmp_path / "agent.log"
    agent = start_agent(cfg, log)
    try:
        wait_until(lambda: len(spool_ids(disk / "spool.db")) >= 2, 30, "results spooled")
        fill(disk)
        rc = agent.wait(240)
        assert rc == 1, log.read_text()
        text = log.read_text()
        assert "unusable for" in text and "[spool] unusable_exit_s = 4" in text
        assert "exiting with status 1 so systemd restarts the agent" in text
    finally:
        with contextlib.suppress(Exception):
            kill(agent)
