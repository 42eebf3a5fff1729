"""The multi-stream HTTP throughput engine behind the ``http`` method.

N connections GET a large object (download) or POST generated data (upload) for a fixed
duration. Downloaded bytes land in one preallocated buffer through
``asyncio.BufferedProtocol`` (counted, never copied or kept); uploads write slices of one
preallocated random buffer. Total bytes are sampled every ``sample_interval_s``; goodput
is computed over the steady part after ``warmup_s`` (TCP slow start excluded).

The engine runs in its own thread on its own uvloop event loop, so the agent's loop
(MQTT, scheduler) neither slows it down nor is blocked by it.

With ``ssl_context`` set the connections are TLS (``https://`` targets): the same
protocols run on top of the loop's TLS transport, the certificate is verified against
the context's trust anchors and ``server_hostname`` (the URL's host) is sent as SNI and
checked against the certificate. Counted bytes are HTTP payload in both cases.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import ssl
import struct
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from agent.methods.base import LinkBinding
from agent.methods.common.guard import MeasureError, os_error
from agent.methods.common.net import connect_addr, resolve
from agent.methods.common.tls import tls_error

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is an agent dependency
    uvloop = None  # type: ignore[assignment]

RECV_BUFFER = 1 << 20
UPLOAD_CHUNK = 1 << 18
PIPELINE = 2
UPLOAD_BODY = 1 << 30  # bytes per POST; a new POST follows on the same connection


@dataclass(frozen=True)
class EngineConfig:
    """One transfer."""

    host: str
    port: int
    path: str
    direction: Literal["download", "upload"]
    link: LinkBinding
    streams: int = 4
    duration_s: float = 10.0
    warmup_s: float = 2.0
    sample_interval_s: float = 0.1
    connect_timeout_s: float = 5.0
    host_header: str | None = None
    #: ICMP host for loaded-RTT sampling during the steady part (None: no sampling).
    ping_host: str | None = None
    ping_interval_s: float = 0.1
    #: TLS (https): a verifying client context; None: plain HTTP.
    ssl_context: ssl.SSLContext | None = None


@dataclass
class EngineResult:
    """What a transfer measured."""

    total_bytes: int = 0
    steady_bytes: int = 0
    steady_s: float = 0.0
    elapsed_s: float = 0.0
    samples: list[tuple[float, int]] = field(default_factory=list)
    cpu_s: float = 0.0
    streams_ok: int = 0
    errors: list[MeasureError] = field(default_factory=list)
    loaded_rtts: list[float] = field(default_factory=list)
    counters_start: object | None = None
    counters_end: object | None = None
    ipv6: bool = False

    @property
    def goodput_mbps(self) -> float:
        """Steady-part goodput in Mb/s (10^6 bit/s)."""
        return self.steady_bytes * 8 / self.steady_s / 1e6 if self.steady_s > 0 else 0.0


class _Stream:
    """Shared per-connection state: bytes counted and any HTTP-level error."""

    def __init__(self, engine: _Engine) -> None:
        self.engine = engine
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.error: MeasureError | None = None

    def fail(self, error: MeasureError) -> None:
        self.error = error
        if self.transport is not None:
            self.transport.close()


def _parse_head(head: bytes, host: str) -> tuple[int | None, bool, MeasureError | None]:
    """Status check and framing of a response head: (content_length, chunked, error)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return None, False, MeasureError("protocol", f"{host} sent no HTTP response: "
                                                     f"{lines[0][:100]!r}")
    status = int(parts[1])
    if status >= 300:
        reason = parts[2].decode(errors="replace") if len(parts) > 2 else ""
        code = "forbidden" if status in (401, 403) else (
            "server_busy" if status in (429, 503) else "protocol")
        return None, False, MeasureError(code, f"{host} answered HTTP {status} {reason}")  # type: ignore[arg-type]
    length, chunked = None, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    return length, chunked, None


#: The response-head parser, for other HTTP clients of the measurement server.
parse_head = _parse_head


class DownloadProtocol(asyncio.BufferedProtocol):
    """GET the object again and again; body bytes are counted in place, never copied."""

    def __init__(self, stream: _Stream, request: bytes, buffer: memoryview) -> None:
        self.stream = stream
        self.request = request
        self.buffer = buffer
        self.head = bytearray()
        self.in_body = False
        self.remaining: int | None = None
        self.bytes = 0
        self.chunked = False
        self.chunk_state = ""  # "", "size", "crlf", "trailer"
        self.line = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.stream.transport = transport  # type: ignore[assignment]
        # Two requests in flight: the next response is already queued when one ends, so
        # the link does not idle for a round trip between objects.
        transport.write(self.request * PIPELINE)  # type: ignore[attr-defined]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        pos = 0
        while pos < nbytes:
            if self.in_body:
                avail = nbytes - pos
                if self.remaining is None:  # no length, not chunked: read until close
                    self.bytes += avail
                    return
                take = min(avail, self.remaining)
                self.bytes += take
                self.remaining -= take
                pos += take
                if self.remaining == 0:
                    if self.chunked:
                        self.in_body = False
                        self.chunk_state = "crlf"
                    else:
                        self._next()
                continue
            if self.chunk_state:
                pos = self._chunk_framing(pos, nbytes)
                continue
            # Response head: copy only the (small) head, then count the rest as body.
            old = len(self.head)
            self.head += self.buffer[pos:nbytes]
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > 65536:
                    self.stream.fail(MeasureError("protocol", "response head over 64 KiB"))
                return
            length, chunked, error = _parse_head(bytes(self.head[:end]),
                                                 self.stream.engine.cfg.host)
            if error:
                self.stream.fail(error)
                return
            pos += end + 4 - old
            self.head.clear()
            if chunked:
                self.chunked = True
                self.chunk_state = "size"
                continue
            self.chunked = False
            self.in_body = True
            self.remaining = length
            if length == 0:
                self._next()

    def _chunk_framing(self, pos: int, nbytes: int) -> int:
        """Parse chunked framing (size lines, CRLFs, trailers) from buffer[pos:nbytes];
        return the new position. Chunk data itself is counted by the body branch."""
        line_end = bytes(self.buffer[pos:min(nbytes, pos + 1024)]).find(b"\n")
        if line_end < 0:
            self.line += self.buffer[pos:nbytes]
            if len(self.line) > 4096:
                self.stream.fail(MeasureError("protocol", "bad chunked framing"))
            return nbytes
        self.line += self.buffer[pos:pos + line_end + 1]
        pos += line_end + 1
        line = bytes(self.line).strip()
        self.line.clear()
        if self.chunk_state == "crlf":  # the CRLF after a chunk's data
            self.chunk_state = "size"
        elif self.chunk_state == "size":
            try:
                size = int(line.split(b";")[0], 16)
            except ValueError:
                self.stream.fail(MeasureError("protocol", f"bad chunk size {line[:40]!r}"))
                return nbytes
            if size == 0:
                self.chunk_state = "trailer"
            else:
                self.chunk_state = ""
                self.in_body = True
                self.remaining = size
        elif self.chunk_state == "trailer" and not line:  # empty line ends the response
            self.chunk_state = ""
            self.chunked = False
            self._next()
        return pos

    def _next(self) -> None:
        """A response ended: keep PIPELINE requests queued so the link never idles."""
        self.in_body = False
        self.remaining = None
        if self.stream.transport is not None and not self.stream.engine.stopping:
            self.stream.transport.write(self.request)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.stream.error is None and not self.stream.engine.stopping:
            self.stream.error = os_error(exc, "download connection") if isinstance(
                exc, OSError) else MeasureError("protocol", str(exc))
        if not self.stream.closed.done():
            self.stream.closed.set_result(None)

    @property
    def counted(self) -> int:
        """Body bytes received so far."""
        return self.bytes


class UploadProtocol(asyncio.Protocol):
    """POST slices of one random buffer as fast as the transport takes them."""

    def __init__(self, stream: _Stream, head: bytes, data: memoryview) -> None:
        self.stream = stream
        self.head = head
        self.data = data
        self.paused = False
        self.written = 0
        self.remaining = 0
        self.response = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.stream.transport = transport  # type: ignore[assignment]
        # A deep transport buffer would hide bytes not yet sent; keep it about one chunk.
        transport.set_write_buffer_limits(high=2 * UPLOAD_CHUNK)  # type: ignore[attr-defined]
        self._start_post()

    def _start_post(self) -> None:
        assert self.stream.transport is not None
        self.stream.transport.write(self.head)
        self.remaining = UPLOAD_BODY
        self._pump()

    def _pump(self) -> None:
        transport = self.stream.transport
        if transport is None or self.stream.engine.stopping:
            return
        size = len(self.data)
        while not self.paused and self.remaining > 0 and not transport.is_closing():
            n = min(size, self.remaining)
            transport.write(self.data[:n])
            self.written += n
            self.remaining -= n
        if self.remaining == 0 and not self.paused:
            self._start_post()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._pump()

    def data_received(self, data: bytes) -> None:
        # Servers answer an upload early (nginx) or at its end; only errors matter here.
        self.response += data
        end = self.response.find(b"\r\n\r\n")
        if end >= 0:
            _, _, error = _parse_head(bytes(self.response[:end]), self.stream.engine.cfg.host)
            self.response.clear()
            if error:
                self.stream.fail(error)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.stream.error is None and not self.stream.engine.stopping:
            self.stream.error = os_error(exc, "upload connection") if isinstance(
                exc, OSError) else MeasureError("protocol", str(exc))
        if not self.stream.closed.done():
            self.stream.closed.set_result(None)

    @property
    def counted(self) -> int:
        """Bytes handed to the kernel (written minus what still waits in the transport)."""
        transport = self.stream.transport
        pending = 0
        if transport is not None and not transport.is_closing():
            with contextlib.suppress(Exception):
                pending = transport.get_write_buffer_size()
            # Bytes in the kernel's send queue are not delivered yet either; the send buffer
            # grows during a test (autotuning), which would otherwise inflate the figure.
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
                    pending += struct.unpack("i", raw)[0]
        return self.written - pending


class _Engine:
    def __init__(self, cfg: EngineConfig, stop: threading.Event,
                 counters: Callable[[], object] | None) -> None:
        self.cfg = cfg
        self.stop_event = stop
        self.counters = counters
        self.stopping = False
        self.protocols: list[DownloadProtocol | UploadProtocol] = []
        self.recv_buffer = memoryview(bytearray(RECV_BUFFER))
        self.upload_data = memoryview(os.urandom(UPLOAD_CHUNK)) if cfg.direction == "upload" \
            else memoryview(b"")

    def total(self) -> int:
        return sum(p.counted for p in self.protocols)

    def _request(self) -> bytes:
        host = self.cfg.host_header or (f"[{self.cfg.host}]" if ":" in self.cfg.host
                                        else self.cfg.host)
        if self.cfg.port not in (80, 443):
            host = f"{host}:{self.cfg.port}"
        if self.cfg.direction == "download":
            return (f"GET {self.cfg.path} HTTP/1.1\r\nHost: {host}\r\n"
                    "User-Agent: hatinh-netmon\r\nAccept-Encoding: identity\r\n"
                    "Cache-Control: no-cache\r\n\r\n").encode()
        return (f"POST {self.cfg.path} HTTP/1.1\r\nHost: {host}\r\n"
                "User-Agent: hatinh-netmon\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {UPLOAD_BODY}\r\n\r\n").encode()

    async def _open(self, family: int, addr: tuple[str, int]) -> _Stream:
        loop = asyncio.get_running_loop()
        stream = _Stream(self)
        sock, _ = await connect_addr(family, addr, self.cfg.link, self.cfg.connect_timeout_s,
                                  f"{self.cfg.host}:{self.cfg.port}")
        proto: DownloadProtocol | UploadProtocol
        if self.cfg.direction == "download":
            proto = DownloadProtocol(stream, self._request(), self.recv_buffer)
        else:
            proto = UploadProtocol(stream, self._request(), self.upload_data)
        if self.cfg.ssl_context is None:
            await loop.create_connection(lambda: proto, sock=sock)
        else:
            try:
                await loop.create_connection(
                    lambda: proto, sock=sock, ssl=self.cfg.ssl_context,
                    server_hostname=self.cfg.host,
                    ssl_handshake_timeout=self.cfg.connect_timeout_s)
            except Exception as exc:
                sock.close()
                raise tls_error(exc, self.cfg.host, f"{self.cfg.direction} connection"
                                ) from None
        self.protocols.append(proto)
        return stream

    async def _keep(self, family: int, addr: tuple[str, int], first: _Stream,
                    result: EngineResult) -> None:
        """Hold one connection open until the end, reconnecting if the server closes it."""
        stream = first
        while True:
            await stream.closed
            if self.stopping:
                return
            if stream.error is not None:
                result.errors.append(stream.error)
                if stream.error.code in ("forbidden", "protocol", "server_busy"):
                    return
            try:
                stream = await self._open(family, addr)
            except MeasureError as exc:
                result.errors.append(exc)
                return

    async def run(self) -> EngineResult:
        cfg = self.cfg
        result = EngineResult()
        family, addr = await resolve(cfg.host, cfg.port, cfg.link, timeout=cfg.connect_timeout_s)
        result.ipv6 = family == socket.AF_INET6
        opened = await asyncio.gather(*(self._open(family, addr) for _ in range(cfg.streams)),
                                      return_exceptions=True)
        streams = [s for s in opened if isinstance(s, _Stream)]
        for exc in opened:
            if isinstance(exc, MeasureError):
                result.errors.append(exc)
            elif isinstance(exc, BaseException):
                raise exc
        result.streams_ok = len(streams)
        if not streams:
            return result
        keepers = [asyncio.ensure_future(self._keep(family, addr, s, result)) for s in streams]
        sampler = None
        if cfg.ping_host:
            from agent.methods.common.throughput import LoadedSampler
            sampler = LoadedSampler(cfg.ping_host, cfg.link, cfg.ping_interval_s)
        cpu0 = time.thread_time()
        t0 = time.perf_counter()
        warm: tuple[float, int] | None = None
        result.samples.append((0.0, self.total()))
        while True:
            await asyncio.sleep(cfg.sample_interval_s)
            now = time.perf_counter() - t0
            total = self.total()
            result.samples.append((round(now, 4), total))
            if warm is None and now >= cfg.warmup_s:
                warm = (now, total)
                if self.counters:
                    result.counters_start = self.counters()
                if sampler:
                    sampler.start()
            if now >= cfg.duration_s or self.stop_event.is_set():
                break
            if all(k.done() for k in keepers):
                break  # every connection failed for good
        if self.counters:
            result.counters_end = self.counters()
        end_t, end_total = result.samples[-1]
        self.stopping = True
        if sampler:
            await sampler.stop()
            result.loaded_rtts = sampler.rtts
        for proto in self.protocols:
            if proto.stream.transport is not None:
                proto.stream.transport.abort()
        for k in keepers:
            k.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*keepers, return_exceptions=True)
        result.cpu_s = time.thread_time() - cpu0
        result.total_bytes = end_total
        result.elapsed_s = end_t
        if warm is not None and end_t > warm[0]:
            result.steady_bytes = end_total - warm[1]
            result.steady_s = end_t - warm[0]
        return result


def _settle(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


def run_transfer(cfg: EngineConfig, stop: threading.Event | None = None,
                 counters: Callable[[], object] | None = None) -> EngineResult:
    """Run one transfer to completion on a fresh (uv)loop in the calling thread.

    ``counters`` is read when the steady window starts and ends (interface counters for
    cross-traffic), so both numbers cover exactly the window the goodput covers.
    """
    engine = _Engine(cfg, stop or threading.Event(), counters)
    loop = uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()
    try:
        return loop.run_until_complete(engine.run())
    finally:
        loop.close()


async def transfer(cfg: EngineConfig, counters: Callable[[], object] | None = None
                   ) -> EngineResult:
    """:func:`run_transfer` in a dedicated thread; cancelling stops it at the next sample."""
    stop = threading.Event()
    box: dict[str, object] = {}
    done = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()

    def worker() -> None:
        try:
            box["result"] = run_transfer(cfg, stop, counters)
        except BaseException as exc:  # handed to the awaiting task
            box["error"] = exc
        # The caller may be gone (cancelled, its loop closed): then nobody waits.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, done)

    thread = threading.Thread(target=worker, name="netmon-http-engine", daemon=True)
    thread.start()
    try:
        await asyncio.shield(done)
    except asyncio.CancelledError:
        stop.set()
        raise
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]
