"""The sampling loop shared by the latency methods (tcp, dns, http_latency, reachability):
``count`` probes ``interval_s`` apart, each with ``probe_timeout_s`` (the keys of
:class:`netmon.methods.LatencyOptions`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from agent.methods.common.guard import MeasureError


async def sample_series(probe: Callable[[], Awaitable[float | None]], count: int,
                        interval: float) -> tuple[list[float], int, list[str]]:
    """Run ``probe`` ``count`` times, one every ``interval`` s (a slow probe delays the next:
    probes of one connection-oriented test never overlap). A probe returns the RTT in ms or
    None (lost); a MeasureError counts as lost and its words are kept.
    Returns (rtts, sent, error messages)."""
    rtts: list[float] = []
    errors: list[str] = []
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    for _ in range(count):
        try:
            rtt = await probe()
        except MeasureError as exc:
            errors.append(exc.message)
            rtt = None
        if rtt is not None:
            rtts.append(rtt)
        next_at += interval
        delay = next_at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            next_at = loop.time()
    return rtts, count, errors
