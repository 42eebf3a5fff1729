"""End-to-end receipts with every real process: ``netmon-agent run``, mosquitto,
``netmon-collector run`` and influxd. Counts are exact, per result id, in InfluxDB."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.services import Service, free_port
from tests.helpers.agent import (
    REPO,
    Listener,
    Subscriber,
    agent_config,
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
from tests.helpers.collector import write_config as collector_config

PROBE = "ky-anh-01"  # in the helpers' site registry
DB = "netmon"


class Collector:
    """A ``netmon-collector run`` subprocess."""

    def __init__(self, cfg: Path) -> None:
        self.log = cfg.parent / f"collector-{time.monotonic_ns()}.log"
        self.fh = open(self.log, "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen([sys.executable, "-m", "collector.cli", "run",
                                      "--config", str(cfg)], stdout=self.fh,
                                     stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + 60
        while "MQTT subscribed" not in self.log.read_text(errors="replace"):
            assert self.proc.poll() is None, self.log.read_text(errors="replace")
            assert time.monotonic() < deadline, "collector did not subscribe"
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        self.fh.close()


@pytest.fixture
def collectors() -> Iterator[list[Collector]]:
    procs: list[Collector] = []
    yield procs
    for c in procs:
        c.stop(signal.SIGKILL)


def stored_ids(influx: Any) -> Counter[str]:
    """How many points each result id has in InfluxDB."""
    res = influx.query(f"SELECT result_id FROM results WHERE probe = '{PROBE}'", db=DB)
    series = res["results"][0].get("series") or []
    return Counter(row[1] for s in series for row in s["values"])


def probe_config(tmp_path: Path, broker: Service, tests: dict[str, Any],
                 **spool: Any) -> dict[str, Any]:
    return agent_config(tmp_path, broker, tests, probe_id=PROBE,
                        links={"fibre": {"access": "fixed", "isp": "VNPT"}},
                        spool={"receipt_timeout_s": 3, **spool})


def sent_while_the_collector_is_down(
        tmp_path: Path, broker: Service, influxd: Service, target: Listener,
        collectors: list[Collector], **spool_cfg: Any) -> tuple[Path, Path, Path]:
    """The collector's config (its persistent session made, the collector stopped: the
    broker queues the results for it, stored when it comes back: the first copy), the
    agent's config (write-behind at 1 s: unreceipted results are in the file, marked
    sent, after 1 s) and the spool's path."""
    ccfg = collector_config(tmp_path / "collector", broker.port, influxd.port)
    collectors.append(Collector(ccfg))
    collectors[-1].stop()
    cfg = write_config(tmp_path, probe_config(tmp_path, broker, {"t": tcp_test(target.port)},
                                              write_delay_s=1.0, **spool_cfg))
    return ccfg, cfg, tmp_path / "state" / "spool.db"


def test_agent_sigkill_between_puback_and_receipt_stored_exactly_once(
        tmp_path: Path, broker: Service, influxd: Service, influx: Any, target: Listener,
        collectors: list[Collector]) -> None:
    ccfg, cfg, spool = sent_while_the_collector_is_down(tmp_path, broker, influxd, target,
                                                        collectors)
    wire = Subscriber(broker.host, broker.port, f"netmon/v1/probes/{PROBE}/results")
    agent = start_agent(cfg, tmp_path / "agent.log")
    try:
        # Acknowledged by the broker, no receipt (no collector): then SIGKILL.
        wait_until(lambda: len(spool_sent_ids(spool)) >= 3, 30, "results awaiting receipt")
        kill(agent)
        pending = spool_sent_ids(spool)
        assert len(pending) >= 3
        collectors.append(Collector(ccfg))  # stores the queued copies; receipts go nowhere
        agent = start_agent(cfg, tmp_path / "agent2.log")
        # The restarted agent sends them again after receipt_timeout_s; the receipt for
        # that second copy deletes them.
        wait_until(lambda: not set(pending) & set(spool_ids(spool)), 90,
                   "the pending results receipted after the restart")
        deliveries = Counter(r["id"] for r in wire.results())
        assert all(deliveries[i] >= 2 for i in pending), \
            f"each pending result should have crossed the broker twice: {deliveries}"
        stored = stored_ids(influx)
        assert {i: stored[i] for i in pending} == {i: 1 for i in pending}
        assert max(stored.values()) == 1, "a result id stored as more than one point"
    finally:
        kill(agent)
        wire.close()


def test_receipts_sent_while_the_agent_was_away_do_not_park_its_results(
        tmp_path: Path, broker: Service, influxd: Service, influx: Any, target: Listener,
        collectors: list[Collector]) -> None:
    """The agent restarts between the broker's PUBACK and the collector's receipt (an
    upgrade, a config push, Ansible's handler: in a deployment the agent often restarts
    seconds after its first result). The receipt goes to a clean session that is gone.
    With a receipt timeout of an hour, only ``reconnect_receipt_s`` can bring the result
    back: published again soon after the next connection, receipted, stored once."""
    ccfg, cfg, spool = sent_while_the_collector_is_down(
        tmp_path, broker, influxd, target, collectors, receipt_timeout_s=3600,
        reconnect_receipt_s=2)
    wire = Subscriber(broker.host, broker.port, f"netmon/v1/probes/{PROBE}/results")
    agent = start_agent(cfg, tmp_path / "agent.log")
    try:
        wait_until(lambda: len(spool_sent_ids(spool)) >= 3, 60, "results awaiting receipt")
        assert kill(agent, signal.SIGTERM) == 0
        pending = spool_sent_ids(spool)
        # The collector stores the queued copies and receipts them while no agent listens.
        collectors.append(Collector(ccfg))
        wait_until(lambda: set(pending) <= set(stored_ids(influx)), 90,
                   "the collector storing the results the broker kept for it")
        assert set(pending) <= set(spool_sent_ids(spool)), "nothing deleted them yet"
        agent = start_agent(cfg, tmp_path / "agent2.log")
        wait_until(lambda: not set(pending) & set(spool_ids(spool)), 120,
                   "the results sent before the restart receipted (an hour's timeout)")
        deliveries = Counter(r["id"] for r in wire.results())
        assert all(deliveries[i] >= 2 for i in pending), deliveries
        stored = stored_ids(influx)
        assert {i: stored[i] for i in pending} == {i: 1 for i in pending}
        log = (tmp_path / "agent2.log").read_text(errors="replace")
        assert "since before this connection" in log, log[-2000:]
    finally:
        kill(agent)
        wire.close()


def test_agent_sigkill_between_spool_and_puback_stored_exactly_once(
        tmp_path: Path, broker: Service, influxd: Service, influx: Any, target: Listener,
        collectors: list[Collector]) -> None:
    """Results spooled but never acknowledged by a broker (it is unreachable), the agent
    killed -9, then restarted with the broker back: each result is stored exactly once."""
    collectors.append(Collector(collector_config(tmp_path / "collector", broker.port,
                                                 influxd.port)))
    tests = {"t": tcp_test(target.port)}
    offline = probe_config(tmp_path, broker, tests)
    offline["broker"]["port"] = free_port()          # nothing listens there
    cfg = write_config(tmp_path, offline, "offline.toml")
    spool = tmp_path / "state" / "spool.db"
    agent = start_agent(cfg, tmp_path / "agent.log")
    try:
        wait_until(lambda: len(spool_unsent_ids(spool)) >= 3, 30, "results spooled unsent")
        kill(agent)
        spooled = spool_ids(spool)
        assert spool_sent_ids(spool) == [], "no broker was reachable: nothing is sent"
        assert len(spooled) >= 3
        drain = write_config(tmp_path, probe_config(tmp_path, broker, {}), "drain.toml")
        agent = start_agent(drain, tmp_path / "agent2.log")
        wait_until(lambda: spool_ids(spool) == [], 90, "every spooled result receipted")
        stored = stored_ids(influx)
        assert {i: stored[i] for i in spooled} == {i: 1 for i in spooled}
        assert sum(stored.values()) == len(stored) == len(spooled), (stored, spooled)
    finally:
        kill(agent)


def test_same_method_and_target_twice_points_equal_results(
        tmp_path: Path, broker: Service, influxd: Service, influx: Any, target: Listener,
        collectors: list[Collector]) -> None:
    collectors.append(Collector(collector_config(tmp_path / "collector", broker.port,
                                                 influxd.port)))
    # A quick and a "full" check of the same target, both unjittered: they start at the
    # same instant every time (same started_at to the millisecond, often).
    tests = {"quick": tcp_test(target.port, every_s=2),
             "full": tcp_test(target.port, every_s=2, count=3, interval_s=0.05)}
    cfg = write_config(tmp_path, probe_config(tmp_path, broker, tests))
    spool = tmp_path / "state" / "spool.db"
    agent = start_agent(cfg, tmp_path / "agent.log")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # ~30 s of measuring: the scenario itself
            assert agent.poll() is None
            time.sleep(0.5)
        assert kill(agent, signal.SIGTERM) == 0
        # The same spool, no tests: delivers what SIGTERM left (an aborted result, say).
        drain_cfg = write_config(tmp_path, probe_config(tmp_path, broker, {}), "drain.toml")
        agent = start_agent(drain_cfg, tmp_path / "agent-drain.log")
        wait_until(lambda: spool_ids(spool) == [], 90, "every result receipted")
        state = json.loads((tmp_path / "state" / "agent-state.json").read_text())
        assert state["status"]["spool_lost"] == 0
        from agent.spool import Spool
        with Spool(spool, readonly=True) as sp:
            produced = sp.stats().spooled
        assert produced >= 20, produced  # 2 tests every 2 s for 30 s
        stored = stored_ids(influx)
        assert sum(stored.values()) == len(stored) == produced, (produced, stored)
    finally:
        kill(agent)


def test_agent_without_receipts_works_with_the_receipting_collector(
        tmp_path: Path, broker: Service, influxd: Service, influx: Any, target: Listener,
        collectors: list[Collector]) -> None:
    collectors.append(Collector(collector_config(tmp_path / "collector", broker.port,
                                                 influxd.port)))
    receipts = Subscriber(broker.host, broker.port, f"netmon/v1/probes/{PROBE}/receipts")
    cfg = write_config(tmp_path, probe_config(tmp_path, broker, {"t": tcp_test(target.port)},
                                              receipts=False))
    spool = tmp_path / "state" / "spool.db"
    agent = start_agent(cfg, tmp_path / "agent.log")
    try:
        wait_until(lambda: len(stored_ids(influx)) >= 3, 60, "results stored")
        receipts.wait(lambda: len(receipts.messages) >= 1, 30, "the collector's receipts")
        assert spool_sent_ids(spool) == []  # deleted on PUBACK, nothing waits
        assert agent.poll() is None
        # Receipts were published for it, and it took none (it does not subscribe). The
        # state file is rewritten every heartbeat_s, not per result: wait for one showing
        # an acknowledged result.
        def state() -> dict[str, Any]:
            return fresh_state(tmp_path / "state" / "agent-state.json") or \
                {"broker": {"acked": 0}}
        wait_until(lambda: state()["broker"]["acked"] >= 1, 60,
                   "a state file with an acknowledged result")
        state_now = state()
        assert state_now["broker"]["receipts"] == 0
        assert state_now["status"]["awaiting_receipt"] is None
    finally:
        kill(agent)
        receipts.close()


def _in_file(path: Path, rid: str) -> bool:
    """Whether a result id's bytes are anywhere in the spool file or its WAL."""
    raw = b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    return rid.encode() in raw


def test_write_behind_receipted_results_never_reach_the_spool_file(
        tmp_path: Path, broker: Service, influxd: Service, influx: Any, target: Listener,
        collectors: list[Collector]) -> None:
    """Issue 20: with the collector receipting, a result never touches the SD card. The
    write delay is 10 minutes, so "within the delay" holds on any machine load."""
    collectors.append(Collector(collector_config(tmp_path / "collector", broker.port,
                                                 influxd.port)))
    cfg = write_config(tmp_path, probe_config(
        tmp_path, broker, {"t": tcp_test(target.port)}, write_delay_s=600,
        receipt_timeout_s=900))
    spool = tmp_path / "state" / "spool.db"
    state_path = tmp_path / "state" / "agent-state.json"
    agent = start_agent(cfg, tmp_path / "agent.log")

    def state() -> dict[str, Any]:
        return fresh_state(state_path)
    try:
        wait_until(lambda: (state().get("broker") or {}).get("receipted", 0) >= 10, 90,
                   "10 results receipted (state file)")
        now = state()
        # Receipts deleted them in memory: only the last few wait there.
        assert now["spool_memory"]["held"] <= now["results"]["made"] - 10
        stored = set(stored_ids(influx))
        assert len(stored) >= 10
        assert spool_ids(spool) == []
        assert not [i for i in stored if _in_file(spool, i)], "a result reached the file"
        assert agent.poll() is None
        assert kill(agent, signal.SIGTERM) == 0
        # A clean stop commits what is still unreceipted (sent) and the counters.
        left = spool_ids(spool)
        assert set(left) <= set(spool_sent_ids(spool)) | set(spool_unsent_ids(spool))
        receipted = stored - set(left)
        assert len(receipted) >= 10
        assert not [i for i in receipted if _in_file(spool, i)]
        from agent.spool import Spool
        with Spool(spool, readonly=True) as sp:
            stats = sp.stats()
        final = state()
        assert stats.spooled == final["results"]["made"]
        assert stats.receipted == final["broker"]["receipted"] >= len(receipted)
        assert stats.depth == len(left)
        assert not Path(f"{spool}.open").exists(), "a clean stop leaves no unclean marker"
    finally:
        kill(agent)
