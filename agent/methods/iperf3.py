"""``iperf3``: the iperf3 binary with ``-J`` against a configured server.

Download is ``-R`` (the server sends), upload is the default direction. Goodput is
``end.sum_received`` (what arrived, after the omitted warm-up); retransmits come from the
sender; RTT comes from the sender's TCP_INFO, which in reverse mode is on the server and
only reachable with ``--get-server-output`` when the server runs with ``-J``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import TYPE_CHECKING, Any, ClassVar

from agent.methods.base import MethodContext, make_result
from agent.methods.common import device, linkstats
from agent.methods.common.guard import MeasureError, guarded
from agent.methods.common.net import resolve, target_host_port
from agent.methods.common.proc import run_tool
from agent.methods.common.throughput import (
    CounterWindow,
    LoadedSampler,
    add_direction,
    add_idle_rtt,
    directions,
)
from netmon.contractbase import now_utc
from netmon.declarations import IPERF3, Declaration

if TYPE_CHECKING:
    from netmon.contract import ErrorCode
    from netmon.methods import Iperf3Options
    from netmon.wire import Result


def classify(text: str) -> ErrorCode:
    """Map iperf3's error words to a contract error code."""
    low = text.lower()
    if "busy" in low:
        return "server_busy"
    if "refused" in low:
        return "refused"
    if "no route" in low or "unreachable" in low or "cannot assign" in low or \
            "no such device" in low:
        return "unreachable"
    if "resolve" in low or "name or service" in low or "unknown host" in low or \
            "temporary failure in name" in low:
        return "dns"
    if "timed out" in low or "timeout" in low:
        return "timeout"
    if "permission" in low or "not permitted" in low or "authentication" in low:
        return "forbidden"
    return "protocol"


def parse_report(doc: dict[str, Any], reverse: bool) -> dict[str, float]:
    """Metrics from one ``iperf3 -J`` report (raises MeasureError on an error report)."""
    if doc.get("error"):
        raise MeasureError(classify(str(doc["error"])), f"iperf3: {doc['error']}")
    end = doc.get("end") or {}
    received = end.get("sum_received") or {}
    sent = end.get("sum_sent") or {}
    if "bits_per_second" not in received:
        raise MeasureError("protocol", "iperf3 report has no end.sum_received")
    out = {
        "mbps": received["bits_per_second"] / 1e6,
        "measured_bytes": float(received.get("bytes", 0)),
        "retransmits": float(sent.get("retransmits", 0) or 0),
        # Every byte moved, omitted warm-up included (data budgets count it all).
        "all_bytes": float(sum((iv.get("sum") or {}).get("bytes", 0)
                               for iv in doc.get("intervals") or [])),
        "seconds": float(sum((iv.get("sum") or {}).get("seconds", 0)
                             for iv in doc.get("intervals") or [])),
    }
    cpu = (end.get("cpu_utilization_percent") or {}).get("host_total")
    if isinstance(cpu, int | float) and cpu >= 0:
        # iperf3's own process (user+sys over the test): the probe's measuring CPU.
        out["cpu_pct"] = float(cpu)
    sender_streams = (end.get("streams") or []) if not reverse else \
        ((doc.get("server_output_json") or {}).get("end") or {}).get("streams") or []
    rtts = [s["sender"]["mean_rtt"] for s in sender_streams
            if (s.get("sender") or {}).get("mean_rtt")]
    if rtts:
        out["rtt_ms"] = statistics.median(rtts) / 1000.0
        mins = [s["sender"]["min_rtt"] for s in sender_streams if s["sender"].get("min_rtt")]
        maxs = [s["sender"]["max_rtt"] for s in sender_streams if s["sender"].get("max_rtt")]
        if mins:
            out["rtt_min_ms"] = min(mins) / 1000.0
        if maxs:
            out["rtt_max_ms"] = max(maxs) / 1000.0
    return out


class Iperf3Method:
    """Download (-R) and/or upload against an iperf3 server, retrying while it is busy."""

    decl: ClassVar[Declaration] = IPERF3

    def argv(self, ctx: MethodContext, options: Iperf3Options, host: str, port: int,
             reverse: bool) -> list[str]:
        """The iperf3 command line for one direction."""
        argv = [options.binary, "-c", host, "-p", str(port), "-J", "-t", str(options.duration_s),
                "-O", str(options.omit_s), "-P", str(options.streams), "--get-server-output",
                "--connect-timeout", "5000"]
        if reverse:
            argv.append("-R")
        if ctx.link.interface:
            argv += ["--bind-dev", ctx.link.interface]
        if ctx.link.source_address:
            argv += ["-B", ctx.link.source_address]
        return argv

    async def _one(self, ctx: MethodContext, options: Iperf3Options, host: str, port: int,
                   reverse: bool, window: CounterWindow, ping_host: str | None
                   ) -> tuple[dict[str, float], list[float], float]:
        argv = self.argv(ctx, options, host, port, reverse)
        wait = options.busy_backoff_s
        limit = options.duration_s + options.omit_s + 20
        for attempt in range(options.busy_retries + 1):
            sampler = LoadedSampler(ping_host, ctx.link, options.latency_interval_s) \
                if ping_host else None
            starter = None
            if sampler:
                # Sample only once the omitted warm-up is over: the link is saturated then.
                async def start_later(s: LoadedSampler = sampler) -> None:
                    await asyncio.sleep(options.omit_s + 0.3)
                    s.start()
                starter = asyncio.ensure_future(start_later())
            window.mark_start()
            t0 = time.perf_counter()
            try:
                out = await run_tool(argv, limit)
            finally:
                if starter:
                    starter.cancel()
                if sampler:
                    await sampler.stop()
            window.mark_end()
            wall = time.perf_counter() - t0
            try:
                doc = json.loads(out.stdout)
            except ValueError:
                words = (out.stderr or out.stdout).strip()[-500:] or f"exit {out.returncode}"
                raise MeasureError(classify(words), f"iperf3: {words}") from None
            try:
                return parse_report(doc, reverse), (sampler.rtts if sampler else []), wall
            except MeasureError as exc:
                if exc.code != "server_busy" or attempt == options.busy_retries:
                    raise
            await asyncio.sleep(wait)
            wait *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    async def run(self, ctx: MethodContext, options: Iperf3Options) -> list[Result]:
        """One result carrying ``download_mbps`` and/or ``upload_mbps``."""
        async def body() -> list[Result]:
            hp = target_host_port(options.target, options.port)
            started, t0 = now_utc(), time.monotonic()
            _, addr = await resolve(hp.host, hp.port, ctx.link)
            ping_host = (options.latency_target or addr[0]) if options.loaded_latency else None
            metrics: dict[str, float] = {}
            flags: tuple[str, ...] = ()
            if ping_host:
                await add_idle_rtt(metrics, ping_host, ctx.link)
            iface = linkstats.interface_for(ctx.link.interface, ctx.link.source_address, addr[0])
            total = 0.0
            for direction in directions(options.direction):
                window = CounterWindow(iface, router=ctx.link.router)
                try:
                    rep, loaded, wall = await self._one(ctx, options, addr[0], hp.port,
                                                        direction == "download", window,
                                                        ping_host)
                finally:
                    # Stops watching the router's counters, on a failure too.
                    await window.settle()
                suffix = "" if direction == "download" else "_upload"
                metrics[f"retransmits{suffix}"] = rep["retransmits"]
                for key in ("rtt_ms", "rtt_min_ms", "rtt_max_ms"):
                    if key in rep and key not in metrics:
                        metrics[key] = round(rep[key], 3)
                total += rep["all_bytes"]
                if "cpu_pct" in rep:
                    flags += device.add_cpu(metrics, rep["cpu_pct"] / 100, 1.0,
                                            options.cpu_bound_pct)
                flags += add_direction(metrics, direction, rep["mbps"], loaded, window,
                                       rep["all_bytes"], wall, ":" in addr[0],
                                       options.cross_traffic_share)
            metrics["bytes"] = total
            ceiling = await device.path_ceiling(metrics, options, iface, ctx.link.modem)
            flags += device.add_ceiling(metrics, ceiling, options.device_ceiling_share)
            flags = device.limited(tuple(dict.fromkeys(flags)))
            return [make_result(ctx, IPERF3.name, options.target, started, time.monotonic() - t0,
                                metrics, flags=flags)]
        return await guarded(ctx, IPERF3.name, options.target, options.timeout_s, body)
