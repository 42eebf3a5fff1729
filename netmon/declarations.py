"""The measurement methods' declarations, without their option models: names, kinds,
which ones count as speed tests, and target parsing.

:mod:`netmon.methods` holds the option models (pydantic) and re-exports everything here.
This module is apart so that the probe's run time, which never validates (issue 20: it runs
without pydantic), can name methods, look their kind up and parse targets; a
declaration's :attr:`Declaration.options` imports the model only when something validates.
The collector and the NOC tools see the same :data:`DECLARATIONS` through
:mod:`netmon.methods`.

This module imports nothing that imports pydantic.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

#: Where an options model named by a declaration lives (imported by name when first read,
#: as agent/methods/registry.py loads implementations: this module stays free of it).
OPTIONS_MODULE = "netmon.methods"

#: What a method's results are, which decides how they are scheduled and aggregated:
#: ``throughput`` tests never overlap and are charged against data budgets, and their
#: results feed the speed charts; ``latency`` results feed the latency charts; ``check``
#: results answer yes / no per target (ready, up) with RTTs beside, counted on their own.
Kind = Literal["throughput", "latency", "check"]

#: The speedtest target meaning "speedtest.net's own servers" (anything else is a URL).
SPEEDTEST_NET = "speedtest.net"


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class HostPort:
    """A parsed ``host``, ``host:port``, ``[v6]:port`` or URL target."""

    host: str
    port: int


def split_host_port(target: str, default_port: int) -> HostPort:
    """Parse ``host``, ``host:port``, ``[v6addr]:port``, a bare IPv6 address or a URL.

    Raises ValueError for a bad port or a URL without a host. Here rather than in the
    agent because option models (``reachability`` endpoints) check targets with it.
    """
    target = target.strip()
    if "://" in target:
        parts = urlsplit(target)
        if not parts.hostname:
            raise ValueError(f"target {target!r} has no host")
        scheme_port = {"http": 80, "https": 443}.get(parts.scheme, default_port)
        return HostPort(parts.hostname, parts.port or scheme_port)
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else default_port
        return HostPort(host, port)
    if target.count(":") == 1:
        host, port_text = target.split(":")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"target {target!r}: port must be 1-65535")
        return HostPort(host, int(port_text))
    return HostPort(target, default_port)


# --------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Declaration:
    """What both sides know about a method: enough to validate its tests and results."""

    name: str
    kind: Kind
    #: The options model (a :class:`netmon.methods.MethodOptions`), or its name in
    #: :data:`OPTIONS_MODULE`: read it as :attr:`options`.
    options_model: type[Any] | str
    doc: str  # one line: the "what" column of the table in docs/methods.md
    #: A throughput method whose results carry ``download_mbps`` / ``upload_mbps``: it
    #: counts in the speed figures (dashboards, bulletin). ``responsiveness`` loads the
    #: line like a speed test but reports round trips, so it is scheduled as throughput
    #: and kept out of the speed figures (and their failed-test counts).
    speed: bool = False

    @property
    def options(self) -> type[Any]:
        """The options model (a :class:`netmon.methods.MethodOptions`) that validates this
        method's table; given by name, it is imported from :data:`OPTIONS_MODULE` now
        (with pydantic: validation only)."""
        model = self.options_model
        if isinstance(model, str):
            found: type[Any] = getattr(importlib.import_module(OPTIONS_MODULE), model)
            return found
        return model


#: Every method, by name, in declaration order (the order of the contract's groups, which
#: the dashboards' queries follow). Tests add test-only methods for their duration with the
#: ``register_method`` fixture (``tests/conftest.py``); production code never changes it.
DECLARATIONS: dict[str, Declaration] = {}


def declare(name: str, kind: Kind, options: type[Any] | str, doc: str,
            speed: bool | None = None) -> Declaration:
    """Add a method to :data:`DECLARATIONS` and return its declaration (``speed``: see
    :attr:`Declaration.speed`; default: every throughput method; ``options``: the
    model or its name in :mod:`netmon.methods`)."""
    if name in DECLARATIONS:
        raise ValueError(f"method {name!r} is declared twice")
    decl = Declaration(name, kind, options, doc,
                       kind == "throughput" if speed is None else speed)
    DECLARATIONS[name] = decl
    return decl


def declared(name: str) -> Declaration:
    """The declaration of a method; KeyError names the known ones."""
    try:
        return DECLARATIONS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known: "
                       f"{', '.join(sorted(DECLARATIONS))}") from None


IPERF3 = declare("iperf3", "throughput", "Iperf3Options",
                 "iperf3 binary, `-J`, download `-R` / upload")
SPEEDTEST = declare("speedtest", "throughput", "SpeedtestOptions",
                    "speedtest-cli library: speedtest.net over HTTPS, or a self-hosted server")
HTTP = declare("http", "throughput", "HttpOptions",
               "our multi-stream HTTP(S) engine (uvloop, `BufferedProtocol`, TLS via `ssl`)")
RESPONSIVENESS = declare("responsiveness", "throughput", "ResponsivenessOptions",
                         "round trips per minute (RPM) under load, IETF responsiveness draft",
                         speed=False)
ICMP = declare("icmp", "latency", "IcmpOptions", "ICMP echo")
TCP = declare("tcp", "latency", "TcpOptions", "TCP connect time")
DNS = declare("dns", "latency", "DnsOptions", "resolution time against a configured resolver")
HTTP_LATENCY = declare("http_latency", "latency", "HttpLatencyOptions", "HTTP time to first byte")
IPV6 = declare("ipv6", "check", "Ipv6Options",
               "IPv6 readiness: global address, v6 reachability, v6 vs v4 RTT")
REACHABILITY = declare("reachability", "check", "ReachabilityOptions",
                       "up/down and RTT per endpoint (one result per endpoint)")
