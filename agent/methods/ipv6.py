"""``ipv6``: IPv6 readiness of a link (plan task 2.3).

Reports whether the link has a global unicast IPv6 address (2000::/3; ULAs and
link-local do not count), whether the configured target answers over IPv6, and the
IPv6 RTT beside the IPv4 RTT to the same target (or ``v4_target``). The result is ok
when the target answers over IPv6 (*ready*); otherwise it is an ``unreachable`` error
result that still carries the metrics (``ipv6_reachable = 0``, the IPv4 RTT, the address
check), so the bulletin can count ready / not ready from the status alone.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import time
from typing import TYPE_CHECKING, ClassVar

from agent.methods.base import MethodContext, make_result
from agent.methods.common.guard import MeasureError, guarded
from agent.methods.common.icmp import ping_series
from agent.methods.common.rtt import rtt_metrics
from netmon.contractbase import now_utc
from netmon.declarations import IPV6, Declaration

if TYPE_CHECKING:
    from netmon.methods import Ipv6Options
    from netmon.wire import Result


def global_ipv6_addresses(interface: str | None) -> list[str]:
    """Global unicast IPv6 addresses (2000::/3) on the interface, or on any interface."""
    argv = ["ip", "-6", "-o", "addr", "show", "scope", "global"]
    if interface:
        argv += ["dev", interface]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in out.splitlines():
        parts = line.split()
        if "inet6" in parts:
            addr = ipaddress.ip_interface(parts[parts.index("inet6") + 1]).ip
            if addr in ipaddress.ip_network("2000::/3"):
                found.append(str(addr))
    return found


class Ipv6Method:
    """ICMP over v6 and v4 to the same target, plus the address check."""

    decl: ClassVar[Declaration] = IPV6

    async def run(self, ctx: MethodContext, options: Ipv6Options) -> list[Result]:
        """One result: ``ipv6_global_address``, ``ipv6_reachable``, ``rtt_ms`` (v6),
        ``rtt_v4_ms``, ``rtt_v6_v4_ratio``, ``loss_pct`` (v6)."""
        async def body() -> list[Result]:
            started, t0 = now_utc(), time.monotonic()
            v4_link = ctx.link if not (ctx.link.source_address and ":" in
                                       ctx.link.source_address) else None
            v6_link = ctx.link if not (ctx.link.source_address and ":" not in
                                       ctx.link.source_address) else None
            metrics: dict[str, float] = {
                "ipv6_global_address": float(bool(global_ipv6_addresses(ctx.link.interface)))}
            v6: list[float] = []
            notes = []
            if v6_link is not None:
                try:
                    v6, sent = await ping_series(options.target, v6_link, options.count,
                                                 options.interval_s, options.probe_timeout_s,
                                                 socket.AF_INET6)
                    metrics |= rtt_metrics(v6, sent)
                except MeasureError as exc:
                    notes.append(exc.message)
                    metrics["loss_pct"] = 100.0
            metrics["ipv6_reachable"] = 1.0 if v6 else 0.0
            v4_host = options.v4_target or options.target
            if v4_link is not None:
                try:
                    v4, _ = await ping_series(v4_host, v4_link, options.count,
                                              options.interval_s, options.probe_timeout_s,
                                              socket.AF_INET)
                except MeasureError:
                    v4 = []
                if v4:
                    v4_med = rtt_metrics(v4, len(v4))["rtt_ms"]
                    metrics["rtt_v4_ms"] = v4_med
                    if v6 and v4_med > 0:
                        metrics["rtt_v6_v4_ratio"] = round(metrics["rtt_ms"] / v4_med, 3)
            error = None
            if not v6:
                why = "; ".join(notes) or f"no echo reply over IPv6 to {options.count} requests"
                error = ("unreachable", f"{options.target} not reachable over IPv6: {why}")
            return [make_result(ctx, IPV6.name, options.target, started, time.monotonic() - t0,
                                metrics, error)]  # type: ignore[arg-type]
        return await guarded(ctx, IPV6.name, options.target, options.timeout_s, body)
