"""``http``: multi-stream HTTP(S) download/upload against a measurement server (our nginx,
or a LibreSpeed server's ``garbage`` / ``empty`` endpoints). See ``common/httpengine.py``;
``https://`` targets use TLS with the certificate verified (``common/tls.py``). Every
result carries the device's ceiling when it is known and the measuring thread's CPU share;
either limit reached flags it ``device_limited`` (``common/device.py``)."""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit

from agent.methods.base import MethodContext, make_result
from agent.methods.common import device, linkstats
from agent.methods.common.guard import MeasureError, guarded
from agent.methods.common.httpengine import EngineConfig, transfer
from agent.methods.common.net import resolve
from agent.methods.common.throughput import CounterWindow, add_direction, add_idle_rtt, directions
from agent.methods.common.tls import client_context
from netmon.contractbase import now_utc
from netmon.declarations import HTTP, Declaration

if TYPE_CHECKING:
    from netmon.methods import HttpOptions
    from netmon.wire import Result


class HttpMethod:
    """Download and/or upload goodput over the steady part of a fixed-duration transfer."""

    decl: ClassVar[Declaration] = HTTP

    async def run(self, ctx: MethodContext, options: HttpOptions) -> list[Result]:
        """One result carrying ``download_mbps`` and/or ``upload_mbps``."""
        async def body() -> list[Result]:
            parts = urlsplit(options.target)
            tls = parts.scheme == "https"
            host, port = parts.hostname or "", parts.port or (443 if tls else 80)
            ssl_context = client_context(options.ca_file) if tls else None
            started, t0 = now_utc(), time.monotonic()
            _, addr = await resolve(host, port, ctx.link, timeout=options.connect_timeout_s)
            ping_host = options.latency_target or addr[0]
            metrics: dict[str, float] = {}
            flags: tuple[str, ...] = ()
            if options.loaded_latency:
                await add_idle_rtt(metrics, ping_host, ctx.link)
            iface = linkstats.interface_for(ctx.link.interface, ctx.link.source_address, addr[0])
            total = 0
            for direction in directions(options.direction):
                window = CounterWindow(iface, router=ctx.link.router)
                cfg = EngineConfig(
                    host=host, port=port, link=ctx.link, direction=direction,  # type: ignore[arg-type]
                    path=options.download_path if direction == "download" else options.upload_path,
                    streams=options.streams, duration_s=options.duration_s,
                    warmup_s=options.warmup_s, sample_interval_s=options.sample_interval_s,
                    connect_timeout_s=options.connect_timeout_s,
                    ping_host=ping_host if options.loaded_latency else None,
                    ping_interval_s=options.latency_interval_s, ssl_context=ssl_context)
                try:
                    res = await transfer(cfg, counters=functools.partial(_mark, window))
                finally:
                    # Stops watching the router's counters, on a failure too.
                    await window.settle()
                total += res.total_bytes
                if res.streams_ok == 0 or res.steady_bytes <= 0:
                    err = res.errors[0] if res.errors else MeasureError(
                        "protocol", f"{direction} moved no data")
                    raise MeasureError(err.code, f"{direction}: {err.message}",
                                       {"bytes": float(total)})
                suffix = "" if direction == "download" else "_upload"
                metrics[f"streams{suffix}"] = float(res.streams_ok)
                metrics[f"cpu{suffix}_s"] = round(res.cpu_s, 4)
                flags += device.add_cpu(metrics, res.cpu_s, res.elapsed_s, options.cpu_bound_pct)
                flags += add_direction(metrics, direction, res.goodput_mbps, res.loaded_rtts,
                                       window, res.steady_bytes, res.steady_s, res.ipv6,
                                       options.cross_traffic_share)
            metrics["bytes"] = float(total)
            ceiling = await device.path_ceiling(metrics, options, iface, ctx.link.modem)
            flags += device.add_ceiling(metrics, ceiling, options.device_ceiling_share)
            flags = device.limited(tuple(dict.fromkeys(flags)))
            return [make_result(ctx, HTTP.name, options.target, started, time.monotonic() - t0,
                                metrics, flags=flags)]
        return await guarded(ctx, HTTP.name, options.target, options.timeout_s, body)


def _mark(window: CounterWindow) -> object:
    """Counter hook called by the engine at the steady window's start, then its end."""
    if window.start is None:
        window.mark_start()
    else:
        window.mark_end()
    return None
