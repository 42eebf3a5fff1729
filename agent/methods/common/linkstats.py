"""Interface byte counters, used to spot traffic on a link that is not the test's own
(cross-traffic: a busy office line must not be mistaken for a slow ISP)."""

from __future__ import annotations

import contextlib
import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path

SYS_NET = Path("/sys/class/net")


@dataclass(frozen=True)
class Counters:
    """Bytes an interface received and sent since boot (as /sys counts them: L2 frames)."""

    rx_bytes: int
    tx_bytes: int


def read_counters(interface: str) -> Counters | None:
    """The interface's byte counters, or None when it has none (gone, not Linux)."""
    base = SYS_NET / interface / "statistics"
    try:
        return Counters(int((base / "rx_bytes").read_text()), int((base / "tx_bytes").read_text()))
    except (OSError, ValueError):
        return None


def mtu(interface: str) -> int:
    """The interface MTU (1500 when unknown)."""
    try:
        return int((SYS_NET / interface / "mtu").read_text())
    except (OSError, ValueError):
        return 1500


def interface_for(interface: str | None, source_address: str | None,
                  target_ip: str | None) -> str | None:
    """Which interface a link's traffic uses: the bound interface, else the one holding the
    source address, else the kernel's route to the target."""
    if interface:
        return interface
    if source_address:
        out = _ip(["-o", "addr", "show"])
        want = ipaddress.ip_address(source_address)
        for line in out.splitlines():
            parts = line.split()
            for i, tok in enumerate(parts[:-1]):
                if tok in ("inet", "inet6"):
                    with contextlib.suppress(ValueError):
                        if ipaddress.ip_interface(parts[i + 1]).ip == want:
                            return parts[1].split("@")[0]
    if target_ip:
        parts = _ip(["-o", "route", "get", target_ip]).split()
        if "dev" in parts:
            return parts[parts.index("dev") + 1]
    return None


def _ip(args: list[str]) -> str:
    try:
        return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=5,
                              check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def wire_factor(link_mtu: int, ipv6: bool = False) -> float:
    """L2 bytes per TCP payload byte for full-sized segments (Ethernet 14 + IP + TCP with
    timestamps), used to compare interface counters with application byte counts."""
    headers = (40 if ipv6 else 20) + 32
    return (link_mtu + 14) / (link_mtu - headers)


def cross_traffic_mbps(iface_bytes: int, test_bytes: float, seconds: float,
                       factor: float) -> float:
    """Mb/s on the interface beyond what the test's own payload explains (never negative)."""
    if seconds <= 0:
        return 0.0
    extra = iface_bytes - test_bytes * factor
    return max(0.0, extra * 8 / seconds / 1e6)
