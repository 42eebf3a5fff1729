"""The line's own byte counters, read at the office router (or the ISP's ONT).

A probe plugged into the office switch sees only its own traffic: the staff's downloads
on the shared fibre never cross its interface, so the busy-line deferral and the
cross-traffic figure read from the probe's counters (``linkstats``) miss them. A link with
a ``[links.<name>.router]`` table reads the router's WAN counters instead, over

* SNMP: IF-MIB ``ifHCInOctets`` / ``ifHCOutOctets`` (64-bit) of one interface, named by
  ``if_index`` or by ``if_name`` (matched against ``ifName``, then ``ifDescr``);
* UPnP IGD: ``GetTotalBytesReceived`` / ``GetTotalBytesSent`` of the
  ``WANCommonInterfaceConfig`` service (32-bit: wraps at 4 GiB, handled by :func:`delta`).

Both count the WAN interface's frames, so "received" is the line's download. The
protocol libraries (``pysnmp``, ``async-upnp-client``, the ``router`` extra) are imported
only when a link is configured with a source (:func:`source_for`): a probe without one
neither installs nor loads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from netmon.settings import read_secret

log = logging.getLogger("netmon.agent.router")

#: The Python modules each source needs (the ``router`` extra installs them).
NEEDS: dict[str, str] = {"snmp": "pysnmp", "upnp": "async_upnp_client"}


class RouterCounters(BaseModel):
    """``[links.<name>.router]``: where the line's real counters are read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["snmp", "upnp"] = Field(description="SNMP IF-MIB or UPnP IGD")
    # SNMP
    host: str | None = Field(None, min_length=1, max_length=253,
                             description="snmp: the router's address")
    port: int = Field(161, ge=1, le=65535, description="snmp: UDP port")
    community: SecretStr = Field(SecretStr("public"),
                                 description="snmp v2c community (prefer community_file)")
    community_file: Path | None = Field(None, description="snmp: file holding the community")
    if_index: int | None = Field(None, ge=1, le=2**31 - 1,
                                 description="snmp: ifIndex of the WAN interface")
    if_name: str | None = Field(None, min_length=1, max_length=64,
                                description="snmp: ifName (or ifDescr) of the WAN interface")
    # UPnP
    url: str | None = Field(None, min_length=1, max_length=500,
                            description="upnp: the IGD's description URL (rootDesc.xml)")
    timeout_s: float = Field(2.0, gt=0, le=30, description="one query's time limit")
    sample_s: float = Field(
        7.0, ge=1, le=120,
        description="busy-line check: watch the counters this long (longer than two of the "
                    "router's counter refreshes: snmpd refreshes every 3 s)")

    @model_validator(mode="after")
    def _complete(self) -> RouterCounters:
        if self.source == "snmp":
            if self.host is None:
                raise ValueError('host: required when source = "snmp"')
            if (self.if_index is None) == (self.if_name is None):
                raise ValueError('if_index: set exactly one of if_index or if_name for '
                                 'source = "snmp"')
            if self.url is not None:
                raise ValueError('url: only for source = "upnp"')
        else:
            if self.url is None:
                raise ValueError('url: required when source = "upnp" (the IGD\'s '
                                 "description URL, e.g. http://192.168.1.1:5000/rootDesc.xml)")
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("url: must be an http:// URL of the IGD's description")
            for key in ("host", "if_index", "if_name", "community_file"):
                if getattr(self, key) is not None:
                    raise ValueError(f'{key}: only for source = "snmp"')
        return self

    def read_community(self) -> str:
        """The SNMP community: ``community_file`` by the secret-file rule, else
        ``community``; never logged."""
        secret = read_secret(self.community_file, "router.community_file")
        return secret if secret is not None else self.community.get_secret_value()

    def problems(self, key: str) -> list[str]:
        """What stops this source from running on this machine (the extra not installed,
        an unreadable community file); ``key`` names the table in the messages."""
        out = []
        module = NEEDS[self.source]
        if importlib.util.find_spec(module) is None:
            out.append(f"{key}.source: {self.source} needs the '{module}' module: install "
                       "the agent with the router extra (pip install 'hatinh-netmon[agent,"
                       "router]')")
        if self.community_file is not None:
            try:
                self.read_community()
            except Exception as exc:  # SecretFileError names the file and why
                out.append(f"{key}.community_file: {exc}")
        return out


@dataclass(frozen=True)
class Reading:
    """The router's counters for the line: bytes received (download) and sent."""

    rx_bytes: int
    tx_bytes: int
    at: float  # time.monotonic() when read
    modulus: int  # the counters wrap at this value


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


#: Sources per event loop: the protocol clients hold sockets bound to the loop they were
#: first used in.
_SOURCES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                    dict[RouterCounters, CounterSource]] = \
    weakref.WeakKeyDictionary()


def source_for(cfg: RouterCounters) -> CounterSource:
    """The source for a configuration, cached in the running loop; the first call
    imports its library."""
    cache = _SOURCES.setdefault(asyncio.get_running_loop(), {})
    found = cache.get(cfg)
    if found is None:
        if cfg.source == "snmp":
            from agent.methods.common.router_snmp import SnmpSource
            found = SnmpSource(cfg)
        else:
            from agent.methods.common.router_upnp import UpnpSource
            found = UpnpSource(cfg)
        cache[cfg] = found
    return found


async def read(cfg: RouterCounters, quiet: bool = False) -> Reading | None:
    """One reading, or None (logged unless ``quiet``) when the router cannot be queried."""
    try:
        return await asyncio.wait_for(source_for(cfg).read(), cfg.timeout_s * 3)
    except RouterError as exc:
        why = str(exc)
    except TimeoutError:
        why = f"no answer in {cfg.timeout_s * 3:g} s"
    if not quiet:
        log.warning("router counters (%s) unavailable: %s", cfg.source, why)
    return None


class Poller:
    """The router's counters read every ``POLL_S`` while a window is open.

    Routers refresh their counters every few seconds (snmpd every 3 s), so a reading can
    be stale by that much. Only readings at which a counter moved are kept: such a
    reading is fresh to within one poll, so the span between the first and last of them
    is the one over which the line's bytes are known.
    """

    def __init__(self, cfg: RouterCounters) -> None:
        self.cfg = cfg
        self.read_any = False  # at least one reading succeeded
        self.changes: list[Reading] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin polling in the running loop."""
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        prev: Reading | None = None
        warned = False
        while True:
            got = await read(self.cfg, quiet=warned)
            warned = warned or got is None
            if got is not None:
                self.read_any = True
                if prev is not None and (got.rx_bytes, got.tx_bytes) != (prev.rx_bytes,
                                                                          prev.tx_bytes):
                    self.changes.append(got)
                prev = got
            await asyncio.sleep(POLL_S)

    def cancel(self) -> None:
        """Stop polling and drop what was read."""
        if self._task is not None:
            self._task.cancel()
        self.changes.clear()

    async def stop(self, until: float | None = None) -> tuple[Reading, Reading] | None:
        """Stop polling; the first and last fresh readings taken before ``until``
        (monotonic), or None when fewer than two were."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        kept = [r for r in self.changes if until is None or r.at <= until]
        return (kept[0], kept[-1]) if len(kept) >= 2 else None


#: Seconds between readings while a window is open.
POLL_S = 0.25


#: The shortest span between two fresh readings that gives a rate.
MIN_SPAN_S = 1.0


async def line_mbps(cfg: RouterCounters) -> float | None:
    """The busier direction's rate on the line (Mb/s) between two fresh readings of the
    router's counters at least :data:`MIN_SPAN_S` apart, taken within ``cfg.sample_s``:
    0 when the counters did not move that long, None when the router cannot be read."""
    poller = Poller(cfg)
    poller.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cfg.sample_s
    try:
        while loop.time() < deadline:
            await asyncio.sleep(POLL_S)
            got = poller.changes
            if len(got) >= 2 and got[-1].at - got[0].at >= MIN_SPAN_S:
                break
    finally:
        pair = await poller.stop()
    if pair is None or pair[1].at - pair[0].at < MIN_SPAN_S:
        return 0.0 if poller.read_any else None
    first, last = pair
    elapsed = last.at - first.at
    return max(delta(first.rx_bytes, last.rx_bytes, first.modulus),
               delta(first.tx_bytes, last.tx_bytes, first.modulus)) * 8 / elapsed / 1e6
