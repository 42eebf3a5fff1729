"""Real results and a real status message written by the light wire path (netmon/wire.py),
as the methods and the runtime make them, are the contract's: the same bytes as the
pydantic models write for the same message, read back by the models into equal messages
(issue 20: the run-time process builds its messages this way).

The results come from the methods themselves: every declared method's successful run
against real servers (on loopback, and the measurement server's nginx and iperf3 across a
shaped link into a namespace for the throughput methods), and every method's failed run
(nothing listening) through the methods' own error path."""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import config
from agent.methods.registry import get
from agent.runtime import Runtime
from devstack import netns
from devstack.services import Service
from netmon import wire
from netmon.contract import ErrorInfo, Metrics, ResultMessage, StatusMessage
from netmon.methods import DECLARATIONS
from tests.helpers.agent import agent_config, tcp_test, write_config
from tests.helpers.methods import DnsResponder, ctx_for, dns_responder, make_site

#: Where each method's successful run is made: on loopback, or across a shaped link.
ON_LOOPBACK = ("tcp", "icmp", "dns", "http_latency", "reachability", "iperf3", "ipv6")
ACROSS_A_LINK = ("http", "speedtest", "responsiveness", "iperf3", "http_latency")


def test_every_declared_method_has_its_successful_results_compared() -> None:
    # A new method must be added to one of the two runs below.
    assert set(ON_LOOPBACK) | set(ACROSS_A_LINK) == set(DECLARATIONS)


def model(r: wire.Result) -> ResultMessage:
    """The same result built by the pydantic models from its parts."""
    return ResultMessage(
        probe_id=r.probe_id, link=r.link, access=r.access, isp=r.isp, method=r.method,
        target=r.target, started_at=r.started_at, duration_s=r.duration_s,
        agent_version=r.agent_version, metrics=Metrics(**r.metrics.values()),
        error=ErrorInfo(code=r.error.code, message=r.error.message) if r.error else None,
        flags=r.flags, id=r.id)


def runs(method: str, link: netns.ShapedLink | None = None,
         **options: Any) -> list[wire.Result]:
    cls = get(method)
    return asyncio.run(cls().run(ctx_for(link), cls.decl.options(**options)))


@pytest.fixture
def dns_ok() -> Iterator[DnsResponder]:
    yield from dns_responder(0)


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield server.getsockname()[1]


@pytest.fixture
def http_site() -> Iterator[int]:
    """A real HTTP server (the standard library's) on a loopback port."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: Options under which each declared method fails fast against a closed loopback port.
def _failing(method: str, port: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}"
    return {
        "iperf3": {"target": f"127.0.0.1:{port}", "duration_s": 1, "omit_s": 0,
                   "busy_retries": 0, "loaded_latency": False},
        "speedtest": {"target": f"{url}/speedtest/upload.php", "length_s": 1,
                      "loaded_latency": False, "timeout_s": 20},
        "http": {"target": url, "duration_s": 1, "warmup_s": 0.5, "loaded_latency": False,
                 "connect_timeout_s": 2},
        "responsiveness": {"target": url, "duration_s": 2, "warmup_s": 1, "timeout_s": 30},
        "icmp": {"target": "127.0.0.1", "family": "ipv6", "count": 1},  # no such address
        "tcp": {"target": f"127.0.0.1:{port}", "count": 2, "interval_s": 0.01},
        "dns": {"target": f"127.0.0.1:{port}", "count": 1, "probe_timeout_s": 0.2},
        "http_latency": {"target": f"{url}/x", "count": 2, "interval_s": 0.01},
        "ipv6": {"target": "127.0.0.1", "count": 1, "probe_timeout_s": 0.2},  # not IPv6
        "reachability": {"target": f"127.0.0.1:{port}", "count": 1},
    }[method]


def _same(results: list[wire.Result]) -> None:
    assert results
    for r in results:
        assert isinstance(r, wire.Result)  # what the methods make (no pydantic)
        payload = r.to_json()
        heavy = model(r)
        assert payload == heavy.to_json()
        assert ResultMessage.model_validate_json(payload) == heavy
        assert r.metrics.values() == heavy.metrics.values()
        assert r.started_at == heavy.started_at  # UTC, milliseconds, as the model keeps it


def test_successful_results_of_real_methods_are_the_contracts(
        listener: int, dns_ok: DnsResponder, http_site: int, iperf3_server: Service) -> None:
    made = {
        "tcp": runs("tcp", target=f"127.0.0.1:{listener}", count=3, interval_s=0.01),
        "icmp": runs("icmp", target="127.0.0.1", count=3, interval_s=0.01),
        "dns": runs("dns", target=dns_ok.address, name="xa.ha-tinh.test", count=2,
                    interval_s=0.01),
        "http_latency": runs("http_latency", target=f"http://127.0.0.1:{http_site}/",
                             count=2, interval_s=0.01),
        "reachability": runs("reachability", target=f"127.0.0.1:{listener}",
                             endpoints=["icmp:127.0.0.1"], count=1),
        "iperf3": runs("iperf3", target=f"127.0.0.1:{iperf3_server.port}", duration_s=1,
                       omit_s=0, loaded_latency=True, latency_interval_s=0.05),
        "ipv6": runs("ipv6", target="::1", v4_target="127.0.0.1", count=1,
                     probe_timeout_s=0.5),
    }
    assert tuple(made) == ON_LOOPBACK
    for name in ON_LOOPBACK:
        assert all(r.ok for r in made[name]), (name, [r.error for r in made[name]])
    assert made["iperf3"][0].metrics.download_mbps  # a real throughput result
    for results in made.values():
        _same(results)


def test_successful_throughput_results_across_a_shaped_link_are_the_contracts(
        server_ns: netns.ServerNamespace, tmp_path: Path) -> None:
    link = server_ns.add_link(200)
    site = make_site(server_ns, tmp_path)
    iperf = site.start_iperf3()
    try:
        url = site.url(link)
        made = {
            "http": runs("http", link, target=url, duration_s=2, warmup_s=1),
            "speedtest": runs("speedtest", link, target=f"{url}/speedtest/upload.php",
                              length_s=2),
            "responsiveness": runs("responsiveness", link, target=url, duration_s=3,
                                   warmup_s=1),
            "iperf3": runs("iperf3", link, target=link.server_ip, duration_s=2, omit_s=1),
            "http_latency": runs("http_latency", link,
                                 target=f"{url}/speedtest/latency.txt", count=3,
                                 interval_s=0.05),
        }
    finally:
        iperf.terminate()
        iperf.wait(30)
        site.nginx.stop()
    assert tuple(made) == ACROSS_A_LINK
    for name, results in made.items():
        assert all(r.ok for r in results), (name, [r.error for r in results])
        _same(results)
    assert made["http"][0].metrics.download_mbps and made["speedtest"][0].metrics.upload_mbps


@pytest.mark.parametrize("method", list(DECLARATIONS))
def test_failed_results_of_every_method_are_the_contracts(method: str) -> None:
    results = runs(method, **_failing(method, _closed_port()))
    assert any(r.error is not None for r in results), results
    _same(results)


def test_a_real_status_message_is_the_contracts(tmp_path: Path) -> None:
    """The run time's status (plain fields, written by wire.encode_status) and its last
    will are byte for byte what the models wrote before: ``StatusMessage(...).to_json()``
    and its ``model_copy(update={"at": None, "uptime_s": None})``."""
    from agent.publisher import last_will
    from agent.update import Layout, Updater

    cfg = config.load(write_config(tmp_path, agent_config(tmp_path, None,
                                                           {"t": tcp_test(1)})))
    runtime = Runtime(cfg, publish=False)
    try:
        asyncio.run(runtime.run_once())
        # Every optional member set, as on a deployed probe (updates on, a refused config).
        root = tmp_path / "releases"
        Layout(root).write({"failed": {"0.1.9": "did not stay up: 3 starts"}, "trial": None,
                            "last_event": "rolled back from 0.1.9 to 0.1.8",
                            "last_event_at": "2026-12-01T08:00:00.123Z"})
        runtime.updater = Updater(config.UpdateSettings(root=root), cfg.probe_id, [], "lo",
                                  count=lambda link, n: None, budget_left=lambda link: None,
                                  healthy=lambda: (True, ""), restart=lambda: None)
        runtime.updater._pending = "0.2.0"
        runtime.config_version, runtime.config_error = 7, "config version 8 rejected: replay"
        runtime.board_model = "Raspberry Pi 4 Model B Rev 1.5"
        for state in ("online", "offline"):
            fields = runtime.status_message(state)
            payload = wire.encode_status(fields)
            model = StatusMessage.model_validate(fields)
            assert payload == model.to_json()
            assert StatusMessage.model_validate_json(payload) == model
            assert last_will(fields) == model.model_copy(
                update={"at": None, "uptime_s": None}).to_json()
            assert model.config_version == 7 and model.board_model
            if state == "online":
                assert model.update is not None and model.update.pending == "0.2.0"
                assert model.update.last_event_at is not None and model.links
    finally:
        runtime.spool.close()
