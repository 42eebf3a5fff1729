"""``icmp``: ICMP echo RTT, jitter and loss (ping socket, or raw socket as root)."""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, ClassVar

from agent.methods.base import MethodContext, make_result
from agent.methods.common.guard import guarded
from agent.methods.common.icmp import ping_series
from agent.methods.common.rtt import rtt_metrics
from netmon.contractbase import now_utc
from netmon.declarations import ICMP, Declaration

if TYPE_CHECKING:
    from netmon.methods import IcmpOptions
    from netmon.wire import Result

FAMILIES = {"auto": socket.AF_UNSPEC, "ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}


class IcmpMethod:
    """Echo requests sent ``interval_s`` apart; replies may overlap later requests."""

    decl: ClassVar[Declaration] = ICMP

    async def run(self, ctx: MethodContext, options: IcmpOptions) -> list[Result]:
        """Ping the target; all probes lost is an ``unreachable`` error with loss_pct=100."""
        async def body() -> list[Result]:
            started, t0 = now_utc(), time.monotonic()
            rtts, sent = await ping_series(options.target, ctx.link, options.count,
                                           options.interval_s, options.probe_timeout_s,
                                           FAMILIES[options.family])
            metrics = rtt_metrics(rtts, sent)
            error = None if rtts else (
                "unreachable", f"no echo reply from {options.target} to {sent} requests")
            return [make_result(ctx, ICMP.name, options.target, started, time.monotonic() - t0,
                                metrics, error)]  # type: ignore[arg-type]
        return await guarded(ctx, ICMP.name, options.target, options.timeout_s, body)
