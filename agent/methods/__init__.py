"""Measurement methods, registered in one place.

``REGISTRY`` maps a method name (the ``method`` key of a ``[tests.<name>]`` table) to
its plugin class; see :mod:`agent.methods.base` for the interface.
"""

from __future__ import annotations

from agent.methods.base import Method
from agent.methods.dns import DnsMethod
from agent.methods.http import HttpMethod
from agent.methods.http_latency import HttpLatencyMethod
from agent.methods.icmp import IcmpMethod
from agent.methods.iperf3 import Iperf3Method
from agent.methods.ipv6 import Ipv6Method
from agent.methods.reachability import ReachabilityMethod
from agent.methods.speedtest import SpeedtestMethod
from agent.methods.tcp import TcpMethod

REGISTRY: dict[str, type[Method]] = {
    cls.name: cls  # type: ignore[misc]
    for cls in (Iperf3Method, HttpMethod, IcmpMethod, TcpMethod, DnsMethod,
                HttpLatencyMethod, SpeedtestMethod, Ipv6Method, ReachabilityMethod)
}


def get(name: str) -> type[Method]:
    """The plugin class for a method name; KeyError names the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
