"""End to end: a real ``netmon-agent run`` process, a real mosquitto with per-probe
accounts and the fleet ACL, and the NOC pushing signed plans.

The agent measures TCP connect time to one of two local listeners; which listener the
results name shows which plan is running.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from collector.config import MqttSettings
from collector.fleet.noc_client import NocClient
from collector.fleet.push import push_configs
from devstack import services
from netmon.contract import Topics, parse_result, parse_status
from netmon.signing import sign
from tests.helpers.agent import AgentProcess, Listener
from tests.helpers.fleet import Client, make_keys, start_acl_broker, tcp_plan

PROBE = "ht-kyanh-01"
USERS = {"noc": "noc-pw", "collector": "coll-pw", PROBE: "probe-pw"}
T = Topics()


class Fleet:
    """Everything one test needs: broker, keys, listeners, agent, observers."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.priv, self.pub, self.key = make_keys(tmp / "noc")
        self.a, self.b = Listener(), Listener()
        self.broker = start_acl_broker(tmp / "broker", USERS)
        self.port = self.broker.port
        pw = tmp / "probe.pw"
        pw.write_text(USERS[PROBE])
        pw.chmod(0o600)
        self.state = tmp / "state"
        self.config = tmp / "agent.toml"
        self.config.write_text(f"""
probe_id = "{PROBE}"
heartbeat_s = 60
state_dir = "{self.state}"

[broker]
host = "127.0.0.1"
port = {self.port}
tls = false
password_file = "{pw}"
reconnect_min_s = 0.2
reconnect_max_s = 1.0

[spool]
path = "{self.state}/spool.db"
# No collector here sends receipts: results leave the spool on PUBACK, so the spool's
# depth counts what waits for the broker (what the restart test watches).
receipts = false

[links.fibre]
access = "fixed"
isp = "VNPT"

[tests.rtt-a]
method = "tcp"
target = "{self.a.target}"
every_s = 1
jitter_s = 0
count = 1
timeout_s = 5

[remote_config]
public_keys = ["{self.pub}"]
allowed_targets = ["127.0.0.1"]
state_file = "remote-config.json"
""")
        self.agent = AgentProcess(self.config, tmp / "agent.log")
        self.watch = self._observer()

    def _observer(self) -> Client:
        # A persistent session: results the agent delivers while the observer reconnects
        # after a broker restart are queued for it, not lost to a race.
        c = Client(self.broker, "collector", USERS["collector"], client_id="fleet-observer",
                   persistent=True, port=int(str(self.broker.extra["service_port"])))
        c.subscribe(T.all_results())
        c.subscribe(T.all_status())
        return c

    def restart_broker(self) -> None:
        self.watch.close()
        self.broker = start_acl_broker(self.tmp / "broker", USERS, port=self.port,
                                       service_port=int(str(self.broker.extra["service_port"])))
        self.watch = self._observer()

    def spool_depth(self) -> int:
        out = subprocess.run([sys.executable, "-m", "agent.cli", "status", "--config",
                              str(self.config), "--json"], capture_output=True, check=True)
        return int(json.loads(out.stdout)["spool_depth"])

    def results(self) -> list[Any]:
        return [parse_result(p) for p in self.watch.payloads(T.results(PROBE))]

    def statuses(self) -> list[Any]:
        return [parse_status(p) for p in self.watch.payloads(T.status(PROBE))]

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 20) -> None:
        if not self.watch.wait(check, timeout):
            raise AssertionError(f"timed out waiting for {what}\n--- agent log ---\n"
                                 f"{self.agent.tail()}")

    def wait_status(self, check: Callable[[Any], bool], what: str) -> Any:
        self.wait(what, lambda: any(check(s) for s in self.statuses() if s.state == "online"))
        return [s for s in self.statuses() if s.state == "online" and check(s)][-1]

    def push(self, plan: dict[str, Any], version: int) -> None:
        settings = MqttSettings(host="127.0.0.1", port=self.port, tls=False, username="noc",
                                password_file=self.tmp / "noc.pw")
        (self.tmp / "noc.pw").write_text(USERS["noc"])
        with NocClient(settings) as noc:
            push_configs(noc, T, [PROBE], plan, self.key, version)

    def publish_raw(self, payload: bytes) -> None:
        noc = Client(self.broker, "noc", USERS["noc"])
        try:
            assert not noc.publish(T.config(PROBE), payload).is_failure
        finally:
            noc.close()

    def close(self) -> None:
        self.agent.stop()
        self.watch.close()
        self.broker.stop()
        self.a.close()
        self.b.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    try:
        services.require_binary("mosquitto")
        services.require_binary("mosquitto_passwd")
    except services.ServiceError as exc:
        pytest.skip(str(exc))
    f = Fleet(tmp_path)
    yield f
    f.close()


def _targets_since(f: Fleet, since: datetime) -> set[str]:
    return {r.target for r in f.results() if r.started_at >= since}


def test_pushed_config_applies_live_and_bad_ones_are_refused(fleet: Fleet) -> None:
    f = fleet
    f.agent.start()
    f.wait("a first result from the file plan",
           lambda: any(r.target == f.a.target for r in f.results()))
    assert f.statuses()[-1].config_version is None

    # 1. A signed plan changes the running agent's tests without a restart.
    f.push(tcp_plan(f.b.target, every_s=1, name="rtt-b"), 100)
    st = f.wait_status(lambda s: s.config_version == 100, "status with config_version 100")
    assert st.config_error is None
    pid = f.agent.proc.pid if f.agent.proc else None
    applied_at = st.at
    f.wait("results from the new plan", lambda: len(
        [r for r in f.results() if r.target == f.b.target and r.started_at > applied_at]) >= 2)
    assert _targets_since(f, applied_at) == {f.b.target}
    assert f.agent.proc is not None and f.agent.proc.pid == pid and f.agent.proc.poll() is None

    # 2. Each bad config is refused with its reason in status; v100 keeps running.
    _, _, other = make_keys(f.tmp / "thief")
    good = json.loads(sign(tcp_plan(f.a.target), probe_id=PROBE, version=200,
                           key=f.key).to_json())
    bad: dict[str, bytes] = {
        "unsigned": json.dumps({k: v for k, v in good.items() if k != "signature"}).encode(),
        "unknown_key": sign(tcp_plan(f.a.target), probe_id=PROBE, version=201,
                            key=other).to_json(),
        "bad_signature": json.dumps(good | {"version": 202}).encode(),
        "replay": sign(tcp_plan(f.a.target), probe_id=PROBE, version=99, key=f.key).to_json(),
        "malformed": b'{"schema": 1, "version": 300, "signature": "x", "plan": ',
        "target_not_allowed": sign(tcp_plan("192.0.2.10:443"), probe_id=PROBE, version=203,
                                   key=f.key).to_json(),
        "invalid_plan": sign({"tests": {"x": {"method": "tcp"}}}, probe_id=PROBE, version=204,
                             key=f.key).to_json(),
    }
    for reason, payload in bad.items():
        f.publish_raw(payload)
        st = f.wait_status(lambda s, r=reason: r in (s.config_error or ""),
                           f"status refusing the {reason} config")
        assert st.config_version == 100, reason
    since = f.statuses()[-1].at
    f.wait("results after the refusals", lambda: any(
        r.started_at > since for r in f.results()))
    assert _targets_since(f, since) == {f.b.target}
    assert json.loads((f.state / "remote-config.json").read_bytes())["version"] == 100


def test_restart_with_broker_down_runs_the_last_applied_config(fleet: Fleet) -> None:
    f = fleet
    f.agent.start()
    f.push(tcp_plan(f.b.target, every_s=1, name="rtt-b"), 7)
    st = f.wait_status(lambda s: s.config_version == 7, "config version 7 applied")
    # The spool drains oldest first: once a v7 result is delivered, no older one waits.
    f.wait("a result from v7", lambda: any(r.target == f.b.target and r.started_at > st.at
                                           for r in f.results()))

    # Reboot with the broker unreachable: stop the agent, then the broker.
    f.agent.stop()
    f.watch.close()
    f.broker.stop()
    agent_restart = time.time()
    f.agent.start()
    # The agent measures and spools while the broker is down.
    deadline = time.monotonic() + 30
    while f.spool_depth() < 2:
        assert time.monotonic() < deadline, f"nothing spooled offline\n{f.agent.tail()}"
        time.sleep(0.5)
    broker_back = time.time()
    f.restart_broker()

    def measured_offline() -> list[Any]:
        return [r for r in f.results()
                if agent_restart < r.started_at.timestamp() < broker_back]

    f.wait("results measured while the broker was down", lambda: len(measured_offline()) >= 2)
    assert {r.target for r in measured_offline()} == {f.b.target}
    st = f.wait_status(lambda s: s.config_version == 7, "status after reconnect")
    assert st.config_error is None  # the redelivered retained config is not a replay
    assert "running persisted remote config version 7" in f.agent.log.read_text()
