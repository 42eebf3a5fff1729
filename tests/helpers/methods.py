"""Helpers for the measurement-method tests: a server namespace with an iperf3 server and
the measurement nginx inside, contexts bound to a link, and a tiny DNS responder."""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.methods.base import LinkBinding, MethodContext
from agent.methods.registry import get
from devstack import measurement_server, netns, services
from netmon.contract import ResultMessage

HTTP_PORT = 8080
IPERF_PORT = 5201


def ctx_for(link: netns.ShapedLink | None = None, by: str = "interface",
            name: str = "fibre") -> MethodContext:
    """A method context bound to a shaped link (by interface or by source address)."""
    if link is None:
        binding = LinkBinding(name, "fixed", "test-isp")
    elif by == "interface":
        binding = LinkBinding(name, "fixed", "test-isp", interface=link.host_if)
    else:
        binding = LinkBinding(name, "fixed", "test-isp", source_address=link.host_ip)
    return MethodContext("probe-test", "0.0-test", binding)


def run(method: str, ctx: MethodContext, **options: Any) -> ResultMessage:
    """Validate options through the method's model and run it; return its one result."""
    cls = get(method)
    opts = cls.decl.options(**options)
    results = asyncio.run(cls().run(ctx, opts))
    assert len(results) == 1, results
    return results[0]


@dataclass
class Site:
    """A server namespace with one iperf3 server and nginx listening on every address."""

    ns: netns.ServerNamespace
    nginx: services.Service
    workdir: Path

    def start_iperf3(self, port: int = IPERF_PORT) -> subprocess.Popen[bytes]:
        """An iperf3 server on all of the namespace's addresses."""
        log = open(self.workdir / f"iperf3-{port}.log", "wb")  # noqa: SIM115 - lives with proc
        proc = self.ns.spawn([services.require_binary("iperf3"), "-s", "-p", str(port)],
                             stdout=log, stderr=subprocess.STDOUT)
        services.wait_for(lambda: services._listening(port, self.ns.name), 10,
                          f"iperf3 on :{port} in {self.ns.name}", proc)  # type: ignore[arg-type]
        return proc

    def url(self, link: netns.ShapedLink) -> str:
        """Base URL of the measurement server over that link."""
        return f"http://{link.server_ip}:{HTTP_PORT}"


def make_site(ns: netns.ServerNamespace, workdir: Path) -> Site:
    """Start nginx (on 0.0.0.0 and [::] inside the namespace) and an iperf3 server."""
    nginx = measurement_server.start(workdir / "nginx", host="0.0.0.0", port=HTTP_PORT,
                                     netns=ns.name, sparse=True,
                                     extra_listen=(f"[::]:{HTTP_PORT}",))
    site = Site(ns, nginx, workdir)
    site.start_iperf3()
    return site


def within(measured: float, refs: list[float], tolerance: float) -> bool:
    """True when ``measured`` is within ``tolerance`` (0.03 = 3%) of the range the
    reference took around it (re-measured before and after, so drift is not an error)."""
    lo, hi = min(refs) * (1 - tolerance), max(refs) * (1 + tolerance)
    return lo <= measured <= hi


# --------------------------------------------------------------------------- DNS


@dataclass
class DnsResponder:
    """A UDP DNS responder answering every A query with 192.0.2.1 (or a fixed rcode)."""

    sock: socket.socket
    rcode: int = 0
    queries: int = 0
    _stop: bool = False

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"{host}:{port}"

    def serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                data, peer = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            self.queries += 1
            qid = data[:2]
            question = data[12:]
            flags = 0x8180 | self.rcode
            if self.rcode == 0:
                answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 1])
                head = qid + struct.pack("!HHHHH", flags, 1, 1, 0, 0)
                self.sock.sendto(head + question + answer, peer)
            else:
                head = qid + struct.pack("!HHHHH", flags, 1, 0, 0, 0)
                self.sock.sendto(head + question, peer)

    def close(self) -> None:
        self._stop = True
        time.sleep(0.25)
        self.sock.close()


def dns_responder(rcode: int = 0) -> Iterator[DnsResponder]:
    """Run a responder on a free loopback UDP port in a thread (generator for fixtures)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    responder = DnsResponder(sock, rcode)
    thread = threading.Thread(target=responder.serve, daemon=True)
    thread.start()
    yield responder
    responder.close()
