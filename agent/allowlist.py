"""Which hosts a signed remote plan may point tests at: the probe's allowlist
(``[remote_config] allowed_targets`` plus the file config's own targets).

Pydantic-free: the config model (:class:`agent.config.RemoteConfigSettings`) checks its
entries with :func:`allowlist_entry`, the run time's handler (:mod:`agent.remote_config`)
matches targets with :class:`Allowlist`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

#: A host name or ``*.domain`` entry.
HOSTNAME_RE = re.compile(r"^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*"
                          r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


def is_ip(text: str) -> bool:
    """True when ``text`` is an IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def target_host(target: str) -> str:
    """The host part of a test target: ``host``, ``host:port``, ``[v6]:port``, a URL, an
    IP literal or a reachability endpoint (``icmp:host``), lower-cased without a trailing
    dot; "" when there is none."""
    text = target.strip()
    if text.startswith("icmp:"):
        text = text[len("icmp:"):]
    from netmon.declarations import split_host_port

    try:
        host = split_host_port(text, 0).host
    except ValueError:
        return ""
    return host.lower().rstrip(".")


class Allowlist:
    """Which hosts a remote plan may point tests at (no DNS: names match as names)."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.names: set[str] = set()
        self.suffixes: list[str] = []
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            if "/" in entry:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            elif is_ip(entry):
                self.networks.append(ipaddress.ip_network(entry))
            elif entry.startswith("*."):
                self.suffixes.append(entry[1:])
            else:
                self.names.add(entry)

    def allows(self, target: str) -> bool:
        """True when ``target``'s host is listed, under a listed ``*.domain``, or an IP
        inside a listed network."""
        host = target_host(target)
        if not host:
            return False
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return host in self.names or any(host.endswith(s) for s in self.suffixes)
        return any(ip in net for net in self.networks)


def allowlist_entry(entry: str) -> str:
    """``entry`` normalised (lower case, no trailing dot); ValueError saying why when it
    is not a host name, ``*.domain``, IP address or CIDR network."""
    norm = entry.strip().lower().rstrip(".")
    if "/" in norm:
        try:
            ipaddress.ip_network(norm, strict=False)
        except ValueError:
            raise ValueError(f"{entry!r} is not a valid CIDR network") from None
    elif not (is_ip(norm) or HOSTNAME_RE.match(norm)):
        raise ValueError(f"{entry!r} is not a host name, *.domain, IP address or CIDR")
    return norm
