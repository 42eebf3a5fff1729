"""``http``: multi-stream HTTP download/upload against a measurement server (our nginx,
or a LibreSpeed server's ``garbage`` / ``empty`` endpoints). See ``_httpengine``."""

from __future__ import annotations

import functools
import time
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from agent.methods.base import MethodContext, make_result
from agent.methods.common import linkstats
from agent.methods.common.guard import MeasureError, guarded
from agent.methods.common.httpengine import EngineConfig, transfer
from agent.methods.common.net import resolve
from agent.methods.common.throughput import (
    CounterWindow,
    ThroughputOptions,
    add_direction,
    add_idle_rtt,
    directions,
)
from netmon.contract import ResultMessage, now_utc


class HttpOptions(ThroughputOptions):
    """``[tests.<name>]`` keys for ``method = "http"``; ``target`` is the server's base URL
    (``http://host[:port]``)."""

    direction: Literal["download", "upload", "both"] = "both"
    download_path: str = Field("/download/blob.bin", pattern=r"^/\S*$",
                               description="object to GET (LibreSpeed: /garbage.php?ckSize=100)")
    upload_path: str = Field("/upload", pattern=r"^/\S*$",
                             description="sink to POST to (LibreSpeed: /empty.php)")
    streams: int = Field(4, ge=1, le=64, description="parallel connections")
    duration_s: float = Field(10.0, ge=1, le=120, description="per direction, warm-up included")
    warmup_s: float = Field(2.0, ge=0, le=60, description="slow start excluded from goodput")
    sample_interval_s: float = Field(0.1, ge=0.05, le=0.25)
    connect_timeout_s: float = Field(5.0, gt=0, le=60)
    timeout_s: float = Field(90.0, gt=0, le=3600, description="hard limit for the whole test")

    @field_validator("target")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("target must be an http:// URL of the measurement server "
                             "(https is not supported by the http engine)")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _warmup_shorter(self) -> HttpOptions:
        if self.warmup_s >= self.duration_s:
            raise ValueError(f"warmup_s ({self.warmup_s:g}) must be shorter than duration_s "
                             f"({self.duration_s:g})")
        runs = 2 if self.direction == "both" else 1
        need = runs * (self.duration_s + self.connect_timeout_s) + 2
        if self.timeout_s < need:
            raise ValueError(f"timeout_s ({self.timeout_s:g}) is shorter than the test needs "
                             f"({need:g} s for direction={self.direction}, "
                             f"duration_s={self.duration_s:g})")
        return self


class HttpMethod:
    """Download and/or upload goodput over the steady part of a fixed-duration transfer."""

    name: ClassVar[Literal["http"]] = "http"
    kind: ClassVar[Literal["throughput"]] = "throughput"
    Options: ClassVar[type[HttpOptions]] = HttpOptions

    async def run(self, ctx: MethodContext, options: HttpOptions) -> list[ResultMessage]:
        """One result carrying ``download_mbps`` and/or ``upload_mbps``."""
        async def body() -> list[ResultMessage]:
            parts = urlsplit(options.target)
            host, port = parts.hostname or "", parts.port or 80
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
                window = CounterWindow(iface)
                cfg = EngineConfig(
                    host=host, port=port, link=ctx.link, direction=direction,  # type: ignore[arg-type]
                    path=options.download_path if direction == "download" else options.upload_path,
                    streams=options.streams, duration_s=options.duration_s,
                    warmup_s=options.warmup_s, sample_interval_s=options.sample_interval_s,
                    connect_timeout_s=options.connect_timeout_s,
                    ping_host=ping_host if options.loaded_latency else None,
                    ping_interval_s=options.latency_interval_s)
                res = await transfer(cfg, counters=functools.partial(_mark, window))
                total += res.total_bytes
                if res.streams_ok == 0 or res.steady_bytes <= 0:
                    err = res.errors[0] if res.errors else MeasureError(
                        "protocol", f"{direction} moved no data")
                    raise MeasureError(err.code, f"{direction}: {err.message}",
                                       {"bytes": float(total)})
                suffix = "" if direction == "download" else "_upload"
                metrics[f"streams{suffix}"] = float(res.streams_ok)
                metrics[f"cpu{suffix}_s"] = round(res.cpu_s, 4)
                flags += add_direction(metrics, direction, res.goodput_mbps, res.loaded_rtts,
                                       window, res.steady_bytes, res.steady_s, res.ipv6,
                                       options.cross_traffic_share)
            metrics["bytes"] = float(total)
            return [make_result(ctx, "http", options.target, started, time.monotonic() - t0,
                                metrics, flags=flags)]
        return await guarded(ctx, "http", options.target, options.timeout_s, body)


def _mark(window: CounterWindow) -> object:
    """Counter hook called by the engine at the steady window's start, then its end."""
    if window.start is None:
        window.mark_start()
    else:
        window.mark_end()
    return None
