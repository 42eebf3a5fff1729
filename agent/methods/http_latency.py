"""``http_latency``: HTTP time to first byte on one kept-alive connection.

A sample is the time from sending a GET to the first byte of the answer (server turnaround
plus one round trip); the TCP connect is not part of it. The connection is reopened if
the server closes it.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit

from agent.methods.base import MethodContext, make_result
from agent.methods.common.guard import MeasureError, guarded, os_error
from agent.methods.common.latency import sample_series
from agent.methods.common.net import connect_tcp
from agent.methods.common.rtt import rtt_metrics
from netmon.contractbase import now_utc
from netmon.declarations import HTTP_LATENCY, Declaration

if TYPE_CHECKING:
    from netmon.contract import ErrorCode
    from netmon.methods import HttpLatencyOptions
    from netmon.wire import Result


class _Conn:
    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.buf = bytearray()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.buf.clear()


async def _read_response(loop: asyncio.AbstractEventLoop, conn: _Conn, timeout: float
                         ) -> tuple[float, int, bytes]:
    """Wait for one full response; return (first byte time, status, reason)."""
    assert conn.sock is not None
    first: float | None = None
    deadline = time.perf_counter() + timeout
    length: int | None = None
    status, reason = 0, b""
    while True:
        end = conn.buf.find(b"\r\n\r\n")
        if end >= 0 and length is None:
            head = bytes(conn.buf[:end]).split(b"\r\n")
            parts = head[0].split(b" ", 2)
            if len(parts) < 2 or not parts[1].isdigit():
                raise MeasureError("protocol", f"not an HTTP response: {head[0][:80]!r}")
            status, reason = int(parts[1]), (parts[2] if len(parts) > 2 else b"")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            del conn.buf[:end + 4]
        if length is not None and len(conn.buf) >= length:
            del conn.buf[:length]
            assert first is not None
            return first, status, reason
        left = deadline - time.perf_counter()
        if left <= 0:
            raise TimeoutError
        chunk = await asyncio.wait_for(loop.sock_recv(conn.sock, 65536), left)
        if first is None:
            first = time.perf_counter()
        if not chunk:
            raise ConnectionResetError("server closed the connection")
        conn.buf += chunk


class HttpLatencyMethod:
    """Time to first byte of small GETs."""

    decl: ClassVar[Declaration] = HTTP_LATENCY

    async def run(self, ctx: MethodContext, options: HttpLatencyOptions) -> list[Result]:
        """GET the target ``count`` times; HTTP errors are failures with the status line."""
        async def body() -> list[Result]:
            parts = urlsplit(options.target)
            host, port = parts.hostname or "", parts.port or 80
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            hosthdr = parts.netloc.rpartition("@")[2]
            request = (f"GET {path} HTTP/1.1\r\nHost: {hosthdr}\r\nUser-Agent: hatinh-netmon\r\n"
                       "Cache-Control: no-cache\r\n\r\n").encode()
            loop = asyncio.get_running_loop()
            conn = _Conn()
            failures: list[tuple[ErrorCode, str]] = []
            started, t0 = now_utc(), time.monotonic()

            async def probe() -> float | None:
                try:
                    if conn.sock is None:
                        conn.sock, _ = await connect_tcp(host, port, ctx.link,
                                                         options.probe_timeout_s)
                    sent = time.perf_counter()
                    await loop.sock_sendall(conn.sock, request)
                    first, status, reason = await _read_response(loop, conn,
                                                                  options.probe_timeout_s)
                except MeasureError as exc:
                    conn.close()
                    failures.append((exc.code, exc.message))
                    return None
                except TimeoutError:
                    conn.close()
                    failures.append(("timeout", f"no answer within {options.probe_timeout_s:g}s"))
                    return None
                except OSError as exc:
                    conn.close()
                    err = os_error(exc, f"GET {options.target}")
                    failures.append((err.code, err.message))
                    return None
                if status >= 400:
                    code: ErrorCode = "forbidden" if status in (401, 403) else "protocol"
                    failures.append((code, f"{options.target} answered HTTP {status} "
                                           f"{reason.decode(errors='replace')}"))
                    return None
                return (first - sent) * 1000.0

            try:
                rtts, sent, _ = await sample_series(probe, options.count, options.interval_s)
            finally:
                conn.close()
            error = None
            if not rtts:
                code, words = failures[0] if failures else ("timeout", "no answer")
                error = (code, f"{sent} requests failed; first: {words}")
            return [make_result(ctx, HTTP_LATENCY.name, options.target, started,
                                time.monotonic() - t0, rtt_metrics(rtts, sent), error)]
        return await guarded(ctx, HTTP_LATENCY.name, options.target, options.timeout_s, body)
