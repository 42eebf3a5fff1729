"""Shared plumbing for measurement methods: sockets pinned to a link, target parsing,
subprocesses that cannot outlive their timeout, and mapping OS errors to error codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import os
import socket
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from agent.methods.base import LinkBinding, MethodContext, make_result
from netmon.contract import ErrorCode, ResultMessage, now_utc
from netmon.contract import Method as MethodName

# SO_BINDTODEVICE is 25 on Linux; older Pythons lack the constant on some builds.
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


class MeasureError(Exception):
    """A measurement failed; ``code`` is a contract error code, the message the tool's words."""

    def __init__(self, code: ErrorCode, message: str,
                 metrics: dict[str, float] | None = None) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        #: What was measured before the failure (e.g. ``bytes`` for data budgets).
        self.metrics = metrics or {}


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class HostPort:
    """A parsed ``host``, ``host:port``, ``[v6]:port`` or URL target."""

    host: str
    port: int


def split_host_port(target: str, default_port: int) -> HostPort:
    """Parse ``host``, ``host:port``, ``[v6addr]:port``, a bare IPv6 address or a URL."""
    target = target.strip()
    if "://" in target:
        parts = urlsplit(target)
        if not parts.hostname:
            raise ValueError(f"target {target!r} has no host")
        scheme_port = {"http": 80, "https": 443}.get(parts.scheme, default_port)
        return HostPort(parts.hostname, parts.port or scheme_port)
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else default_port
        return HostPort(host, port)
    if target.count(":") == 1:
        host, port_text = target.split(":")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"target {target!r}: port must be 1-65535")
        return HostPort(host, int(port_text))
    return HostPort(target, default_port)


def target_host_port(target: str, default_port: int) -> HostPort:
    """:func:`split_host_port` for a method's target: a bad one is a ``protocol`` error
    reported in the result."""
    try:
        return split_host_port(target, default_port)
    except ValueError as exc:
        raise MeasureError("protocol", str(exc)) from None


async def resolve(host: str, port: int, link: LinkBinding, family: int = socket.AF_UNSPEC,
                  timeout: float = 5.0) -> tuple[int, tuple[str, int]]:
    """First address for host:port as ``(family, sockaddr)``; the family follows the link's
    source address when one is set. Raises MeasureError("dns") with the resolver's words."""
    if family == socket.AF_UNSPEC and link.source_address:
        family = socket.AF_INET6 if ":" in link.source_address else socket.AF_INET
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM), timeout)
    except TimeoutError:
        raise MeasureError("dns", f"resolving {host} timed out after {timeout:g}s") from None
    except socket.gaierror as exc:
        raise MeasureError("dns", f"cannot resolve {host}: {exc.strerror}") from None
    fam, _, _, _, addr = infos[0]
    return fam, (str(addr[0]), int(addr[1]))


# --------------------------------------------------------------------------- sockets


def bind_to_link(sock: socket.socket, link: LinkBinding) -> None:
    """Pin a socket to the link: SO_BINDTODEVICE on its interface, bind() to its source
    address. Raises MeasureError naming the interface/address when the kernel refuses."""
    if link.interface:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE,
                            link.interface.encode() + b"\0")
        except OSError as exc:
            code: ErrorCode = "forbidden" if exc.errno == errno.EPERM else "unreachable"
            raise MeasureError(code, f"cannot bind to interface {link.interface}: "
                                     f"{exc.strerror}") from None
    if link.source_address:
        try:
            sock.bind((link.source_address, 0))
        except OSError as exc:
            raise MeasureError("unreachable", f"cannot bind to source address "
                                              f"{link.source_address}: {exc.strerror}") from None


def link_socket(family: int, type_: int, link: LinkBinding, proto: int = 0) -> socket.socket:
    """A non-blocking socket already bound to the link."""
    sock = socket.socket(family, type_, proto)
    try:
        sock.setblocking(False)
        bind_to_link(sock, link)
    except BaseException:
        sock.close()
        raise
    return sock


async def connect_addr(family: int, addr: tuple[str, int], link: LinkBinding, timeout: float,
                       what: str) -> tuple[socket.socket, float]:
    """Open a TCP connection to a resolved address on the link; return the connected socket
    and connect time (s, socket set-up excluded). Errors name ``what`` (``host:port``)."""
    sock = link_socket(family, socket.SOCK_STREAM, link)
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    try:
        await asyncio.wait_for(loop.sock_connect(sock, addr), timeout)
    except TimeoutError:
        sock.close()
        raise MeasureError("timeout", f"connect to {what} timed out after "
                                      f"{timeout:g}s") from None
    except OSError as exc:
        sock.close()
        raise os_error(exc, f"connect to {what}") from None
    return sock, time.perf_counter() - start


async def connect_tcp(host: str, port: int, link: LinkBinding, timeout: float
                      ) -> tuple[socket.socket, float]:
    """Open a TCP connection on the link; return the connected socket and connect time (s)."""
    family, addr = await resolve(host, port, link, timeout=timeout)
    return await connect_addr(family, addr, link, timeout, f"{host}:{port}")


def os_error(exc: OSError, what: str) -> MeasureError:
    """Map an OSError to a contract error code, keeping the OS's words."""
    code: ErrorCode
    if exc.errno == errno.ECONNREFUSED:
        code = "refused"
    elif exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL,
                       errno.ENODEV, errno.ENONET):
        code = "unreachable"
    elif exc.errno in (errno.ETIMEDOUT,):
        code = "timeout"
    elif exc.errno in (errno.EPERM, errno.EACCES):
        code = "forbidden"
    else:
        code = "unreachable"
    # asyncio rewrites the message ("Connect call failed"); the errno text is what a
    # person needs ("Connection refused").
    words = os.strerror(exc.errno) if exc.errno else str(exc)
    return MeasureError(code, f"{what}: {words}")


# --------------------------------------------------------------------------- processes


@dataclass
class ToolOutput:
    """What a finished subprocess printed."""

    returncode: int
    stdout: str
    stderr: str


async def run_tool(argv: Sequence[str], timeout: float) -> ToolOutput:
    """Run a tool, kill its whole process group on timeout or cancellation.

    Raises MeasureError("tool_missing") when the binary is absent and
    MeasureError("timeout") when it ran out of time.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            start_new_session=True)
    except FileNotFoundError:
        raise MeasureError("tool_missing", f"{argv[0]} not found: install it") from None
    except PermissionError as exc:
        raise MeasureError("tool_missing", f"{argv[0]} not executable: {exc}") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException as exc:
        _kill_group(proc)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 5)
        if isinstance(exc, TimeoutError):
            raise MeasureError("timeout", f"{os.path.basename(argv[0])} did not finish within "
                                          f"{timeout:g}s and was killed") from None
        raise
    return ToolOutput(proc.returncode or 0, out.decode(errors="replace"),
                      err.decode(errors="replace"))


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, 9)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


# --------------------------------------------------------------------------- statistics


def rtt_metrics(samples_ms: Sequence[float], sent: int) -> dict[str, float]:
    """min / median / mean / max RTT, jitter and loss for a series of RTT samples.

    Jitter is the mean absolute difference of consecutive samples (RFC 3550 style, without
    smoothing); loss is the share of ``sent`` probes that got no answer.
    """
    out: dict[str, float] = {"samples": float(len(samples_ms))}
    if sent > 0:
        out["loss_pct"] = round(100.0 * (sent - len(samples_ms)) / sent, 3)
    if samples_ms:
        out |= {
            "rtt_ms": round(statistics.median(samples_ms), 3),
            "rtt_min_ms": round(min(samples_ms), 3),
            "rtt_mean_ms": round(statistics.fmean(samples_ms), 3),
            "rtt_max_ms": round(max(samples_ms), 3),
        }
        if len(samples_ms) > 1:
            diffs = [abs(b - a) for a, b in itertools.pairwise(samples_ms)]
            out["jitter_ms"] = round(statistics.fmean(diffs), 3)
    return out


# --------------------------------------------------------------------------- guard


async def guarded(ctx: MethodContext, method: MethodName, target: str, timeout: float,
                  body: Callable[[], Awaitable[list[ResultMessage]]]) -> list[ResultMessage]:
    """Run a method body under its hard timeout and turn every failure into an error result
    (a measurement never raises into the runtime; cancellation still propagates)."""
    started = now_utc()
    t0 = time.monotonic()
    metrics: dict[str, float] = {}
    try:
        return await asyncio.wait_for(body(), timeout)
    except MeasureError as exc:
        err: tuple[ErrorCode, str] = (exc.code, exc.message)
        metrics = exc.metrics
    except TimeoutError:
        err = ("timeout", f"{method} test against {target} exceeded timeout_s={timeout:g}")
    except Exception as exc:  # a bug must not take the agent down; report it instead
        err = ("internal", f"{type(exc).__name__}: {exc}")
    return [make_result(ctx, method, target, started, time.monotonic() - t0, metrics,
                        error=err)]
