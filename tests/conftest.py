"""Shared fixtures: real services on loopback, each with its own port and directory.

Tests that need root or a missing binary are skipped locally with the reason; under CI
(``CI=true``) a skip is turned into a failure, because CI installs everything.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from devstack import netns, services
from tests.helpers import need

if TYPE_CHECKING:
    from agent.methods.base import Method

IN_CI = os.environ.get("CI") == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped in CI, where nothing may be skipped: {reason}"



@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[services.Service]:
    """An anonymous mosquitto on a free loopback port (function scope: tests may stop it)."""
    need("mosquitto")
    svc = services.start_mosquitto(tmp_path / "mosquitto")
    yield svc
    svc.stop()


@pytest.fixture
def influxd(tmp_path: Path) -> Iterator[services.Service]:
    """An influxd 1.x on a free loopback port with its own data directory."""
    need("influxd")
    svc = services.start_influxd(tmp_path / "influxd")
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def influxd_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.Service]:
    """One influxd for a whole test module, for data sets that take seconds to load."""
    need("influxd")
    svc = services.start_influxd(tmp_path_factory.mktemp("influxd"))
    yield svc
    svc.stop()


class Influx:
    """Tiny v1 HTTP helper for tests (the product's writer lives in the collector)."""

    def __init__(self, svc: services.Service) -> None:
        self.url = f"http://{svc.host}:{svc.port}"

    def query(self, q: str, db: str | None = None, method: str = "GET") -> dict[str, object]:
        params = {"q": q, "epoch": "ms"} | ({"db": db} if db else {})
        data = urllib.parse.urlencode(params)
        if method == "GET":
            req = urllib.request.Request(f"{self.url}/query?{data}")
        else:
            req = urllib.request.Request(f"{self.url}/query", data=data.encode(), method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            result: dict[str, object] = json.loads(resp.read())
        return result

    def write(self, db: str, lines: str, precision: str = "ms") -> None:
        req = urllib.request.Request(
            f"{self.url}/write?db={db}&precision={precision}", data=lines.encode(), method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 204

    def create_db(self, db: str) -> None:
        self.query(f'CREATE DATABASE "{db}"', method="POST")


@pytest.fixture
def influx(influxd: services.Service) -> Influx:
    """Helper bound to the ``influxd`` fixture."""
    return Influx(influxd)


@pytest.fixture
def iperf3_server(tmp_path: Path) -> Iterator[services.Service]:
    """An iperf3 server on a free loopback port."""
    need("iperf3")
    svc = services.start_iperf3(tmp_path / "iperf3")
    yield svc
    svc.stop()


@pytest.fixture
def server_ns() -> Iterator[netns.ServerNamespace]:
    """A fresh network namespace; add shaped links with ``server_ns.add_link(rate_mbit)``."""
    reason = netns.can_use_netns()
    if reason:
        pytest.skip(reason)
    ns = netns.ServerNamespace.create()
    yield ns
    ns.destroy()


@pytest.fixture
def shaped_link(server_ns: netns.ServerNamespace
                ) -> Callable[[float], tuple[netns.ShapedLink, netns.ServerNamespace]]:
    """Factory: ``shaped_link(71)`` adds a tbf-shaped veth to ``server_ns``."""
    def make(rate_mbit: float) -> tuple[netns.ShapedLink, netns.ServerNamespace]:
        return server_ns.add_link(rate_mbit), server_ns
    return make


@pytest.fixture
def register_method(monkeypatch: pytest.MonkeyPatch) -> Callable[[type[Method[Any]]], None]:
    """Factory: ``register_method(Impl)`` adds a test-only method for this test only: its
    declaration (``Impl.decl``) to :data:`netmon.methods.DECLARATIONS`, so plans and the
    contract accept its name, and ``Impl`` to the agent's registry, so the runtime runs it.
    Both are removed when the test ends; production code has no test-only path."""
    # Imported here, not at the top: the collector's and the dashboards' tests never load
    # the agent's methods.
    from agent.methods.registry import REGISTRY
    from netmon.methods import DECLARATIONS

    def register(impl: type[Method[Any]]) -> None:
        name = impl.decl.name
        assert name not in DECLARATIONS and name not in REGISTRY, f"{name} is already a method"
        monkeypatch.setitem(DECLARATIONS, name, impl.decl)
        monkeypatch.setitem(REGISTRY, name, impl)

    return register
