"""``responsiveness`` (RPM) against the measurement nginx over tbf-shaped links: under
load RPM falls below idle RPM by what the tbf queue holds, and a deeper queue gives a
lower RPM."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.methods.registry import get
from agent.methods.responsiveness import trimmed_mean
from devstack import netns
from netmon.contract import ResultMessage
from tests.agent.methods.tlssite import TlsSite, start_tls_site
from tests.helpers.methods import ctx_for, run

RATE = 71
#: (tbf latency, tbf burst) of the two links: limit = rate x latency + burst bytes.
DEEP = ("100ms", 256 * 1024)
SHALLOW = ("10ms", 32 * 1024)


def queue_ms(latency: str, burst: int) -> float:
    """The longest a packet can wait in the tbf queue: its byte limit at the rate."""
    limit = RATE * 1e6 / 8 * float(latency.removesuffix("ms")) / 1000 + burst
    return limit * 8 / (RATE * 1e6) * 1000


@pytest.fixture
def links(server_ns: netns.ServerNamespace) -> dict[str, netns.ShapedLink]:
    return {"deep": server_ns.add_link(RATE, burst=f"{DEEP[1] // 1024}kb", latency=DEEP[0]),
            "shallow": server_ns.add_link(RATE, burst=f"{SHALLOW[1] // 1024}kb",
                                          latency=SHALLOW[0])}


@pytest.fixture
def site(server_ns: netns.ServerNamespace, links: dict[str, netns.ShapedLink],
         tmp_path: Path) -> Iterator[TlsSite]:
    s = start_tls_site(server_ns, tmp_path, [link.server_ip for link in links.values()])
    yield s
    s.nginx.stop()


def rpm(url: str, link: netns.ShapedLink, **kw: object) -> ResultMessage:
    opts: dict[str, object] = {"duration_s": 6, "warmup_s": 2} | kw
    res = run("responsiveness", ctx_for(link), target=url, **opts)
    assert res.ok, res.error
    return res


def test_registered_as_throughput_with_checked_options() -> None:
    decl = get("responsiveness").decl
    assert decl.kind == "throughput"
    with pytest.raises(ValidationError, match="warmup_s"):
        decl.options(target="http://x", duration_s=3, warmup_s=3)
    with pytest.raises(ValidationError, match="http:// or https://"):
        decl.options(target="x:80")
    with pytest.raises(ValidationError, match="timeout_s"):
        decl.options(target="http://x", duration_s=60, timeout_s=30)


def test_trimmed_mean_drops_the_slowest_share() -> None:
    assert trimmed_mean([1.0] * 19 + [1000.0], 5) == 1.0
    assert trimmed_mean([2.0, 4.0], 5) == 3.0  # fewer than 20: nothing to drop
    assert trimmed_mean([7.0], 40) == 7.0


def test_rpm_under_load_falls_by_what_the_tbf_queue_explains(
        site: TlsSite, links: dict[str, netns.ShapedLink]) -> None:
    got: dict[str, ResultMessage] = {}
    for name, (latency, burst) in (("deep", DEEP), ("shallow", SHALLOW)):
        res = rpm(site.http(links[name]), links[name])
        m = res.metrics.values()
        got[name] = res
        # Direction, by a wide margin: idle round trips on a veth are around a
        # millisecond, loaded ones wait in a queue of 14-130 ms.
        assert m["rpm"] < m["idle_rpm"] / 3, (name, m)
        idle_rt, loaded_rt = 60000 / m["idle_rpm"], 60000 / m["rpm"]
        bound = queue_ms(latency, burst)
        # Each round trip crosses the loaded (download) queue once: it waits at most the
        # queue's length, plus the idle round trip and this busy machine's scheduling.
        assert loaded_rt < 1.5 * bound + idle_rt + 10, (name, bound, m)
        # And the queue is really what slows it: a sizeable part of it is in every probe.
        assert loaded_rt - idle_rt > 0.15 * bound, (name, bound, m)
        assert m["tcp_connect_ms"] > 0.15 * bound and m["http_rtt_ms"] > 0.15 * bound, m
        assert "tls_handshake_ms" not in m
        assert m["probes"] >= 10 and m["probes_idle"] == 10, m
        # The load filled the link (tbf rate minus ~4 % of headers), reported apart
        # from the speed figures.
        assert m["load_mbps"] > 0.85 * RATE and "download_mbps" not in m, m
        assert m["bytes"] > 3 * RATE * 1e6 / 8
    # The deeper queue gives the lower RPM.
    assert got["deep"].metrics.values()["rpm"] < got["shallow"].metrics.values()["rpm"]


def test_https_probes_time_the_tls_handshake_too(site: TlsSite,
                                                 links: dict[str, netns.ShapedLink]) -> None:
    res = rpm(site.https(links["deep"]), links["deep"], ca_file=site.ca)
    m = res.metrics.values()
    assert m["tls_handshake_ms"] > 0 and m["idle_tls_handshake_ms"] > 0, m
    assert m["rpm"] < m["idle_rpm"] / 3, m
    assert m["tls_handshake_ms"] > 0.15 * queue_ms(*DEEP), m


def test_failures_are_error_results(site: TlsSite, links: dict[str, netns.ShapedLink]
                                    ) -> None:
    link = links["shallow"]
    res = run("responsiveness", ctx_for(link), target=site.http(link),
              small_path="/missing", duration_s=3, warmup_s=1)
    assert res.error is not None and res.error.code == "protocol", res.error
    assert "idle probes" in res.error.message and "404" in res.error.message
    res = run("responsiveness", ctx_for(link), target=site.https(link), duration_s=3,
              warmup_s=1)  # the system store does not know the test CA
    assert res.error is not None and res.error.code == "protocol", res.error
    assert "TLS certificate" in res.error.message
    res = run("responsiveness", ctx_for(link), target=site.http(link),
              load_path="/missing", duration_s=3, warmup_s=1)
    assert res.error is not None and res.error.code == "protocol", res.error
    assert res.error.message.startswith("load:") and "404" in res.error.message
