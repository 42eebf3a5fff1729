"""Exactly once under crashes (issue 14), with real processes: mosquitto with the deployed
persistence settings, influxd, ``netmon-collector run`` as a subprocess, killed with
SIGKILL or stopped while results flow.

The probes here are :class:`ReceiptProbe`, a test publisher that follows the agent's
documented protocol (docs/protocol.md, "Receipts"): it keeps every result until a
receipt names it and publishes it again when no receipt came within ``resend_after_s``.
(The agent's own implementation, agent/spool.py + publisher.py, was being built at the
same time as these tests; the collector side is what these tests hold to account.)

Each test asserts exact counts: every result id made is in InfluxDB, as exactly one point.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import services
from tests.helpers import need
from tests.helpers.chaos import DB, Stack


@pytest.fixture
def stack_factory(tmp_path: Path) -> Iterator[type[Stack]]:
    need("mosquitto")
    need("influxd")
    made: list[Stack] = []

    class _Stack(Stack):
        def __init__(self, resend_after_s: float) -> None:  # type: ignore[override]
            super().__init__(tmp_path, resend_after_s)
            made.append(self)

    yield _Stack  # type: ignore[misc]
    for s in made:
        s.close()


def test_broker_sigkill_with_collector_stopped(stack_factory: type[Stack]) -> None:
    """The issue's loss: results the broker acknowledged after its last save, killed -9
    while the collector was not draining. With receipts, each comes back."""
    s = stack_factory(resend_after_s=10.0)  # type: ignore[call-arg]
    for p in s.probes:
        p.hold.set()
    s.produce(5, rate=40)
    s.collector.stop()                      # the collector is stopped ...
    saves = s.saves()
    s.produce(2, rate=40)
    deadline = time.monotonic() + 60        # ... the broker saves what it has ...
    while s.saves() == saves and time.monotonic() < deadline:
        s.produce(0.5, rate=40)
    assert s.saves() > saves, "mosquitto never saved its store"
    s.produce(2, rate=40)                   # ... takes 2 s more, and is killed
    s.broker.kill()
    s.restart_broker()
    s.collector.start()
    # Without resends, the collector drains what the broker kept; what stays without a
    # receipt was lost by the crash (else this test proves nothing) ...
    lost = s.stable_unreceipted()
    print(f"broker crash lost {lost} acknowledged results of {s.made}")
    assert lost > 0
    assert sum(p.resent for p in s.probes) == 0
    for p in s.probes:                      # ... and comes back from the probes
        p.hold.clear()
    s.settle()
    s.assert_exactly_once()
    assert sum(p.resent for p in s.probes) >= lost


def test_collector_sigkill_twice_under_load(stack_factory: type[Stack]) -> None:
    s = stack_factory(resend_after_s=30.0)  # type: ignore[call-arg]
    for _ in range(2):
        s.produce(6, rate=60)
        s.collector.kill()
        s.produce(2, rate=60)
        s.collector.start()
    s.produce(5, rate=60)
    s.settle()
    s.assert_exactly_once()


def test_influxd_stopped_60s_under_load(stack_factory: type[Stack]) -> None:
    s = stack_factory(resend_after_s=20.0)  # type: ignore[call-arg]
    s.produce(5, rate=30)
    port = s.influxd.port
    s.influxd.stop()
    before = set().union(*(p.made for p in s.probes))
    s.produce(60, rate=30)                  # 60 s of results while InfluxDB is down
    during = set().union(*(p.made for p in s.probes)) - before
    # a receipt only ever follows a write: nothing made during the outage has one
    assert not during & set().union(*(p.receipted for p in s.probes))
    s.influxd = services.start_influxd(s.influx_dir, port)
    s.produce(5, rate=30)
    s.settle()
    s.assert_exactly_once()


def test_broker_sigkill_with_the_real_agent(stack_factory: type[Stack], tmp_path: Path
                                            ) -> None:
    """The same crash with ``netmon-agent run`` (agent/spool.py + publisher.py, receipts
    on) measuring a loopback TCP target: every result it made before the crash ends up in
    InfluxDB exactly once and leaves its spool."""
    from collections import Counter

    from tests.helpers.agent import (
        Listener,
        agent_config,
        kill,
        spool_ids,
        start_agent,
        tcp_test,
    )
    from tests.helpers.agent import write_config as agent_write_config

    s = stack_factory(resend_after_s=3600.0)  # type: ignore[call-arg]
    for p in s.probes:          # the test probes stay idle here
        p.hold.set()
    target = Listener()
    probe = "cam-xuyen-01"      # in the helpers' site registry
    tests = {f"t{i}": tcp_test(target.port, every_s=1) for i in range(8)}
    acfg = agent_write_config(tmp_path, agent_config(
        tmp_path, s.broker, tests, probe_id=probe,
        links={"fibre": {"access": "fixed", "isp": "VNPT"}},
        spool={"receipt_timeout_s": 10}))
    spool = tmp_path / "state" / "spool.db"
    agent = start_agent(acfg, tmp_path / "agent.log")

    def stored() -> Counter[str]:
        res = s.influx.query(f"SELECT result_id FROM results WHERE probe = '{probe}'", db=DB)
        series = res["results"][0].get("series") or []  # type: ignore[index, union-attr]
        return Counter(v[1] for ser in series for v in ser["values"])

    try:
        deadline = time.monotonic() + 60
        while sum(stored().values()) < 10:      # the agent's results flow end to end
            assert time.monotonic() < deadline, "no results from the agent"
            time.sleep(0.5)
        s.collector.stop()
        saves = s.saves()
        deadline = time.monotonic() + 60
        while s.saves() == saves:
            assert time.monotonic() < deadline, "mosquitto never saved its store"
            time.sleep(0.2)
        time.sleep(2)                           # 2 s of results after the last save
        s.broker.kill()
        # The collector is stopped: nothing is receipted, so every result made so far is
        # stored or in the spool (the agent deletes only on a receipt).
        made = set(stored()) | set(spool_ids(spool))
        s.restart_broker()
        s.collector.start()
        deadline = time.monotonic() + 240
        while set(spool_ids(spool)) & made or not made <= set(stored()):
            assert time.monotonic() < deadline, (
                f"{len(set(spool_ids(spool)) & made)} of {len(made)} results still in "
                f"the spool, {len(made - set(stored()))} not stored")
            time.sleep(0.5)
        counts = stored()
        assert {i: counts[i] for i in made} == {i: 1 for i in made}
        assert max(counts.values()) == 1
        print(f"real agent: {len(made)} results made before the broker crash, each stored "
              "once")
    finally:
        kill(agent)
        target.close()
