"""Loaded latency (bufferbloat) and cross-traffic, shared by every throughput method.

Before the transfer a few ICMP echoes give the idle RTT; during the steady part of the
transfer echoes every ``latency_interval_s`` give the loaded RTT (median). Interface
byte counters read at the start and end of the measured window give the traffic that was
not the test's own; a link with a router counter source (``common/router.py``) reads the
line's counters at the router instead, which also see the office's other users.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.methods.base import LinkBinding
from agent.methods.common import linkstats, router_poll
from agent.methods.common import router as routerstats
from agent.methods.common.guard import MeasureError
from agent.methods.common.icmp import Pinger, ping_series

if TYPE_CHECKING:
    from agent.runconfig import Router


async def idle_rtt(host: str, link: LinkBinding, count: int = 5,
                   interval: float = 0.05) -> float | None:
    """Median of a few echoes just before the transfer (sent ``interval`` apart, each
    waiting up to 1 s, so a host that ignores ICMP costs about a second); None when none
    is answered or ICMP cannot be used."""
    try:
        rtts, _ = await ping_series(host, link, count, interval, 1.0)
    except MeasureError:
        return None
    return statistics.median(rtts) if rtts else None


async def add_idle_rtt(metrics: dict[str, float], host: str, link: LinkBinding) -> None:
    """Set ``idle_rtt_ms`` in ``metrics`` when the idle RTT could be measured."""
    idle = await idle_rtt(host, link)
    if idle is not None:
        metrics["idle_rtt_ms"] = round(idle, 3)


def directions(direction: str) -> tuple[str, ...]:
    """The directions run, in order, for a ``direction`` option ("both" = down then up)."""
    return ("download", "upload") if direction == "both" else (direction,)


def add_direction(metrics: dict[str, float], direction: str, mbps: float,
                  loaded_rtts: list[float], window: CounterWindow, test_bytes: float,
                  seconds: float, ipv6: bool, share: float) -> tuple[str, ...]:
    """Set one direction's rate, loaded RTT (median) and cross-traffic in ``metrics``
    (upload keys carry ``_upload``); return its flags."""
    suffix = "" if direction == "download" else "_upload"
    metrics[f"{direction}_mbps"] = round(mbps, 3)
    if loaded_rtts:
        metrics[f"loaded_rtt{suffix}_ms"] = round(statistics.median(loaded_rtts), 3)
    cross, flags = window.cross_traffic(direction, test_bytes, seconds, ipv6, share, mbps)
    if cross:
        metrics[f"cross_traffic{suffix}_mbps"] = cross["cross_traffic_mbps"]
    return flags


@dataclass
class LoadedSampler:
    """Echoes sent every ``interval`` s while a transfer runs (started/stopped by the
    transfer, in the transfer's event loop)."""

    host: str
    link: LinkBinding
    interval: float
    rtts: list[float] = field(default_factory=list)
    sent: int = 0
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin sampling in the running loop."""
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            pinger = await Pinger.open(self.host, self.link)
        except MeasureError:
            return
        pending: set[asyncio.Task[float | None]] = set()
        try:
            while True:
                self.sent += 1
                task = asyncio.ensure_future(pinger.ping(2.0))
                task.add_done_callback(self._collect)
                pending.add(task)
                task.add_done_callback(pending.discard)
                await asyncio.sleep(self.interval)
        finally:
            for task in pending:
                task.cancel()
            pinger.close()

    def _collect(self, task: asyncio.Task[float | None]) -> None:
        if not task.cancelled() and task.exception() is None and task.result() is not None:
            self.rtts.append(task.result())  # type: ignore[arg-type]

    async def stop(self) -> None:
        """Stop sampling (echoes still in flight are dropped)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


@dataclass
class CounterWindow:
    """Interface counters at the start and end of a measured window; with ``router``
    set, the router's counters for the line too (watched in the background between the
    marks, collected by :meth:`settle`)."""

    interface: str | None
    start: linkstats.Counters | None = None
    end: linkstats.Counters | None = None
    router: Router | None = None
    router_span: tuple[routerstats.Reading, routerstats.Reading] | None = None
    _poller: router_poll.Poller | None = None
    _closed_at: float | None = None

    def mark_start(self) -> None:
        """Read the counters at the window's start (and start watching the router's)."""
        if self.interface:
            self.start = linkstats.read_counters(self.interface)
        if self.router is not None:
            if self._poller is not None:  # a retried transfer opens its window again
                self._poller.cancel()
            self._poller = router_poll.Poller(self.router, self.interface)
            self._poller.start()

    def mark_end(self) -> None:
        """Read the counters at the window's end."""
        if self.interface:
            self.end = linkstats.read_counters(self.interface)
        self._closed_at = time.monotonic()

    async def settle(self) -> None:
        """Stop watching the router; keep the fresh readings taken inside the window
        (no-op without a router)."""
        if self._poller is not None:
            self.router_span = await self._poller.stop(self._closed_at)
            self._poller = None

    def cross_traffic(self, direction: str, test_bytes: float, seconds: float,
                      ipv6: bool, share: float, test_mbps: float
                      ) -> tuple[dict[str, float], tuple[str, ...]]:
        """``cross_traffic_mbps`` in the test's direction and the ``cross_traffic`` flag
        (plus ``router_counters`` when the router's counters gave the figure)."""
        if self.router_span is not None:
            rs, re_ = self.router_span
            got = rs.rx_bytes, re_.rx_bytes
            if direction != "download":
                got = rs.tx_bytes, re_.tx_bytes
            moved = routerstats.delta(*got, rs.modulus)
            # The router's window is its own (two queries' midpoints), not the test's.
            span = max(re_.at - rs.at, 1e-3)
            if rs.local is not None and re_.local is not None:
                # What the probe itself moved over the same span, framing included.
                side = 0 if direction == "download" else 1
                mbps = linkstats.cross_traffic_mbps(
                    moved, re_.local[side] - rs.local[side], span, 1.0)
            else:  # no interface to read: the test's mean rate over the span
                own = test_bytes / seconds * span if seconds > 0 else 0.0
                factor = linkstats.wire_factor(
                    linkstats.mtu(self.interface) if self.interface else 1500, ipv6)
                mbps = linkstats.cross_traffic_mbps(moved, own, span, factor)
            flags: tuple[str, ...] = ("router_counters",)
            if mbps > share * test_mbps:
                flags = ("cross_traffic", *flags)
            return {"cross_traffic_mbps": round(mbps, 3)}, flags
        if not (self.interface and self.start and self.end):
            return {}, ()
        if direction == "download":
            delta = self.end.rx_bytes - self.start.rx_bytes
        else:
            delta = self.end.tx_bytes - self.start.tx_bytes
        factor = linkstats.wire_factor(linkstats.mtu(self.interface), ipv6)
        mbps = linkstats.cross_traffic_mbps(delta, test_bytes, seconds, factor)
        flags = ("cross_traffic",) if mbps > share * test_mbps else ()
        return {"cross_traffic_mbps": round(mbps, 3)}, flags
