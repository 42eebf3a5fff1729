"""Options and the sampling loop shared by the latency methods (icmp, tcp, dns,
http_latency): ``count`` probes ``interval_s`` apart, each with ``probe_timeout_s``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from pydantic import Field

from agent.methods.base import MethodOptions
from agent.methods.common.guard import MeasureError


class LatencyOptions(MethodOptions):
    """Keys every latency method has."""

    count: int = Field(10, ge=1, le=1000, description="probes per test")
    interval_s: float = Field(0.2, ge=0.005, le=60, description="seconds between probes")
    probe_timeout_s: float = Field(2.0, gt=0, le=60, description="wait for one answer")
    timeout_s: float = Field(60.0, gt=0, le=3600, description="hard limit for the whole test")


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
