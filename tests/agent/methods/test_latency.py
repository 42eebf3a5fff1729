"""Latency methods (icmp, tcp, dns, http_latency) against real sockets: loopback, and
shaped links inside a namespace (loss from an iptables ``statistic`` drop rule)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.methods.registry import REGISTRY, get
from devstack import netns
from tests.helpers.methods import DnsResponder, ctx_for, dns_responder, make_site, run

ROOT = os.geteuid() == 0


@pytest.fixture
def dns_ok() -> Iterator[DnsResponder]:
    yield from dns_responder(0)


@pytest.fixture
def dns_refusing() -> Iterator[DnsResponder]:
    yield from dns_responder(5)


def test_every_latency_method_is_registered_as_latency() -> None:
    for name in ("icmp", "tcp", "dns", "http_latency"):
        assert get(name).decl.kind == "latency"
        assert REGISTRY[name].decl.name == name


@pytest.mark.parametrize("method", ["icmp", "tcp", "dns", "http_latency"])
def test_unknown_option_is_rejected_by_name(method: str) -> None:
    with pytest.raises(ValidationError) as err:
        get(method).decl.options(target="127.0.0.1", cuont=3)
    assert "cuont" in str(err.value)


def test_tcp_connect_time_on_loopback() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        port = server.getsockname()[1]
        res = run("tcp", ctx_for(), target=f"127.0.0.1:{port}", count=5, interval_s=0.01)
    assert res.ok, res.error
    m = res.metrics
    assert m.samples == 5 and m.loss_pct == 0
    assert 0 < m.rtt_min_ms <= m.rtt_ms <= m.rtt_max_ms < 100
    assert m.jitter_ms is not None


def test_tcp_refused_is_an_error_result_with_the_os_words() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connect is refused
        res = run("tcp", ctx_for(), target=f"127.0.0.1:{port}", count=2, interval_s=0.01)
    assert res.error is not None and res.error.code == "refused"
    assert "refused" in res.error.message.lower()
    assert res.metrics.loss_pct == 100


def test_tcp_unresolvable_host_is_a_dns_error() -> None:
    res = run("tcp", ctx_for(), target="no-such-host.invalid:80", count=1)
    assert res.error is not None and res.error.code == "dns"


def test_dns_resolution_time(dns_ok: DnsResponder) -> None:
    res = run("dns", ctx_for(), target=dns_ok.address, name="xa.ha-tinh.test", count=4,
              interval_s=0.01)
    assert res.ok, res.error
    assert res.metrics.samples == 4 and res.metrics.loss_pct == 0
    assert dns_ok.queries == 4
    assert 0 < res.metrics.rtt_ms < 100


def test_dns_refused_carries_the_rcode(dns_refusing: DnsResponder) -> None:
    res = run("dns", ctx_for(), target=dns_refusing.address, count=2, interval_s=0.01)
    assert res.error is not None and res.error.code == "refused"
    assert "REFUSED" in res.error.message


def test_dns_silent_resolver_times_out() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        res = run("dns", ctx_for(), target=f"127.0.0.1:{port}", count=2, interval_s=0.01,
                  probe_timeout_s=0.2)
    assert res.error is not None and res.error.code == "timeout"
    assert res.metrics.loss_pct == 100


def test_dns_bad_name_is_rejected() -> None:
    with pytest.raises(ValidationError, match="label"):
        get("dns").decl.options(target="127.0.0.1", name="a..b")


def test_whole_test_timeout_is_an_error_result() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        res = run("dns", ctx_for(), target=f"127.0.0.1:{port}", count=50, interval_s=0.01,
                  probe_timeout_s=1, timeout_s=0.5)
    assert res.error is not None and res.error.code == "timeout"
    assert "timeout_s" in res.error.message
    assert res.duration_s < 2


@pytest.mark.skipif(not ROOT, reason="raw ICMP needs root when ping sockets are not allowed")
def test_icmp_on_loopback() -> None:
    res = run("icmp", ctx_for(), target="127.0.0.1", count=5, interval_s=0.01)
    assert res.ok, res.error
    assert res.metrics.samples == 5 and res.metrics.loss_pct == 0
    assert res.metrics.rtt_ms < 50


@pytest.mark.skipif(not ROOT, reason="raw ICMP needs root when ping sockets are not allowed")
def test_icmp_ipv6_on_loopback() -> None:
    res = run("icmp", ctx_for(), target="::1", count=3, interval_s=0.01, family="ipv6")
    assert res.ok, res.error
    assert res.metrics.loss_pct == 0


Shaped = Callable[[float], tuple[netns.ShapedLink, netns.ServerNamespace]]


def test_icmp_loss_follows_an_iptables_drop_rule(shaped_link: Shaped) -> None:
    link, ns = shaped_link(150)
    clean = run("icmp", ctx_for(link), target=link.server_ip, count=50, interval_s=0.005)
    assert clean.ok and clean.metrics.loss_pct == 0
    ns.exec(["iptables", "-A", "INPUT", "-p", "icmp", "--icmp-type", "echo-request", "-m",
             "statistic", "--mode", "random", "--probability", "0.3", "-j", "DROP"])
    res = run("icmp", ctx_for(link), target=link.server_ip, count=300, interval_s=0.005,
              probe_timeout_s=0.5)
    assert res.ok, res.error
    # 300 draws at p=0.3: the standard deviation is 2.6 points; 10 points is ~4 sigma.
    assert 20 <= res.metrics.loss_pct <= 40, res.metrics
    assert res.metrics.samples == 300 - round(3 * res.metrics.loss_pct)


def test_icmp_to_a_dropping_host_is_unreachable(shaped_link: Shaped) -> None:
    link, ns = shaped_link(150)
    ns.exec(["iptables", "-A", "INPUT", "-p", "icmp", "-j", "DROP"])
    res = run("icmp", ctx_for(link), target=link.server_ip, count=3, interval_s=0.01,
              probe_timeout_s=0.3)
    assert res.error is not None and res.error.code == "unreachable"
    assert res.metrics.loss_pct == 100


def test_tcp_and_http_latency_over_a_shaped_link(shaped_link: Shaped, tmp_path: Path) -> None:
    link, ns = shaped_link(71)
    site = make_site(ns, tmp_path)
    try:
        tcp = run("tcp", ctx_for(link, by="source"), target=f"{link.server_ip}:8080", count=5,
                  interval_s=0.01)
        assert tcp.ok, tcp.error
        http = run("http_latency", ctx_for(link), target=f"{site.url(link)}/speedtest/latency.txt",
                   count=5, interval_s=0.01)
        assert http.ok, http.error
        assert http.metrics.samples == 5 and http.metrics.loss_pct == 0
        missing = run("http_latency", ctx_for(link), target=f"{site.url(link)}/nothing-here",
                      count=2, interval_s=0.01)
        assert missing.error is not None and missing.error.code == "protocol"
        assert "404" in missing.error.message
    finally:
        site.nginx.stop()
