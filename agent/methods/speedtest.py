"""``speedtest``: Speedtest (legacy HTTP protocol) through the speedtest-cli library.

Two modes, chosen by ``target``:

* ``target = "speedtest.net"``: the public service over HTTPS (plain HTTP gets 403 since
  2022); the server comes from ``server_ids`` (first that answers best) or the nearest.
* ``target = "http(s)://host[:port]/path/upload.php"``: a self-hosted Speedtest-compatible
  server (``latency.txt``, ``random{N}x{N}.jpg``, ``upload.php`` beside each other). The
  configuration that speedtest-cli normally fetches from speedtest.net is supplied here, so
  no request leaves for speedtest.net.

speedtest-cli's own figures are reported as they are (total bytes over total time, its
ramp-up included); its latency is doubled back to a round trip, because speedtest-cli
divides the sum of three samples by six.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from agent.methods.base import LinkBinding, MethodContext, make_result
from agent.methods.common import linkstats
from agent.methods.common.guard import MeasureError, guarded
from agent.methods.common.throughput import (
    CounterWindow,
    LoadedSampler,
    add_direction,
    add_idle_rtt,
    directions,
)
from netmon.contractbase import now_utc
from netmon.declarations import SPEEDTEST, SPEEDTEST_NET, Declaration

if TYPE_CHECKING:
    from netmon.contract import ErrorCode
    from netmon.methods import SpeedtestOptions
    from netmon.wire import Result

DOWNLOAD_SIZES = [350, 500, 750, 1000, 1500, 2000, 2500, 3000, 3500, 4000]
#: speedtest.net's usual config (upload ratio 5, maxchunkcount 50): the three largest sizes.
UPLOAD_SIZES = [524288, 1048576, 7340032]
UPLOAD_COUNT = 17


class _StopEvent(threading.Event):
    """speedtest-cli polls ``isSet()`` per 10 KB chunk; Python 3.10+ warns on every call,
    which costs CPU in exactly the loop being measured."""

    def isSet(self) -> bool:  # the name speedtest-cli calls
        return self.is_set()


def _config(options: SpeedtestOptions) -> dict[str, Any]:
    """What speedtest-cli's get_config() would have built from speedtest-config.php."""
    upload_max = UPLOAD_COUNT * len(UPLOAD_SIZES)
    return {
        "client": {"ip": "", "lat": "0", "lon": "0", "isp": "", "isprating": "", "rating": "",
                   "ispdlavg": "", "ispulavg": "", "loggedin": "0", "country": ""},
        "ignore_servers": [],
        "sizes": {"upload": UPLOAD_SIZES, "download": DOWNLOAD_SIZES},
        "counts": {"upload": UPLOAD_COUNT,
                   "download": options.threads_per_url},
        "threads": {"upload": options.upload_threads, "download": options.download_threads},
        "length": {"upload": options.length_s, "download": options.length_s},
        "upload_max": upload_max,
    }


def _classify(exc: BaseException) -> ErrorCode:
    text = f"{type(exc).__name__} {exc}".lower()
    if "403" in text or "forbidden" in text:
        return "forbidden"
    if "429" in text or "503" in text:
        return "server_busy"
    if "refused" in text:
        return "refused"
    if "name or service" in text or "resolution" in text or "getaddrinfo" in text:
        return "dns"
    if "timed out" in text or "timeout" in text:
        return "timeout"
    if "unreachable" in text or "no route" in text or "bestserver" in text:
        return "unreachable"
    return "protocol"


def _interface_address(interface: str) -> str | None:
    """First IPv4 address of an interface (speedtest-cli can bind only an address)."""
    out = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", interface],
                         capture_output=True, text=True, check=False, timeout=5).stdout.split()
    return out[out.index("inet") + 1].split("/")[0] if "inet" in out else None


class _Run:
    """The blocking part, run in a worker thread."""

    def __init__(self, options: SpeedtestOptions, source: str | None,
                 stop: threading.Event) -> None:
        self.options = options
        self.source = source
        self.stop = stop

    def open(self) -> Any:
        import speedtest  # type: ignore[import-untyped]

        options = self.options
        if options.target == SPEEDTEST_NET:
            st = speedtest.Speedtest(source_address=self.source, secure=options.secure,
                                     shutdown_event=self.stop, timeout=10)
            st.config.update(_config(options) | {"client": st.config["client"]})
            if options.server_ids:
                st.get_servers(options.server_ids)
            st.get_best_server()
            return st

        config = _config(options)

        class SelfHosted(speedtest.Speedtest):  # type: ignore[misc]
            """Never fetches speedtest-config.php: the config is ours."""

            def get_config(self) -> dict[str, Any]:
                self.config.update(config)
                self.lat_lon = (0.0, 0.0)
                return dict(self.config)

        secure = urlsplit(options.target).scheme == "https"
        st = SelfHosted(source_address=self.source, secure=secure, shutdown_event=self.stop,
                        timeout=10)
        host = urlsplit(options.target).netloc
        server = {"url": options.target, "id": "0", "name": "self-hosted", "sponsor": host,
                  "host": host, "country": "", "cc": "", "lat": "0", "lon": "0", "d": 0.0}
        st.get_best_server([server])
        if st.best.get("latency", 3600) >= 3600 * 1000 / 2:
            raise MeasureError("unreachable", f"{options.target}: latency.txt did not answer "
                                              "test=test")
        return st


class SpeedtestMethod:
    """Download / upload / latency the way speedtest-cli measures them."""

    decl: ClassVar[Declaration] = SPEEDTEST

    async def run(self, ctx: MethodContext, options: SpeedtestOptions) -> list[Result]:
        """One result with ``download_mbps`` / ``upload_mbps`` / ``rtt_ms``."""
        stop = _StopEvent()

        async def body() -> list[Result]:
            try:
                import speedtest  # noqa: F401
            except ImportError:
                raise MeasureError("tool_missing", "speedtest-cli is not installed "
                                                   "(pip install speedtest-cli)") from None
            started, t0 = now_utc(), time.monotonic()
            source = ctx.link.source_address or (
                _interface_address(ctx.link.interface) if ctx.link.interface else None)
            if ctx.link.interface and not source:
                raise MeasureError("unreachable", f"interface {ctx.link.interface} has no IPv4 "
                                                  "address to bind speedtest-cli to")
            runner = _Run(options, source, stop)
            try:
                st = await asyncio.to_thread(runner.open)
            except MeasureError:
                raise
            except Exception as exc:
                raise MeasureError(_classify(exc), f"speedtest: {type(exc).__name__}: "
                                                   f"{exc}") from None
            server_url = str(st.best["url"])
            server_host = urlsplit(server_url).hostname or ""
            metrics: dict[str, float] = {"rtt_ms": round(float(st.results.ping) * 2, 3)}
            with contextlib.suppress(Exception):
                metrics["server_id"] = float(int(st.best.get("id", 0)))
            flags: tuple[str, ...] = ()
            ping_host = options.latency_target or server_host
            if options.loaded_latency and ping_host:
                await add_idle_rtt(metrics, ping_host, _link_with(ctx.link, source))
            iface = linkstats.interface_for(ctx.link.interface, source, _ip_of(server_host))
            total = 0.0
            for direction in directions(options.direction):
                window = CounterWindow(iface, router=ctx.link.router)
                sampler = LoadedSampler(ping_host, _link_with(ctx.link, source),
                                        options.latency_interval_s) \
                    if options.loaded_latency and ping_host else None
                try:
                    window.mark_start()
                    w0 = time.perf_counter()
                    if sampler:
                        sampler.start()
                    try:
                        bps = await asyncio.to_thread(
                            st.download if direction == "download" else st.upload)
                    except Exception as exc:
                        raise MeasureError(_classify(exc), f"speedtest {direction}: "
                                                           f"{type(exc).__name__}: {exc}") from None
                    finally:
                        if sampler:
                            await sampler.stop()
                    moved = float(st.results.bytes_received if direction == "download"
                                  else st.results.bytes_sent)
                    if moved <= 0:
                        raise MeasureError("protocol", f"speedtest {direction} moved no data "
                                                       f"from {server_url}")
                    mbps = float(bps) / 1e6
                    if direction == "upload" and iface:
                        # speedtest-cli counts bytes handed to the socket: what still sits in the
                        # kernel send queues when its clock stops is counted but not yet sent.
                        # Stop our clock when the link has drained instead.
                        metrics["speedtest_upload_mbps"] = round(mbps, 3)
                        drain = await _drain_time(iface, mbps)
                        mbps = moved * 8 / (moved * 8 / (mbps * 1e6) + drain) / 1e6
                        metrics["upload_drain_s"] = round(drain, 3)
                    wall = time.perf_counter() - w0
                    window.mark_end()
                finally:
                    # Stops watching the router's counters, on a failure too.
                    await window.settle()
                total += moved
                flags += add_direction(metrics, direction, mbps,
                                       sampler.rtts if sampler else [], window, moved, wall,
                                       False, options.cross_traffic_share)
            metrics["bytes"] = total
            return [make_result(ctx, SPEEDTEST.name, options.target, started,
                                time.monotonic() - t0, metrics, flags=flags)]

        try:
            return await guarded(ctx, SPEEDTEST.name, options.target, options.timeout_s, body)
        finally:
            stop.set()  # worker threads stop reading at their next chunk


async def _drain_time(iface: str, mbps: float, limit: float = 2.0) -> float:
    """Seconds until the interface's transmit rate falls below a tenth of ``mbps``."""
    t0 = time.perf_counter()
    prev = linkstats.read_counters(iface)
    if prev is None:
        return 0.0
    last_busy = t0
    while time.perf_counter() - t0 < limit:
        await asyncio.sleep(0.02)
        cur = linkstats.read_counters(iface)
        if cur is None:
            break
        rate = (cur.tx_bytes - prev.tx_bytes) * 8 / 0.02 / 1e6
        prev = cur
        if rate > mbps / 10:
            last_busy = time.perf_counter()
        elif time.perf_counter() - last_busy > 0.06:
            break
    return max(0.0, last_busy - t0)


def _ip_of(host: str) -> str | None:
    import socket
    try:
        return str(socket.getaddrinfo(host, None)[0][4][0]) if host else None
    except OSError:
        return None


def _link_with(link: LinkBinding, source: str | None) -> LinkBinding:
    """The link as speedtest-cli sees it (bound by address), for the ICMP probes too."""
    return link if link.source_address or not source else LinkBinding(
        link.name, link.access, link.isp, link.interface, source)
