"""ICMP echo in-process, used by the ``icmp`` method and by loaded-latency sampling.

Uses an unprivileged ping socket (``SOCK_DGRAM``/``IPPROTO_ICMP``, allowed by
``net.ipv4.ping_group_range``) when it can and a raw socket (root / CAP_NET_RAW)
otherwise; both can be pinned to a link with SO_BINDTODEVICE.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from typing import Self

from agent.methods.base import LinkBinding
from agent.methods.common.guard import MeasureError
from agent.methods.common.net import link_socket, resolve

ICMP_ECHO, ICMP_ECHOREPLY = 8, 0
ICMP6_ECHO, ICMP6_ECHOREPLY = 128, 129


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return int(~total & 0xFFFF)


class Pinger:
    """Sends echo requests to one address and matches replies by identifier and sequence."""

    def __init__(self, sock: socket.socket, family: int, addr: tuple[str, int], raw: bool,
                 ident: int) -> None:
        self._sock = sock
        self._family = family
        self._addr = addr
        self._raw = raw
        self._ident = ident
        self._seq = 0
        self._waiting: dict[int, asyncio.Future[float]] = {}
        self._sent_at: dict[int, float] = {}
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._on_readable)

    @classmethod
    async def open(cls, host: str, link: LinkBinding, family: int = socket.AF_UNSPEC) -> Self:
        """Resolve ``host`` and open an ICMP socket on the link (ping socket, else raw)."""
        fam, addr = await resolve(host, 0, link, family)
        proto = socket.IPPROTO_ICMP if fam == socket.AF_INET else socket.IPPROTO_ICMPV6
        errors = []
        for kind, raw in ((socket.SOCK_DGRAM, False), (socket.SOCK_RAW, True)):
            try:
                sock = link_socket(fam, kind, link, proto)
            except OSError as exc:  # link_socket's own binding errors are MeasureErrors
                errors.append(f"{'raw' if raw else 'ping'} socket: {exc.strerror}")
                continue
            ident = sock.getsockname()[1] if not raw else (os.getpid() ^ id(sock)) & 0xFFFF
            return cls(sock, fam, (addr[0], 0), raw, ident)
        raise MeasureError("forbidden", "cannot open an ICMP socket (" + "; ".join(errors) +
                           "): run as root or allow ping sockets with "
                           "sysctl net.ipv4.ping_group_range")

    def close(self) -> None:
        """Stop listening and close the socket."""
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        for fut in self._waiting.values():
            if not fut.done():
                fut.cancel()

    def _packet(self, seq: int) -> bytes:
        kind = ICMP_ECHO if self._family == socket.AF_INET else ICMP6_ECHO
        payload = b"netmon-rtt-probe" + bytes(40)
        header = struct.pack("!BBHHH", kind, 0, 0, self._ident, seq)
        if self._family == socket.AF_INET:
            # Ping sockets fill the checksum themselves; raw IPv4 sockets need ours.
            csum = _checksum(header + payload)
            header = struct.pack("!BBHHH", kind, 0, csum, self._ident, seq)
        return header + payload

    def _on_readable(self) -> None:
        while True:
            try:
                data = self._sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # ICMP errors queued on the socket (unreachable): the probe times out
            now = time.perf_counter()
            if self._raw and self._family == socket.AF_INET:
                data = data[(data[0] & 0x0F) * 4:]
            if len(data) < 8:
                continue
            kind, _, _, ident, seq = struct.unpack("!BBHHH", data[:8])
            want = ICMP_ECHOREPLY if self._family == socket.AF_INET else ICMP6_ECHOREPLY
            if kind != want or (self._raw and ident != self._ident):
                continue
            fut = self._waiting.pop(seq, None)
            if fut is not None and not fut.done():
                fut.set_result((now - self._sent_at.pop(seq)) * 1000.0)

    async def ping(self, timeout: float) -> float | None:
        """One echo; the RTT in ms, or None when no reply came within ``timeout``."""
        self._seq = (self._seq + 1) & 0xFFFF
        seq = self._seq
        fut: asyncio.Future[float] = self._loop.create_future()
        self._waiting[seq] = fut
        self._sent_at[seq] = time.perf_counter()
        try:
            self._sock.sendto(self._packet(seq), self._addr)
        except OSError:
            self._waiting.pop(seq, None)
            return None
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return None
        finally:
            self._waiting.pop(seq, None)
            self._sent_at.pop(seq, None)


async def ping_series(host: str, link: LinkBinding, count: int, interval: float,
                      timeout: float, family: int = socket.AF_UNSPEC
                      ) -> tuple[list[float], int]:
    """Send ``count`` echoes ``interval`` seconds apart (overlapping when replies are slow);
    return the RTTs received (ms, in send order) and the number sent."""
    pinger = await Pinger.open(host, link, family)
    try:
        tasks = []
        for i in range(count):
            tasks.append(asyncio.ensure_future(pinger.ping(timeout)))
            if i + 1 < count:
                await asyncio.sleep(interval)
        results = await asyncio.gather(*tasks)
    finally:
        pinger.close()
    return [r for r in results if r is not None], count
