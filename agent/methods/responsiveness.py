"""``responsiveness``: round trips per minute (RPM) under working conditions, after the
IETF draft "Responsiveness under Working Conditions" (draft-ietf-ippm-responsiveness),
in a simplified form documented in ``docs/methods.md``.

1. Idle: ``idle_probes`` probes, one every ``probe_interval_s``, on an idle link.
2. Working: ``streams`` load-generating connections GET ``load_path`` (or POST to
   ``upload_path``) through the HTTP engine (``common/httpengine.py``, its own thread)
   for ``duration_s``; after ``warmup_s`` (queues filled) a probe starts every
   ``probe_interval_s`` until the load ends.

A probe is a *new* connection to the same server (the draft's "foreign" probe): its TCP
connect (SYN -> SYN/ACK), its TLS handshake for an https target, and one HTTP GET of
``small_path`` (request -> whole response), each a round trip through the link's queues.
Per component the trimmed mean drops the slowest ``trim_pct`` % (the draft's
95th-percentile trimmed mean); RPM = 60000 / the mean of the components' trimmed means
in ms, i.e. how many such round trips fit in a minute. The draft's "self" probes (HTTP/2
requests on the loaded connections) are not made: our load is HTTP/1.1 with pipelined
requests, where a probe would wait behind a whole object.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit

from agent.methods.base import LinkBinding, MethodContext, make_result
from agent.methods.common import device
from agent.methods.common.guard import MeasureError, guarded
from agent.methods.common.httpengine import EngineConfig, EngineResult, parse_head, transfer
from agent.methods.common.net import connect_addr, resolve
from agent.methods.common.tls import client_context, tls_error
from netmon.contractbase import now_utc
from netmon.declarations import RESPONSIVENESS, Declaration

if TYPE_CHECKING:
    from netmon.methods import ResponsivenessOptions
    from netmon.wire import Result

#: The components of a probe, in the order they happen (``tls`` only for https).
COMPONENTS = ("tcp", "tls", "http")
#: Metric name of each component's trimmed mean (loaded; idle ones are ``idle_`` + name).
METRIC = {"tcp": "tcp_connect_ms", "tls": "tls_handshake_ms", "http": "http_rtt_ms"}


@dataclass(frozen=True)
class Server:
    """Where probes go: resolved once, so a probe's time holds no name resolution."""

    host: str
    port: int
    family: int
    addr: tuple[str, int]
    link: LinkBinding
    ssl_context: ssl.SSLContext | None
    request: bytes
    timeout: float


@dataclass
class Series:
    """Probe results of one phase: per component the round trips (ms), and failures."""

    samples: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in COMPONENTS})
    failed: int = 0
    errors: list[MeasureError] = field(default_factory=list)
    small_bytes: int = 0

    @property
    def probes(self) -> int:
        """Probes that completed every component."""
        return len(self.samples["http"])


def trimmed_mean(values: list[float], trim_pct: float) -> float:
    """Mean after dropping the largest ``trim_pct`` % of the values (at least one kept)."""
    ordered = sorted(values)
    keep = max(1, len(ordered) - math.floor(len(ordered) * trim_pct / 100))
    return statistics.fmean(ordered[:keep])


def rpm_of(series: Series, trim_pct: float) -> tuple[float, dict[str, float]]:
    """RPM and each measured component's trimmed mean (ms) of a series with probes."""
    means = {c: trimmed_mean(v, trim_pct) for c, v in series.samples.items() if v}
    # A round trip under a few microseconds would make RPM explode; it is a floor, not
    # a measurement (the clock and the loop are not that precise).
    per_round_trip = max(statistics.fmean(means.values()), 0.001)
    return 60000.0 / per_round_trip, means


async def probe(server: Server) -> tuple[dict[str, float], int]:
    """One new connection: TCP connect, TLS handshake (https), GET of the small object.
    Returns each component's round trip in ms and the bytes received."""
    sock, connect_s = await connect_addr(server.family, server.addr, server.link,
                                         server.timeout, f"{server.host}:{server.port}")
    out = {"tcp": connect_s * 1000}
    writer: asyncio.StreamWriter | None = None
    try:
        t0 = time.perf_counter()
        try:
            if server.ssl_context is not None:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(
                    sock=sock, ssl=server.ssl_context, server_hostname=server.host,
                    ssl_handshake_timeout=server.timeout), server.timeout)
                out["tls"] = (time.perf_counter() - t0) * 1000
            else:
                reader, writer = await asyncio.open_connection(sock=sock)
        except MeasureError:
            raise
        except Exception as exc:
            raise tls_error(exc, server.host, "probe connection") from None
        assert writer is not None  # set by both branches above
        t0 = time.perf_counter()
        writer.write(server.request)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), server.timeout)
            length, chunked, error = parse_head(head[:-4], server.host)
            if error is not None:
                raise error
            if chunked or length is None:
                raise MeasureError("protocol", f"{server.host}: the small object must be "
                                               "sent with a Content-Length")
            body = await asyncio.wait_for(reader.readexactly(length), server.timeout)
        except TimeoutError:
            raise MeasureError("timeout", f"probe GET to {server.host} got no answer in "
                                          f"{server.timeout:g}s") from None
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as exc:
            raise MeasureError("protocol", f"probe GET to {server.host}: {exc}") from None
        out["http"] = (time.perf_counter() - t0) * 1000
        return out, len(head) + len(body)
    finally:
        if writer is not None:
            # abort, not close: a TLS close_notify would wait behind the loaded queue.
            writer.transport.abort()
        else:
            sock.close()


def _record(series: Series, task: asyncio.Task[tuple[dict[str, float], int]]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        series.failed += 1
        series.errors.append(exc if isinstance(exc, MeasureError)
                             else MeasureError("internal", f"{type(exc).__name__}: {exc}"))
        return
    times, nbytes = task.result()
    for component, ms in times.items():
        series.samples[component].append(ms)
    series.small_bytes += nbytes


async def probe_while(server: Server, interval: float, until: float,
                      count: int | None = None,
                      stop: asyncio.Future[EngineResult] | None = None) -> Series:
    """Start a probe every ``interval`` s until the monotonic time ``until`` (or ``count``
    probes, or ``stop`` done); wait for those in flight (each bounded by its timeout)."""
    series = Series()
    tasks: list[asyncio.Task[tuple[dict[str, float], int]]] = []
    next_at = time.monotonic()
    while time.monotonic() < until and (count is None or len(tasks) < count):
        if stop is not None and stop.done():
            break
        task = asyncio.ensure_future(probe(server))
        task.add_done_callback(lambda t: _record(series, t))
        tasks.append(task)
        # Probes start on a fixed grid: one slow probe does not delay the next.
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    if tasks:
        await asyncio.wait(tasks)
    return series


class ResponsivenessMethod:
    """Idle and working RPM against the measurement server."""

    decl: ClassVar[Declaration] = RESPONSIVENESS

    async def run(self, ctx: MethodContext, options: ResponsivenessOptions
                  ) -> list[Result]:
        """One result carrying ``rpm`` (under load), ``idle_rpm`` and the components."""
        async def body() -> list[Result]:
            parts = urlsplit(options.target)
            tls = parts.scheme == "https"
            host, port = parts.hostname or "", parts.port or (443 if tls else 80)
            started, t0 = now_utc(), time.monotonic()
            family, addr = await resolve(host, port, ctx.link,
                                         timeout=options.connect_timeout_s)
            hostport = f"[{host}]" if ":" in host else host
            if port not in (80, 443):
                hostport = f"{hostport}:{port}"
            server = Server(
                host, port, family, addr, ctx.link, client_context(options.ca_file) if tls
                else None,
                (f"GET {options.small_path} HTTP/1.1\r\nHost: {hostport}\r\n"
                 "User-Agent: hatinh-netmon\r\nCache-Control: no-cache\r\n"
                 "Connection: close\r\n\r\n").encode(), options.connect_timeout_s)

            idle = await probe_while(server, options.probe_interval_s, math.inf,
                                     count=options.idle_probes)
            if idle.probes == 0:
                err = idle.errors[0]
                raise MeasureError(err.code, f"idle probes: {err.message}",
                                   {"bytes": float(idle.small_bytes)})

            cfg = EngineConfig(
                host=host, port=port, link=ctx.link, direction=options.direction,
                path=options.load_path if options.direction == "download"
                else options.upload_path,
                streams=options.streams, duration_s=options.duration_s,
                warmup_s=options.warmup_s, connect_timeout_s=options.connect_timeout_s,
                ssl_context=server.ssl_context)
            load = asyncio.ensure_future(transfer(cfg))
            try:
                # The engine's clock starts once its connections are open; probing from
                # warmup_s on our clock starts a little earlier at worst, never later.
                load_t0 = time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(load), options.warmup_s)
                working = await probe_while(server, options.probe_interval_s,
                                            load_t0 + options.duration_s, stop=load)
                res = await load
            finally:
                if not load.done():
                    load.cancel()
                    with contextlib.suppress(BaseException):
                        await load
            moved = float(res.total_bytes + idle.small_bytes + working.small_bytes)
            if res.streams_ok == 0 or res.steady_bytes <= 0:
                err = res.errors[0] if res.errors else MeasureError(
                    "protocol", f"{options.direction} load moved no data")
                raise MeasureError(err.code, f"load: {err.message}", {"bytes": moved})
            if working.probes == 0:
                err = working.errors[0] if working.errors else MeasureError(
                    "timeout", "no probe completed under load")
                raise MeasureError(err.code, f"probes under load: {err.message}",
                                   {"bytes": moved})

            metrics: dict[str, float] = {}
            idle_rpm, idle_means = rpm_of(idle, options.trim_pct)
            rpm, means = rpm_of(working, options.trim_pct)
            metrics["rpm"] = round(rpm, 1)
            metrics["idle_rpm"] = round(idle_rpm, 1)
            for component, ms in means.items():
                metrics[METRIC[component]] = round(ms, 3)
            for component, ms in idle_means.items():
                metrics[f"idle_{METRIC[component]}"] = round(ms, 3)
            metrics["probes"] = float(working.probes)
            metrics["probes_idle"] = float(idle.probes)
            metrics["probes_failed"] = float(working.failed + idle.failed)
            metrics["load_mbps"] = round(res.goodput_mbps, 3)
            metrics["load_streams"] = float(res.streams_ok)
            metrics["bytes"] = moved
            # No interface here: no negotiated speed, but a modem's maximum applies.
            ceiling = await device.path_ceiling(metrics, options, None, ctx.link.modem)
            flags = device.add_ceiling(metrics, ceiling, options.device_ceiling_share,
                                       measured={options.direction: res.goodput_mbps})
            flags = device.limited(flags + device.add_cpu(metrics, res.cpu_s, res.elapsed_s,
                                                          options.cpu_bound_pct))
            return [make_result(ctx, RESPONSIVENESS.name, options.target, started,
                                time.monotonic() - t0, metrics, flags=flags)]
        return await guarded(ctx, RESPONSIVENESS.name, options.target, options.timeout_s,
                             body)
