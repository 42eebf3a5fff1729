"""The agent's implementation of every declared method, one line each.

A method's name, kind and options are declared in the core (:mod:`netmon.methods`), where
the collector and the NOC tools can see them without importing the agent; this module
maps each name to the class that measures it (``agent/methods/<name>.py``).
``tests/agent/methods/test_registry.py`` checks that the two lists match one to one.

A method's module is imported the first time :func:`get` asks for it, not when this
module is: a probe that runs only latency tests never loads the HTTP engine or
speedtest-cli, which keeps the idle agent's resident memory down (issue 20).
:data:`IMPLEMENTATIONS` and :data:`REGISTRY` load every method when first read.
"""

from __future__ import annotations

import importlib
from typing import Any

from agent.methods.base import Method

#: Method name (= its module ``agent/methods/<name>.py``) and the class implementing it,
#: one entry per implementation (a duplicate would hide in a dict; the test sees it here).
CLASSES: tuple[tuple[str, str], ...] = (
    ("iperf3", "Iperf3Method"),
    ("speedtest", "SpeedtestMethod"),
    ("http", "HttpMethod"),
    ("responsiveness", "ResponsivenessMethod"),
    ("icmp", "IcmpMethod"),
    ("tcp", "TcpMethod"),
    ("dns", "DnsMethod"),
    ("http_latency", "HttpLatencyMethod"),
    ("ipv6", "Ipv6Method"),
    ("reachability", "ReachabilityMethod"),
)
_CLASS_OF = dict(CLASSES)

#: Method name -> implementation, for the methods loaded so far (all of them once
#: :data:`REGISTRY` or :data:`IMPLEMENTATIONS` is read). Tests add test-only methods for
#: their duration with the ``register_method`` fixture (``tests/conftest.py``);
#: production code never changes it.
_REGISTRY: dict[str, type[Method[Any]]] = {}


def _load(name: str) -> type[Method[Any]]:
    cls: type[Method[Any]] = getattr(importlib.import_module(f"agent.methods.{name}"),
                                     _CLASS_OF[name])
    _REGISTRY.setdefault(name, cls)
    return cls


def get(name: str) -> type[Method[Any]]:
    """The implementation of a method (its module imported now if it was not yet);
    KeyError names the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        pass
    if name in _CLASS_OF:
        return _load(name)
    known = sorted({*_CLASS_OF, *_REGISTRY})
    raise KeyError(f"unknown method {name!r}; known: {', '.join(known)}") from None


def __getattr__(attr: str) -> Any:
    # IMPLEMENTATIONS (one class per entry of CLASSES, in order) and REGISTRY (the dict
    # get() reads, every method loaded) are for tests and tools that want them all.
    if attr == "IMPLEMENTATIONS":
        return tuple(_load(name) for name, _ in CLASSES)
    if attr == "REGISTRY":
        for name, _ in CLASSES:
            if name not in _REGISTRY:
                _load(name)
        return _REGISTRY
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
