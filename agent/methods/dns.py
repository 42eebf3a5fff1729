"""``dns``: resolution time against a configured resolver (one UDP query per sample)."""

from __future__ import annotations

import asyncio
import secrets
import socket
import struct
import time
from typing import TYPE_CHECKING, ClassVar

from agent.methods.base import MethodContext, make_result
from agent.methods.common.guard import MeasureError, guarded, os_error
from agent.methods.common.latency import sample_series
from agent.methods.common.net import link_socket, target_host_port
from agent.methods.common.rtt import rtt_metrics
from netmon.contractbase import now_utc
from netmon.declarations import DNS, Declaration

if TYPE_CHECKING:
    from netmon.contract import ErrorCode
    from netmon.methods import DnsOptions
    from netmon.wire import Result

QTYPES = {"A": 1, "AAAA": 28}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def build_query(qid: int, name: str, qtype: int) -> bytes:
    """A DNS query packet with recursion desired."""
    qname = b"".join(bytes([len(p)]) + p.encode("idna") for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, 1)


class DnsMethod:
    """A sample is the time from sending the query to the resolver's answer. NOERROR and
    NXDOMAIN count as answers; SERVFAIL / REFUSED count as failures with their rcode."""

    decl: ClassVar[Declaration] = DNS

    async def run(self, ctx: MethodContext, options: DnsOptions) -> list[Result]:
        """Query ``count`` times; no usable answer at all becomes an error result."""
        async def body() -> list[Result]:
            hp = target_host_port(options.target, options.port)
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(hp.host, hp.port, type=socket.SOCK_DGRAM)
            except socket.gaierror as exc:
                raise MeasureError("dns", f"resolver {hp.host}: {exc.strerror}") from None
            family, _, _, _, addr = infos[0]
            sock = link_socket(family, socket.SOCK_DGRAM, ctx.link)
            started, t0 = now_utc(), time.monotonic()
            failures: list[tuple[ErrorCode, str]] = []
            try:
                await loop.sock_connect(sock, addr)

                async def probe() -> float | None:
                    qid = secrets.randbits(16)
                    sent = time.perf_counter()
                    try:
                        await loop.sock_sendall(sock, build_query(qid, options.name,
                                                                  QTYPES[options.record]))
                    except OSError as exc:
                        err = os_error(exc, f"query to {options.target}")
                        failures.append((err.code, err.message))
                        return None
                    deadline = sent + options.probe_timeout_s
                    while (left := deadline - time.perf_counter()) > 0:
                        try:
                            data = await asyncio.wait_for(loop.sock_recv(sock, 4096), left)
                        except TimeoutError:
                            break
                        except OSError as exc:  # ICMP port unreachable etc.
                            err = os_error(exc, f"resolver {options.target}")
                            failures.append((err.code, err.message))
                            return None
                        if len(data) < 12 or struct.unpack("!H", data[:2])[0] != qid:
                            continue  # a late answer to an earlier query
                        rcode = data[3] & 0x0F
                        if rcode in (0, 3):
                            return (time.perf_counter() - sent) * 1000.0
                        word = RCODES.get(rcode, f"rcode {rcode}")
                        failures.append(("refused" if rcode == 5 else "dns",
                                         f"resolver {options.target} answered {word} for "
                                         f"{options.name} {options.record}"))
                        return None
                    failures.append(("timeout", f"no answer from {options.target} within "
                                                f"{options.probe_timeout_s:g}s"))
                    return None

                rtts, sent, _ = await sample_series(probe, options.count, options.interval_s)
            finally:
                sock.close()
            metrics = rtt_metrics(rtts, sent)
            error = None
            if not rtts:
                code, words = failures[0] if failures else ("timeout", "no answer")
                error = (code, f"{sent} queries failed; first: {words}")
            return [make_result(ctx, DNS.name, options.target, started, time.monotonic() - t0,
                                metrics, error)]
        return await guarded(ctx, DNS.name, options.target, options.timeout_s, body)
