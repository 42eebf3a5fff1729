"""The agent's implementation of every declared method, one line each.

A method's name, kind and options are declared in the core (:mod:`netmon.methods`), where
the collector and the NOC tools can see them without importing the agent; this module
maps each name to the class that measures it (``agent/methods/<name>.py``).
``tests/agent/methods/test_registry.py`` checks that the two lists match one to one.
"""

from __future__ import annotations

from typing import Any

from agent.methods.base import Method
from agent.methods.dns import DnsMethod
from agent.methods.http import HttpMethod
from agent.methods.http_latency import HttpLatencyMethod
from agent.methods.icmp import IcmpMethod
from agent.methods.iperf3 import Iperf3Method
from agent.methods.ipv6 import Ipv6Method
from agent.methods.reachability import ReachabilityMethod
from agent.methods.responsiveness import ResponsivenessMethod
from agent.methods.speedtest import SpeedtestMethod
from agent.methods.tcp import TcpMethod

#: One entry per implementation (a duplicate would hide in the dict; the test sees it here).
IMPLEMENTATIONS: tuple[type[Method[Any]], ...] = (
    Iperf3Method,
    SpeedtestMethod,
    HttpMethod,
    ResponsivenessMethod,
    IcmpMethod,
    TcpMethod,
    DnsMethod,
    HttpLatencyMethod,
    Ipv6Method,
    ReachabilityMethod,
)

#: Method name -> implementation. Tests add test-only methods for their duration with the
#: ``register_method`` fixture (``tests/conftest.py``); production code never changes it.
REGISTRY: dict[str, type[Method[Any]]] = {cls.decl.name: cls for cls in IMPLEMENTATIONS}


def get(name: str) -> type[Method[Any]]:
    """The implementation of a method; KeyError names the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
