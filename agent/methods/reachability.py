"""``reachability``: up/down and RTT of configured endpoints (e.g. the provincial data
centre over the government data network, TSLCD). One result per endpoint.

An endpoint is ``host:port`` (TCP connect) or ``icmp:host`` (echo). ``reachable`` is 1
when at least one probe got an answer; a down endpoint is also an error result whose
code says why (refused, unreachable, timeout, dns).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, ClassVar

from agent.methods.base import MethodContext, make_result
from agent.methods.common.guard import MeasureError, guarded
from agent.methods.common.icmp import ping_series
from agent.methods.common.latency import sample_series
from agent.methods.common.net import connect_tcp
from agent.methods.common.rtt import rtt_metrics
from netmon.contractbase import now_utc
from netmon.declarations import REACHABILITY, Declaration, split_host_port

if TYPE_CHECKING:
    from netmon.contract import ErrorCode
    from netmon.methods import ReachabilityOptions
    from netmon.wire import Result


class ReachabilityMethod:
    """Probe every endpoint concurrently."""

    decl: ClassVar[Declaration] = REACHABILITY

    async def _one(self, ctx: MethodContext, options: ReachabilityOptions, endpoint: str
                   ) -> Result:
        started, t0 = now_utc(), time.monotonic()
        failures: list[MeasureError] = []
        try:
            if endpoint.startswith("icmp:"):
                rtts, sent = await ping_series(endpoint[5:], ctx.link, options.count,
                                               options.interval_s, options.probe_timeout_s)
                if not rtts:
                    failures.append(MeasureError("unreachable", f"no echo reply from "
                                                                f"{endpoint[5:]}"))
            else:
                hp = split_host_port(endpoint, 0)

                async def probe() -> float | None:
                    try:
                        sock, seconds = await connect_tcp(hp.host, hp.port, ctx.link,
                                                          options.probe_timeout_s)
                    except MeasureError as exc:
                        failures.append(exc)
                        return None
                    sock.close()
                    return seconds * 1000.0

                rtts, sent, _ = await sample_series(probe, options.count, options.interval_s)
        except MeasureError as exc:
            rtts, sent = [], options.count
            failures.append(exc)
        metrics = rtt_metrics(rtts, sent) | {"reachable": 1.0 if rtts else 0.0}
        error: tuple[ErrorCode, str] | None = None
        if not rtts:
            first = failures[0] if failures else MeasureError("unreachable", "no answer")
            error = (first.code, f"{endpoint} is down: {first.message}")
        return make_result(ctx, REACHABILITY.name, endpoint, started, time.monotonic() - t0,
                           metrics, error)

    async def run(self, ctx: MethodContext, options: ReachabilityOptions
                  ) -> list[Result]:
        """One result per endpoint, in configuration order."""
        endpoints = list(dict.fromkeys([options.target, *options.endpoints]))

        async def body() -> list[Result]:
            return list(await asyncio.gather(*(self._one(ctx, options, e) for e in endpoints)))
        return await guarded(ctx, REACHABILITY.name, options.target, options.timeout_s, body)
