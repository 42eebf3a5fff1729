"""Office traffic seen at the router: REAL snmpd and REAL miniupnpd in a router namespace
(tests/helpers/router_lab.py), an office namespace downloading across the shaped WAN
while the probe, in the root namespace, measures or waits to measure."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import config
from agent.methods.base import LinkBinding, Method, MethodContext
from agent.methods.common import router as routerstats
from agent.methods.common import router_poll
from agent.methods.iperf3 import Iperf3Method
from agent.methods.speedtest import SpeedtestMethod
from agent.runtime import Runtime, interface_mbps
from devstack import measurement_server, netns
from netmon.contract import ResultMessage
from netmon.methods import Iperf3Options, SpeedtestOptions
from tests.helpers.agent import TestOnlyThroughputMethod, agent_config
from tests.helpers.router_lab import RouterLab

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterLab]:
    reason = netns.can_use_netns()
    if reason:
        pytest.skip(reason)
    office = RouterLab(tmp_path_factory.mktemp("router-lab"))
    yield office
    office.destroy()


@pytest.fixture(scope="module")
def sources(lab: RouterLab) -> dict[str, routerstats.RouterCounters]:
    found = {"snmp": lab.start_snmpd(), "upnp": lab.start_miniupnpd()}
    assert lab.snmpv3 is not None
    return found | {"snmpv3": lab.snmpv3}


@pytest.fixture
def quiet(lab: RouterLab) -> Iterator[RouterLab]:
    """No office traffic before or after the test."""
    lab.stop_flows()
    yield lab
    lab.stop_flows()


def line_mbps(cfg: routerstats.RouterCounters) -> float:
    return asyncio.run(router_poll.line_mbps(cfg)) or 0.0


def wait_line(cfg: routerstats.RouterCounters, busy: bool) -> None:
    """Until the router's counters show the office's download running (or stopped)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        mbps = line_mbps(cfg)
        if (mbps > 20) if busy else (mbps < 2):
            return
    raise AssertionError(f"the line never became {'busy' if busy else 'idle'}")


def measure(lab: RouterLab, router: routerstats.RouterCounters | None) -> ResultMessage:
    link = LinkBinding(name="fibre", access="fixed", isp="Lab", interface=lab.probe_if,
                       router=router)
    ctx = MethodContext(probe_id="lab-probe-01", agent_version="test", link=link)
    opts = Iperf3Options(target=f"{lab.server_ip}:5201", direction="download",
                         duration_s=6, omit_s=1, loaded_latency=False)
    [result] = asyncio.run(Iperf3Method().run(ctx, opts))
    assert result.ok, result.error
    return result


@pytest.mark.parametrize("source", ["snmp", "snmpv3", "upnp"])
def test_office_download_flags_the_test_from_router_counters(
        quiet: RouterLab, sources: dict[str, routerstats.RouterCounters], source: str) -> None:
    cfg = sources[source]
    lab = quiet
    # Idle line: the test's own bytes are subtracted, nothing is flagged.
    wait_line(cfg, busy=False)
    idle = measure(lab, cfg)
    assert "router_counters" in idle.flags and "cross_traffic" not in idle.flags, idle
    assert idle.metrics.download_mbps is not None
    assert idle.metrics.cross_traffic_mbps is not None
    assert idle.metrics.cross_traffic_mbps < 0.1 * idle.metrics.download_mbps
    # The office downloads across the same WAN: the router sees it, the test is flagged.
    lab.office_download()
    wait_line(cfg, busy=True)
    busy = measure(lab, cfg)
    assert "router_counters" in busy.flags and "cross_traffic" in busy.flags, busy
    assert busy.metrics.cross_traffic_mbps is not None and busy.metrics.cross_traffic_mbps > 10


def test_probe_counters_alone_miss_the_office_download(
        quiet: RouterLab, sources: dict[str, routerstats.RouterCounters]) -> None:
    # Why the router source exists: the same busy line, judged by the probe's interface.
    lab = quiet
    lab.office_download()
    wait_line(sources["snmp"], busy=True)
    result = measure(lab, None)
    assert "cross_traffic" not in result.flags and "router_counters" not in result.flags
    assert (asyncio.run(interface_mbps(lab.probe_if, 1.0)) or 0.0) < 5


def test_speedtest_flagged_from_router_counters(
        quiet: RouterLab, sources: dict[str, routerstats.RouterCounters], tmp_path: Path) -> None:
    # The speedtest method reads the line at the router as iperf3 and http do (8 s: snmpd
    # refreshes its counters every 3 s, and the figure needs two fresh readings).
    lab, cfg = quiet, sources["snmp"]
    nginx = measurement_server.start(tmp_path / "nginx", host="0.0.0.0", port=8080,
                                     netns=lab.server.name, sparse=True,
                                     speedtest_length_s=8)
    link = LinkBinding(name="fibre", access="fixed", isp="Lab", interface=lab.probe_if,
                       router=cfg)
    ctx = MethodContext(probe_id="lab-probe-01", agent_version="test", link=link)
    opts = SpeedtestOptions(target=f"http://{lab.server_ip}:8080/speedtest/upload.php",
                            direction="download", length_s=8, loaded_latency=False)
    try:
        wait_line(cfg, busy=False)
        [idle] = asyncio.run(SpeedtestMethod().run(ctx, opts))
        assert idle.ok, idle.error
        assert "router_counters" in idle.flags and "cross_traffic" not in idle.flags, idle
        lab.office_download()
        wait_line(cfg, busy=True)
        [busy] = asyncio.run(SpeedtestMethod().run(ctx, opts))
    finally:
        nginx.stop()
    assert busy.ok, busy.error
    assert "router_counters" in busy.flags and "cross_traffic" in busy.flags, busy
    assert busy.metrics.cross_traffic_mbps is not None and busy.metrics.cross_traffic_mbps > 10


@pytest.fixture
def test_only_throughput(register_method: Callable[[type[Method[Any]]], None]) -> None:
    register_method(TestOnlyThroughputMethod)
    TestOnlyThroughputMethod.RUNS.clear()


@pytest.mark.usefixtures("test_only_throughput")
@pytest.mark.parametrize("source", ["snmp", "upnp"])
def test_busy_line_deferred_by_router_counters(
        quiet: RouterLab, sources: dict[str, routerstats.RouterCounters], source: str,
        tmp_path: Path) -> None:
    lab = quiet
    router_table = sources[source].model_dump(mode="json", exclude_none=True,
                                              exclude={"community"})
    data = agent_config(
        tmp_path, None,
        tests={"speed": {"method": "test_only_throughput", "every_s": 3600, "jitter_s": 0,
                         "target": "speed", "defer_when_busy_mbps": 5, "defer_s": 1,
                         "defer_max": 2}})
    data["links"] = {"fibre": {"access": "fixed", "isp": "Lab", "interface": lab.probe_if,
                               "router": router_table}}
    cfg = config.load(None, data=data)
    lab.office_download()
    wait_line(sources[source], busy=True)

    async def main() -> tuple[Runtime, float]:
        runtime = Runtime(cfg, publish=False)
        task = asyncio.create_task(runtime.run())
        # The probe's own interface meanwhile: quiet (the office's traffic is not on it).
        own = await interface_mbps(lab.probe_if, 1.0) or 0.0
        deadline = time.monotonic() + 120  # two deferrals of 1 s, generously
        while not TestOnlyThroughputMethod.RUNS and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        runtime.request_stop()
        await task
        return runtime, own

    runtime, own = asyncio.run(main())
    assert own < 5
    # postponed twice (defer_max) on the router's figure, then run anyway
    assert runtime.scheduler.deferred == 2
    assert runtime.scheduler.jobs["speed@fibre"].runs == 1


def test_snmpv3_with_a_wrong_passphrase_reads_nothing_and_says_why(
        sources: dict[str, routerstats.RouterCounters], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    good = sources["snmpv3"]
    assert asyncio.run(router_poll.read(good)) is not None  # the user works as configured
    wrong = tmp_path / "wrong-auth.key"
    wrong.write_text("not-the-passphrase-0\n")
    wrong.chmod(0o600)
    bad = good.model_copy(update={"auth_key_file": wrong})
    with caplog.at_level("WARNING"):
        assert asyncio.run(router_poll.read(bad)) is None
    text = caplog.text
    assert "router counters (snmp) unavailable" in text and "snmp" in text
    assert "digest" in text.lower()  # pysnmp: "Wrong SNMP PDU digest"
    assert "not-the-passphrase-0" not in text


def test_a_failed_iperf3_test_stops_watching_the_router() -> None:
    """iperf3 failing inside its window (nothing listens on the target port) must not
    leave the router poller querying every 0.25 s for the agent's life. The router is a
    loopback UDP port nobody answers: the poller runs all the same."""
    from devstack import services

    router = routerstats.RouterCounters(source="snmp", host="127.0.0.1",
                                        port=services.free_port(), if_index=1, timeout_s=0.5)
    link = LinkBinding(name="fibre", access="fixed", isp="Lab", interface="lo", router=router)
    ctx = MethodContext(probe_id="lab-probe-01", agent_version="test", link=link)
    closed = services.free_port()

    async def main() -> tuple[ResultMessage, int]:
        [res] = await Iperf3Method().run(ctx, Iperf3Options(
            target=f"127.0.0.1:{closed}", duration_s=2, omit_s=0, loaded_latency=False,
            busy_retries=0))
        await asyncio.sleep(0.6)  # a poller left behind would be mid-query by now
        # (pysnmp's own dispatcher task stays with the engine cached for the loop.)
        left = [t for t in asyncio.all_tasks()
                if "Poller" in getattr(t.get_coro(), "__qualname__", "")]
        return res, len(left)

    res, left = asyncio.run(main())
    assert not res.ok
    assert left == 0
