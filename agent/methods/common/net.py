"""Network plumbing for measurement methods: target parsing, name resolution, and
sockets pinned to a link (bound, connected). Subprocesses are in :mod:`.proc`, RTT
statistics in :mod:`.rtt`, errors and the error-result guard in :mod:`.guard`.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from typing import TYPE_CHECKING

from agent.methods.base import LinkBinding
from agent.methods.common.guard import MeasureError, os_error
from netmon.declarations import HostPort, split_host_port

if TYPE_CHECKING:
    from netmon.contract import ErrorCode

# SO_BINDTODEVICE is 25 on Linux; older Pythons lack the constant on some builds.
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


# --------------------------------------------------------------------------- targets


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
