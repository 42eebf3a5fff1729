"""The agent end to end against a real mosquitto: outages, crashes, the last will,
graceful shutdown, TLS with a test CA and passwords, ``once`` and ``status``.

Measurements are real ``tcp`` connects to a loopback port the test opens."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from pathlib import Path

import pytest

from agent import config
from agent.runtime import Runtime
from agent.spool import Spool
from devstack.services import Service
from netmon.contract import parse_result, parse_status
from netmon.plan import TestPlan
from tests.helpers.agent import (
    REPO,
    Listener,
    Subscriber,
    agent_config,
    cli,
    kill,
    spool_sent_ids,
    spool_unsent_ids,
    start_agent,
    start_broker,
    start_tls_mosquitto,
    tcp_test,
    wait_until,
    write_config,
)

RESULTS = "netmon/v1/probes/test-probe-01/results"
STATUS = "netmon/v1/probes/test-probe-01/status"


def test_broker_down_then_back_every_result_once_oldest_first(
        tmp_path: Path, broker: Service, target: Listener) -> None:
    cfg = write_config(tmp_path, agent_config(tmp_path, broker, {"t": tcp_test(target.port)}))
    spool_path = tmp_path / "state" / "spool.db"
    # A persistent session: what the broker queues for it survives the broker restart.
    sub = Subscriber(broker.host, broker.port, RESULTS, client_id="collector-test",
                     persistent=True)
    agent = start_agent(cfg, tmp_path / "agent.log")
    restarted: Service | None = None
    try:
        sub.wait(lambda: len(sub.results()) >= 2, 20, "results while the broker is up")
        broker.stop()
        wait_until(lambda: len(spool_unsent_ids(spool_path)) >= 4, 20,
                   "results spooled in outage")
        spooled_in_outage = spool_unsent_ids(spool_path)
        restarted = start_broker(broker.workdir, port=broker.port)
        # No collector here: "delivered" is the broker's PUBACK (the row is marked sent
        # and waits for a receipt that nobody sends).
        wait_until(lambda: not set(spooled_in_outage) & set(spool_unsent_ids(spool_path)),
                   30, "the outage's results drained")
        assert kill(agent, signal.SIGTERM) == 0
        assert set(spooled_in_outage) <= set(spool_sent_ids(spool_path)), \
            "acknowledged results must stay spooled until a receipt names them"
        with Spool(spool_path) as spool:
            left, total = spool_unsent_ids(spool_path), spool.stats().spooled
        sub.wait(lambda: len(sub.results()) >= total - len(left), 20, "all acked results")
        got = [r["id"] for r in sub.results()]
        assert len(got) == len(set(got)), "a result was delivered twice"
        assert len(got) == total - len(left) and not set(got) & set(left)
        assert set(spooled_in_outage) <= set(got)
        started = [r["started_at"] for r in sub.results()]
        assert started == sorted(started), "not delivered oldest first"
    finally:
        kill(agent)
        sub.close()
        if restarted:
            restarted.stop()


def test_sigkill_after_spooling_before_ack_delivered_after_restart(
        tmp_path: Path, broker: Service, target: Listener) -> None:
    # Write-behind at 1 s: a result with no PUBACK (nor receipt) is in the file after 1 s.
    cfg = write_config(tmp_path, agent_config(tmp_path, broker, {"t": tcp_test(target.port)},
                                              spool={"write_delay_s": 1.0}))
    spool_path = tmp_path / "state" / "spool.db"
    sub = Subscriber(broker.host, broker.port, RESULTS, client_id="collector-test",
                     persistent=True)
    agent = start_agent(cfg, tmp_path / "agent.log")
    try:
        sub.wait(lambda: len(sub.results()) >= 1, 20, "a first result")
        # Freeze the broker: results are published but no PUBACK can come back.
        os.kill(broker.proc.pid, signal.SIGSTOP)
        wait_until(lambda: len(spool_unsent_ids(spool_path)) >= 3, 20, "unacknowledged results")
        kill(agent)  # SIGKILL
        pending = spool_unsent_ids(spool_path)
        assert len(pending) == len(set(pending)) >= 3
        os.kill(broker.proc.pid, signal.SIGCONT)
        agent = start_agent(cfg, tmp_path / "agent2.log")
        wait_until(lambda: not set(pending) & set(spool_unsent_ids(spool_path)), 30,
                   "the pending results acknowledged after the restart")
        sub.wait(lambda: set(pending) <= {r["id"] for r in sub.results()}, 20,
                 "pending results at the subscriber")
        # At least once on the wire (the frozen broker may still have routed what it read
        # before the crash); a repeat is the same message, so the collector's idempotent
        # write on the result id stores it once.
        by_id: dict[str, set[str]] = {}
        for r in sub.results():
            by_id.setdefault(r["id"], set()).add(json.dumps(r, sort_keys=True))
        assert all(len(v) == 1 for v in by_id.values())
    finally:
        with_cont = broker.proc.poll() is None
        if with_cont:
            os.kill(broker.proc.pid, signal.SIGCONT)
        kill(agent)
        sub.close()


def test_last_will_reads_offline_after_kill(tmp_path: Path, broker: Service,
                                            target: Listener) -> None:
    cfg = write_config(tmp_path, agent_config(tmp_path, broker,
                                              {"t": tcp_test(target.port, every_s=60)}))
    sub = Subscriber(broker.host, broker.port, STATUS)
    agent = start_agent(cfg, tmp_path / "agent.log")
    try:
        sub.wait(lambda: any(json.loads(m.payload)["state"] == "online"
                             for m in sub.statuses()), 20, "online status")
        online = parse_status([m for m in sub.statuses()][-1].payload, "test-probe-01")
        assert online.uptime_s is not None and online.agent_version
        kill(agent)
        sub.wait(lambda: json.loads(sub.statuses()[-1].payload)["state"] == "offline", 20,
                 "the last will")
        late = Subscriber(broker.host, broker.port, STATUS)  # joins after: retained copy
        late.wait(lambda: bool(late.statuses()), 10, "retained status")
        retained = late.statuses()[-1]
        will = parse_status(retained.payload)
        assert retained.retain and will.state == "offline"
        # Sent by the broker long after the connect it was set at: it must not claim a time,
        # or the collector would file "offline" before the heartbeats that followed.
        assert will.at is None and will.uptime_s is None
        late.close()
    finally:
        kill(agent)
        sub.close()


def test_sigterm_aborts_test_keeps_spool_publishes_offline(
        tmp_path: Path, broker: Service, target: Listener) -> None:
    # One long test (50 connects 0.2 s apart = 10 s) that SIGTERM interrupts.
    data = agent_config(tmp_path, broker, {"long": tcp_test(target.port, every_s=60, count=50,
                                                            interval_s=0.2)})
    cfg = write_config(tmp_path, data)
    sub = Subscriber(broker.host, broker.port, "netmon/v1/probes/#")
    agent = start_agent(cfg, tmp_path / "agent.log")
    try:
        sub.wait(lambda: any(json.loads(m.payload)["state"] == "online"
                             for m in sub.statuses()), 20, "online status")
        time.sleep(1.0)  # the 10 s test is running now
        t0 = time.monotonic()
        assert kill(agent, signal.SIGTERM, timeout=10) == 0
        assert time.monotonic() - t0 < 5, "SIGTERM must not wait for the test to finish"
        offline = parse_status(sub.statuses()[-1].payload)
        assert offline.state == "offline" and offline.uptime_s is not None
        # The interruption is recorded as a result: still spooled, or already delivered.
        with Spool(tmp_path / "state" / "spool.db") as spool:
            kept = [parse_result(e.payload) for e in spool.peek()]
        results = kept + [parse_result(json.dumps(r).encode()) for r in sub.results()]
        assert len(results) == 1
        assert results[0].error is not None and results[0].error.code == "aborted"
    finally:
        kill(agent)
        sub.close()


def test_tls_wrong_password_is_a_clear_error_and_retried(
        tmp_path: Path, target: Listener, caplog: pytest.LogCaptureFixture) -> None:
    broker = start_tls_mosquitto(tmp_path / "tls-broker",
                                 {"test-probe-01": "right-secret", "reader": "reader-pw"})
    try:
        pw = tmp_path / "mqtt-password"
        pw.write_text("wrong-secret\n")
        pw.chmod(0o600)
        data = agent_config(tmp_path, broker, {"t": tcp_test(target.port)},
                            broker={"tls": True, "ca_file": str(broker.extra["ca"]),
                                    "password_file": str(pw), "username": "test-probe-01"})
        cfg = config.load(None, data=data)
        sub = Subscriber(broker.host, broker.port, RESULTS, ca_file=str(broker.extra["ca"]),
                         username="reader", password="reader-pw")

        async def main() -> None:
            runtime = Runtime(cfg)
            task = asyncio.create_task(runtime.run())
            pub = runtime.publisher
            assert pub is not None
            for _ in range(200):
                await asyncio.sleep(0.05)
                if pub.info.attempts >= 3:
                    break
            assert not pub.connected
            assert pub.info.last_error is not None
            assert "refused the connection: Not authorized" in pub.info.last_error
            assert "password_file" in pub.info.last_error
            assert pub.info.attempts >= 3, "a refused login must be retried"
            assert runtime.spool.depth() >= 1  # measuring and spooling go on meanwhile
            pw.write_text("right-secret\n")  # the operator fixes the file: no restart
            assert await pub.wait_connected(15)
            assert await pub.drain(15)
            runtime.request_stop()
            await task

        with caplog.at_level(logging.INFO):
            asyncio.run(main())
        sub.wait(lambda: len(sub.results()) >= 1, 10, "results over TLS")
        assert "wrong-secret" not in caplog.text and "right-secret" not in caplog.text
        sub.close()
    finally:
        broker.stop()


def test_tls_unknown_ca_is_a_clear_error(tmp_path: Path, target: Listener) -> None:
    broker = start_tls_mosquitto(tmp_path / "tls-broker", {"test-probe-01": "pw"})
    other_ca = tmp_path / "other"
    from tests.helpers.agent import make_tls
    ca = make_tls(other_ca)["ca"]
    try:
        data = agent_config(tmp_path, broker, {}, broker={"tls": True, "ca_file": str(ca)})
        cfg = config.load(None, data=data)

        async def main() -> str | None:
            runtime = Runtime(cfg)
            task = asyncio.create_task(runtime.run())
            assert runtime.publisher is not None
            await asyncio.sleep(1.0)
            runtime.request_stop()
            await task
            return runtime.publisher.info.last_error

        error = asyncio.run(main())
        assert error is not None and "TLS handshake" in error and "CERTIFICATE_VERIFY" in error
    finally:
        broker.stop()


def test_once_json_prints_one_result_per_line(tmp_path: Path, broker: Service,
                                               target: Listener) -> None:
    data = agent_config(tmp_path, broker, {"a": tcp_test(target.port),
                                           "b": tcp_test(target.port, count=2)},
                        links={"lo2": {"access": "mobile", "isp": "Viettel"}})
    cfg = write_config(tmp_path, data)
    res = cli("once", "--config", str(cfg), "--json", "--no-publish",
              env={"NETMON_CLOCK_ASSUME": "unsynced"})
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 4  # 2 tests x 2 links
    results = [parse_result(line.encode(), "test-probe-01") for line in lines]
    assert {(r.link, r.method) for r in results} == {("lo", "tcp"), ("lo2", "tcp")}
    assert all("clock_unsynced" in r.flags for r in results)
    assert not (tmp_path / "state" / "spool.db").exists()  # --no-publish spools nothing

    sub = Subscriber(broker.host, broker.port, RESULTS)
    res = cli("once", "--config", str(cfg), "--json", "--test", "b")
    assert res.returncode == 0, res.stderr
    ids = {json.loads(line)["id"] for line in res.stdout.splitlines()}
    assert len(ids) == 2
    sub.wait(lambda: {r["id"] for r in sub.results()} == ids, 10, "once's results")
    # Acknowledged by the broker and kept for the collector's receipt (the service, which
    # subscribes to receipts, deletes them; ``once`` does not wait for them).
    assert spool_unsent_ids(tmp_path / "state" / "spool.db") == []
    assert set(spool_sent_ids(tmp_path / "state" / "spool.db")) == ids
    sub.close()

    res = cli("once", "--config", str(cfg), "--test", "nope")
    assert res.returncode == 2 and "unknown test" in res.stderr


def test_status_cli_reports_spool_and_broker(tmp_path: Path, broker: Service,
                                             target: Listener) -> None:
    # Write-behind at 1 s: unreceipted results are in the file, marked sent, after 1 s.
    data = agent_config(tmp_path, broker, {"t": tcp_test(target.port)},
                        spool={"write_delay_s": 1.0})
    cfg = write_config(tmp_path, data)
    agent = start_agent(cfg, tmp_path / "agent.log")
    try:
        state = tmp_path / "state" / "agent-state.json"

        def ready() -> bool:
            try:
                data = json.loads(state.read_text())
            except (OSError, ValueError):
                return False
            return bool(data["broker"]["connected"] and data["status"]["last_result_at"])

        wait_until(ready, 30, "state file: connected, a result made")
        res = cli("status", "--config", str(cfg), "--json")
        assert res.returncode == 0, res.stderr
        status = json.loads(res.stdout)
        assert status["agent_running"] is True
        assert status["broker"]["connected"] is True
        assert "lo" in status["last_results"]
        assert status["spool_depth"] >= 0 and status["spool_evicted"] == 0
        # No collector: every acknowledged result waits for its receipt, none is lost.
        assert status["receipts"] is True and status["awaiting_receipt"] >= 1
        assert status["spool_lost"] == 0 and status["spool_error"] is None
        assert status["expected_runs_per_day"] == {"lo": 86400.0}  # every_s = 1
        res = cli("status", "--config", str(cfg))
        assert "agent running" in res.stdout and "connected" in res.stdout
        assert "awaiting the collector's receipt" in res.stdout
        assert "0 lost since the agent started" in res.stdout
    finally:
        kill(agent, signal.SIGTERM)
    res = cli("status", "--config", str(cfg), "--json")
    assert json.loads(res.stdout)["agent_running"] is False


def test_apply_plan_at_runtime_and_status_fields(tmp_path: Path, broker: Service,
                                                 target: Listener) -> None:
    cfg = config.load(None, data=agent_config(tmp_path, broker, {"t": tcp_test(target.port)}))
    sub = Subscriber(broker.host, broker.port, "netmon/v1/probes/#")

    async def main() -> None:
        runtime = Runtime(cfg)
        task = asyncio.create_task(runtime.run())
        assert runtime.publisher is not None and await runtime.publisher.wait_connected(10)
        bad = TestPlan.model_validate(
            {"tests": {"x": tcp_test(target.port, links=["lte"])}})
        assert runtime.apply_plan(bad, 7) == ["tests.x.links: unknown link 'lte' (known: lo)"]
        assert set(runtime.scheduler.jobs) == {"t@lo"}  # unchanged
        good = TestPlan.model_validate(
            {"tests": {"y": tcp_test(target.port, every_s=60)}})
        assert runtime.apply_plan(good, 8) == []
        assert set(runtime.scheduler.jobs) == {"y@lo"}
        runtime.set_config_error("version 9 rejected: bad_signature")
        await asyncio.wait_for(runtime.publisher.publish_status("online"), 10)
        runtime.request_stop()
        await asyncio.wait_for(task, 20)

    asyncio.run(main())
    sub.wait(lambda: any(json.loads(m.payload).get("config_version") == 8
                         for m in sub.statuses()), 10, "status with config_version")
    status = parse_status(next(m for m in sub.statuses()
                           if json.loads(m.payload).get("config_version") == 8).payload)
    assert status.config_error == "version 9 rejected: bad_signature"
    assert status.links[0].name == "lo" and status.clock_synced is not None
    sub.close()


def test_systemd_notify_ready_watchdog_stopping(tmp_path: Path, broker: Service,
                                                target: Listener) -> None:
    import socket as socketlib
    sock_path = tmp_path / "notify.sock"
    server = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_DGRAM)
    server.bind(str(sock_path))
    server.settimeout(20)
    cfg = write_config(tmp_path, agent_config(tmp_path, broker,
                                              {"t": tcp_test(target.port, every_s=60)}))
    agent = start_agent(cfg, tmp_path / "agent.log",
                        env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"})
    try:
        got: list[str] = []
        while got.count("WATCHDOG=1") < 3:
            got.append(server.recv(4096).decode())
        assert "READY=1" in got
        kill(agent, signal.SIGTERM)
        rest = []
        server.settimeout(1)
        with contextlib.suppress(TimeoutError):
            while True:
                rest.append(server.recv(4096).decode())
        assert "STOPPING=1" in rest
    finally:
        kill(agent)
        server.close()


def test_unit_file_is_hardened() -> None:
    unit = (REPO / "deploy" / "systemd" / "netmon-agent.service").read_text()
    settings = {line.split("=", 1)[0]: line.split("=", 1)[1]
                for line in unit.splitlines() if "=" in line and not line.startswith("#")}
    assert settings["Type"] == "notify" and settings["Restart"] == "always"
    assert settings["WatchdogSec"] and settings["DynamicUser"] == "yes"
    assert settings["CapabilityBoundingSet"] == "CAP_NET_RAW"
    assert settings["ProtectSystem"] == "strict" and settings["StateDirectory"]
    assert "run --config" in settings["ExecStart"]
