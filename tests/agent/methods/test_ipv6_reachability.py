"""``ipv6`` readiness and ``reachability`` of endpoints over a link into a namespace."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.methods.registry import get
from devstack import netns
from tests.helpers.methods import HTTP_PORT, ctx_for, make_site, run

Shaped = Callable[[float], tuple[netns.ShapedLink, netns.ServerNamespace]]


def unused_v6(link: netns.ShapedLink) -> str:
    """An address in the link's /64 that nobody holds."""
    return link.server_ip6.rsplit("::", 1)[0] + "::9"


def test_ipv6_ready_link(shaped_link: Shaped) -> None:
    link, _ = shaped_link(150)
    res = run("ipv6", ctx_for(link), target=link.server_ip6, v4_target=link.server_ip,
              count=5, interval_s=0.01)
    assert res.ok, res.error
    m = res.metrics.values()
    assert m["ipv6_reachable"] == 1 and m["loss_pct"] == 0
    assert m["ipv6_global_address"] == 0  # the test link has only a ULA (fd00::/8)
    assert m["rtt_ms"] > 0 and m["rtt_v4_ms"] > 0 and m["rtt_v6_v4_ratio"] > 0
    subprocess.run(["ip", "-6", "addr", "add", "2001:db8:6e6d::1/64", "dev", link.host_if,
                    "nodad"], check=True)
    res = run("ipv6", ctx_for(link), target=link.server_ip6, v4_target=link.server_ip,
              count=2, interval_s=0.01)
    assert res.metrics.values()["ipv6_global_address"] == 1


def test_ipv6_unreachable_is_an_error_result_with_the_findings(shaped_link: Shaped) -> None:
    link, _ = shaped_link(150)
    res = run("ipv6", ctx_for(link), target=unused_v6(link), v4_target=link.server_ip,
              count=2, interval_s=0.01, probe_timeout_s=0.5)
    # The bulletin counts ready / not ready from the status alone.
    assert res.error is not None and res.error.code == "unreachable"
    assert "IPv6" in res.error.message
    m = res.metrics.values()
    assert m["ipv6_reachable"] == 0 and m["loss_pct"] == 100
    assert m["rtt_v4_ms"] > 0 and "rtt_v6_v4_ratio" not in m


def test_reachability_one_result_per_endpoint(shaped_link: Shaped, tmp_path: Path) -> None:
    link, ns = shaped_link(150)
    site = make_site(ns, tmp_path)
    try:
        cls = get("reachability")
        opts = cls.decl.options(target=f"{link.server_ip}:{HTTP_PORT}", endpoints=[
            f"{link.server_ip}:9", f"icmp:{link.server_ip}", f"icmp:{unused_v6(link)}"],
            count=2, interval_s=0.01, probe_timeout_s=0.5)
        results = asyncio.run(cls().run(ctx_for(link), opts))
    finally:
        site.nginx.stop()
    by_target = {r.target: r for r in results}
    assert list(by_target) == [opts.target, *opts.endpoints]
    up = by_target[f"{link.server_ip}:{HTTP_PORT}"]
    assert up.ok and up.metrics.values()["reachable"] == 1 and up.metrics.rtt_ms > 0
    refused = by_target[f"{link.server_ip}:9"]
    assert refused.error is not None and refused.error.code == "refused"
    assert refused.metrics.values()["reachable"] == 0
    assert by_target[f"icmp:{link.server_ip}"].ok
    down = by_target[f"icmp:{unused_v6(link)}"]
    assert down.error is not None and down.error.code == "unreachable"


def test_reachability_endpoint_syntax_is_checked() -> None:
    with pytest.raises(ValidationError, match="host:port or icmp:host"):
        get("reachability").decl.options(target="10.0.0.1")
    with pytest.raises(ValidationError, match="icmp: needs a host"):
        get("reachability").decl.options(target="a:1", endpoints=["icmp:"])
