"""``tcp``: TCP connect time (SYN -> SYN/ACK as the kernel sees it) to host:port."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, ClassVar

from agent.methods.base import MethodContext, make_result
from agent.methods.common.guard import MeasureError, guarded
from agent.methods.common.latency import sample_series
from agent.methods.common.net import connect_tcp, target_host_port
from agent.methods.common.rtt import rtt_metrics
from netmon.contractbase import now_utc
from netmon.declarations import TCP, Declaration

if TYPE_CHECKING:
    from netmon.methods import TcpOptions
    from netmon.wire import Result


class TcpMethod:
    """One fresh connection per sample; the connection is closed right away."""

    decl: ClassVar[Declaration] = TCP

    async def run(self, ctx: MethodContext, options: TcpOptions) -> list[Result]:
        """Connect ``count`` times; refused/unreachable on every try becomes that error."""
        async def body() -> list[Result]:
            hp = target_host_port(options.target, options.port)
            started, t0 = now_utc(), time.monotonic()
            codes: list[MeasureError] = []

            async def probe() -> float | None:
                try:
                    sock, seconds = await connect_tcp(hp.host, hp.port, ctx.link,
                                                      options.probe_timeout_s)
                except MeasureError as exc:
                    codes.append(exc)
                    raise
                sock.close()
                return seconds * 1000.0

            rtts, sent, _ = await sample_series(probe, options.count, options.interval_s)
            metrics = rtt_metrics(rtts, sent)
            error = None
            if not rtts:
                first = codes[0] if codes else MeasureError("unreachable", "no connection")
                error = (first.code, f"{sent} connection attempts failed; first: {first.message}")
            return [make_result(ctx, TCP.name, options.target, started, time.monotonic() - t0,
                                metrics, error)]
        return await guarded(ctx, TCP.name, options.target, options.timeout_s, body)
