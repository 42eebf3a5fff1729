"""Reading and watching a router's line counters (``router.py`` says what and why): one
source per configuration and event loop, its protocol library imported on first use."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import weakref
from typing import TYPE_CHECKING

from agent.methods.common import linkstats
from agent.methods.common.router import CounterSource, Reading, RouterError, delta

if TYPE_CHECKING:
    from agent.runconfig import Router

log = logging.getLogger("netmon.agent.router")

#: Sources per event loop: the protocol clients hold sockets bound to the loop they were
#: first used in.
_SOURCES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                    dict[Router, CounterSource]] = \
    weakref.WeakKeyDictionary()


def source_for(cfg: Router) -> CounterSource:
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


async def read(cfg: Router, quiet: bool = False) -> Reading | None:
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
    is the one over which the line's bytes are known. With ``interface``, each reading
    also carries the probe's own counters read around the query (their mean), so the
    test's own bytes over exactly that span can be subtracted.
    """

    def __init__(self, cfg: Router, interface: str | None = None) -> None:
        self.cfg = cfg
        self.interface = interface
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
            before = linkstats.read_counters(self.interface) if self.interface else None
            got = await read(self.cfg, quiet=warned)
            after = linkstats.read_counters(self.interface) if self.interface else None
            if got is not None and before is not None and after is not None:
                got = dataclasses.replace(got, local=(
                    (before.rx_bytes + after.rx_bytes) // 2,
                    (before.tx_bytes + after.tx_bytes) // 2))
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


async def line_mbps(cfg: Router) -> float | None:
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
