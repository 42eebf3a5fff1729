"""Shaped test links: a network namespace ("server side") joined to the root namespace
by veth pairs, each shaped with ``tc ... tbf`` on both ends. Needs root.

Addresses come from 198.18.0.0/15 (RFC 2544, reserved for benchmarking) and
fd00:6e6d::/32-style ULAs, and exist only inside what this module created; tearing
down deletes the namespace and both veth ends.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

from netmon.errors import NetmonError


class NetnsError(NetmonError, RuntimeError):
    """A namespace, veth or qdisc could not be set up."""


def can_use_netns() -> str | None:
    """None when namespaces and tc are usable here, else the reason why not."""
    if os.geteuid() != 0:
        return "needs root (ip netns, tc)"
    for tool in ("ip", "tc"):
        if not any(os.access(f"{d}/{tool}", os.X_OK) for d in ("/usr/sbin", "/sbin", "/usr/bin")):
            return f"{tool} not installed (apt-get install iproute2)"
    return None


def _run(argv: Sequence[str]) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _used_subnets() -> set[str]:
    out = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True,
                         check=False).stdout
    return {str(ipaddress.ip_interface(tok).network) for line in out.splitlines()
            for tok in line.split() if tok.startswith("198.1")}


@dataclass
class ShapedLink:
    """One veth pair: ``host_if`` in the root namespace, ``server_if`` in the namespace."""

    host_if: str
    server_if: str
    host_ip: str
    server_ip: str
    host_ip6: str
    server_ip6: str
    rate_mbit: float


@dataclass
class ServerNamespace:
    """A namespace with one or more shaped links to the root namespace."""

    name: str
    links: list[ShapedLink] = field(default_factory=list)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @classmethod
    def create(cls) -> ServerNamespace:
        """Create an empty namespace with loopback up."""
        name = f"nmtest-{secrets.token_hex(3)}"
        _run(["ip", "netns", "add", name])
        ns = cls(name)
        ns.exec(["ip", "link", "set", "lo", "up"])
        return ns

    def exec(self, argv: Sequence[str]) -> str:
        """Run a command inside the namespace and return its stdout."""
        return _run(["ip", "netns", "exec", self.name, *argv])

    def spawn(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start a long-running process inside the namespace; stopped by :meth:`destroy`."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            ["ip", "netns", "exec", self.name, *argv], start_new_session=True, **kwargs)
        self._procs.append(proc)
        return proc

    def add_link(self, rate_mbit: float, burst: str = "256kb", latency: str = "100ms",
                 offload_off: bool = True) -> ShapedLink:
        """Add a veth pair shaped with tbf at ``rate_mbit`` in both directions."""
        used = _used_subnets()
        for _ in range(200):
            second, third = 18 + secrets.randbelow(2), secrets.randbelow(256)
            fourth = secrets.randbelow(64) * 4
            net = ipaddress.ip_network(f"198.{second}.{third}.{fourth}/30")
            if str(net) not in used:
                break
        else:
            raise NetnsError("no free 198.18.0.0/15 /30 subnet")
        host_ip, server_ip = (str(a) for a in list(net.hosts())[:2])
        tag = secrets.token_hex(3)
        host_if, server_if = f"nmh{tag}", f"nms{tag}"
        six = f"fd00:6e6d:{secrets.randbelow(0xFFFF):x}:{secrets.randbelow(0xFFFF):x}"
        host_ip6, server_ip6 = f"{six}::1", f"{six}::2"
        _run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", server_if])
        _run(["ip", "link", "set", server_if, "netns", self.name])
        _run(["ip", "addr", "add", f"{host_ip}/30", "dev", host_if])
        _run(["ip", "-6", "addr", "add", f"{host_ip6}/64", "dev", host_if, "nodad"])
        self.exec(["ip", "addr", "add", f"{server_ip}/30", "dev", server_if])
        self.exec(["ip", "-6", "addr", "add", f"{server_ip6}/64", "dev", server_if, "nodad"])
        _run(["ip", "link", "set", host_if, "up"])
        self.exec(["ip", "link", "set", server_if, "up"])
        if offload_off:
            with contextlib.suppress(NetnsError, FileNotFoundError):
                _run(["ethtool", "-K", host_if, "tso", "off", "gso", "off", "gro", "off"])
                self.exec(["ethtool", "-K", server_if, "tso", "off", "gso", "off", "gro", "off"])
        rate = f"{rate_mbit:g}mbit"
        tbf = ["root", "tbf", "rate", rate, "burst", burst, "latency", latency]
        _run(["tc", "qdisc", "add", "dev", host_if, *tbf])
        self.exec(["tc", "qdisc", "add", "dev", server_if, *tbf])
        link = ShapedLink(host_if, server_if, host_ip, server_ip, host_ip6, server_ip6, rate_mbit)
        self.links.append(link)
        return link

    def destroy(self) -> None:
        """Stop processes, delete veths and the namespace; safe to call twice."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        self._procs.clear()
        for link in self.links:
            subprocess.run(["ip", "link", "del", link.host_if], capture_output=True, check=False)
        self.links.clear()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)
