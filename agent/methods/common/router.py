"""The line's own byte counters, read at the office router (or the ISP's ONT).

A probe plugged into the office switch sees only its own traffic: the staff's downloads
on the shared fibre never cross its interface, so the busy-line deferral and the
cross-traffic figure read from the probe's counters (``linkstats``) miss them. A link with
a ``[links.<name>.router]`` table reads the router's WAN counters instead, over

* SNMP: IF-MIB ``ifHCInOctets`` / ``ifHCOutOctets`` (64-bit) of one interface, named by
  ``if_index`` or by ``if_name`` (matched against ``ifName``, then ``ifDescr``); v2c with
  a community, or v3 with a USM user, authentication and privacy (authPriv: the community
  of v2c crosses the office LAN in clear);
* UPnP IGD: ``GetTotalBytesReceived`` / ``GetTotalBytesSent`` of the
  ``WANCommonInterfaceConfig`` service (32-bit: wraps at 4 GiB, handled by :func:`delta`).

Both count the WAN interface's frames, so "received" is the line's download. The
protocol libraries (``pysnmp``, ``async-upnp-client``, the ``router`` extra) are imported
only when a link is configured with a source (``router_poll.source_for``): a probe
without one neither installs nor loads them. This module holds the types; the
configuration is :class:`agent.config.RouterCounters` (validation) and
:class:`agent.runconfig.Router` (the run time); ``router_poll`` reads and watches the
counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Reading:
    """The router's counters for the line: bytes received (download) and sent."""

    rx_bytes: int
    tx_bytes: int
    at: float  # time.monotonic() when read
    modulus: int  # the counters wrap at this value
    #: The probe's own interface counters at the same moment (rx, tx), when watched: the
    #: line's bytes minus these are the other users' (``router_poll.Poller``).
    local: tuple[int, int] | None = None


def delta(start: int, end: int, modulus: int) -> int:
    """Bytes between two readings of a counter that wraps at ``modulus`` (one wrap at
    most: readings are seconds apart)."""
    return (end - start) % modulus


class RouterError(Exception):
    """A query to the router failed (the caller falls back to the probe's counters)."""


class CounterSource(Protocol):
    """One router's counters for one line."""

    async def read(self) -> Reading:
        """Query the router now; raises :class:`RouterError`."""
        ...


def __getattr__(name: str) -> Any:
    # The config model lives in agent.config (pydantic: the start stage's validation);
    # kept reachable here for the code and tests that name it by its old home.
    if name == "RouterCounters":
        from agent.config import RouterCounters
        return RouterCounters
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
