"""An office behind a router, in network namespaces the test creates (needs root):

    probe (root ns) ──LAN── router ns ──WAN (tbf)── server ns (iperf3 servers)
                  office ns ──LAN──┘

The router namespace forwards between its LANs and its WAN and runs a REAL ``snmpd``
(IF-MIB of the namespace's interfaces) and a REAL ``miniupnpd`` (UPnP IGD whose
external interface is the WAN), both answering on the probe's LAN side. The office
namespace downloads from the server across the WAN: traffic the probe's own interface
never carries, but the router's WAN counters do.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import subprocess
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from agent.methods.common import router as routerstats
from agent.methods.common import router_poll
from devstack import netns, services

WAN_RATE_MBIT = 100
OFFICE_NET = ipaddress.ip_network("198.19.254.0/30")  # exists only inside the namespaces


def _root(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise netns.NetnsError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")


def _free_wan_net() -> ipaddress.IPv4Network:
    """A /30 for the WAN that no root-namespace address or route uses (the probe routes
    to it through the router)."""
    taken = subprocess.run(["ip", "-o", "-4", "route"], capture_output=True, text=True,
                           check=False).stdout + subprocess.run(
        ["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=False).stdout
    for _ in range(200):
        net = ipaddress.ip_network(
            f"198.19.{secrets.randbelow(250)}.{secrets.randbelow(64) * 4}/30")
        if str(net.network_address) not in taken and net != OFFICE_NET:
            return net
    raise netns.NetnsError("no free WAN subnet")


@dataclass
class RouterLab:
    """The namespaces, addresses and daemons of one office."""

    workdir: Path
    server: netns.ServerNamespace = field(init=False)
    router: netns.ServerNamespace = field(init=False)
    office: netns.ServerNamespace = field(init=False)
    probe_if: str = ""
    probe_ip: str = ""
    router_lan_ip: str = ""
    wan_if: str = ""  # the router's WAN interface (its counters are the line's)
    server_ip: str = ""
    snmp_port: int = 0
    community: str = ""
    usm_keys: tuple[str, str] = ("", "")
    #: After :meth:`start_snmpd`: the same counters read as the SNMPv3 user (authPriv).
    snmpv3: routerstats.RouterCounters | None = None
    upnp_port: int = 0
    router_lan_if: str = ""
    _flows: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _services: list[services.Service] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server = netns.ServerNamespace.create()
        self.router = netns.ServerNamespace.create()
        self.office = netns.ServerNamespace.create()
        try:
            self._wire()
        except BaseException:
            self.destroy()
            raise

    def _veth(self, a: netns.ServerNamespace, b: netns.ServerNamespace) -> tuple[str, str]:
        tag = secrets.token_hex(3)
        left, right = f"nmra{tag}", f"nmrb{tag}"
        _root(["ip", "link", "add", left, "type", "veth", "peer", "name", right])
        _root(["ip", "link", "set", left, "netns", a.name])
        _root(["ip", "link", "set", right, "netns", b.name])
        for ns, dev in ((a, left), (b, right)):
            ns.exec(["ip", "link", "set", dev, "up"])
            with contextlib.suppress(netns.NetnsError, FileNotFoundError):
                ns.exec(["ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off"])
        return left, right

    def _wire(self) -> None:
        # The probe's LAN: a veth from the root namespace (unshaped in effect: 1 Gbit).
        lan = self.router.add_link(1000)
        self.probe_if, self.probe_ip, self.router_lan_ip = lan.host_if, lan.host_ip, lan.server_ip
        self.router_lan_if = lan.server_if
        self.router.exec(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        # WAN: router <-> server, shaped like the office's fibre.
        wan = _free_wan_net()
        r_ip, s_ip = (str(h) for h in list(wan.hosts())[:2])
        self.wan_if, server_if = self._veth(self.router, self.server)
        self.router.exec(["ip", "addr", "add", f"{r_ip}/30", "dev", self.wan_if])
        self.server.exec(["ip", "addr", "add", f"{s_ip}/30", "dev", server_if])
        tbf = ["root", "tbf", "rate", f"{WAN_RATE_MBIT}mbit", "burst", "256kb",
               "latency", "100ms"]
        self.router.exec(["tc", "qdisc", "add", "dev", self.wan_if, *tbf])
        self.server.exec(["tc", "qdisc", "add", "dev", server_if, *tbf])
        self.server.exec(["ip", "route", "add", "default", "via", r_ip])
        self.server_ip = s_ip
        # The office's LAN.
        o_router, o_if = (str(h) for h in list(OFFICE_NET.hosts())[:2])
        r_office_if, office_if = self._veth(self.router, self.office)
        self.router.exec(["ip", "addr", "add", f"{o_router}/30", "dev", r_office_if])
        self.office.exec(["ip", "addr", "add", f"{o_if}/30", "dev", office_if])
        self.office.exec(["ip", "route", "add", "default", "via", o_router])
        # The probe reaches the server through the router.
        _root(["ip", "route", "add", str(wan), "via", self.router_lan_ip, "dev", self.probe_if])
        for port in (5201, 5202):
            self._services.append(services.start_iperf3(
                self.workdir / "iperf3", port=port, host=s_ip, netns=self.server.name))

    # ------------------------------------------------------------------ daemons

    def start_snmpd(self) -> routerstats.RouterCounters:
        """Start snmpd in the router; returns a source reading its WAN interface by name."""
        services.require_binary("snmpd")
        self.snmp_port = 16100 + secrets.randbelow(1000)
        self.community = secrets.token_hex(8)
        d = self.workdir / "snmpd"
        d.mkdir(parents=True, exist_ok=True)
        # v2c for the probe's address, and a v3 user that must authenticate and encrypt
        # (rouser ... priv) with SHA-256 and AES-128.
        self.usm_keys = (secrets.token_hex(8), secrets.token_hex(8))
        (d / "snmpd.conf").write_text(
            f"agentAddress udp:{self.router_lan_ip}:{self.snmp_port}\n"
            f"rocommunity {self.community} {self.probe_ip}/32\n"
            f'createUser netmon-ro SHA-256 "{self.usm_keys[0]}" AES "{self.usm_keys[1]}"\n'
            "rouser netmon-ro priv\n"
            f"persistentDir {d / 'persist'}\n", encoding="utf-8")
        for name, text in (("community", self.community), ("auth.key", self.usm_keys[0]),
                           ("priv.key", self.usm_keys[1])):
            (d / name).write_text(text + "\n", encoding="utf-8")
            (d / name).chmod(0o600)
        log = (d / "snmpd.log").open("wb")
        proc = self.router.spawn(["snmpd", "-f", "-Lo", "-C", "-c", str(d / "snmpd.conf"),
                                  "-p", str(d / "snmpd.pid")], stdout=log, stderr=log,
                                 env={"MIBS": "", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        cfg = routerstats.RouterCounters(source="snmp", host=self.router_lan_ip,
                                         port=self.snmp_port, community_file=d / "community",
                                         if_name=self.wan_if)
        services.wait_for(lambda: asyncio.run(router_poll.read(cfg)) is not None, 60,
                          "snmpd in the router namespace", proc, d / "snmpd.log")
        self.snmpv3 = routerstats.RouterCounters(
            source="snmp", version="3", host=self.router_lan_ip, port=self.snmp_port,
            user="netmon-ro", auth_protocol="sha256", auth_key_file=d / "auth.key",
            priv_protocol="aes", priv_key_file=d / "priv.key", if_name=self.wan_if)
        return cfg

    def start_miniupnpd(self) -> routerstats.RouterCounters:
        """Start miniupnpd in the router (its external interface: the WAN); returns a
        source reading it by its description URL."""
        services.require_binary("miniupnpd")
        self.upnp_port = 15000 + secrets.randbelow(1000)
        d = self.workdir / "miniupnpd"
        d.mkdir(parents=True, exist_ok=True)
        (d / "miniupnpd.conf").write_text(
            f"ext_ifname={self.wan_if}\nlistening_ip={self.router_lan_if}\n"
            f"http_port={self.upnp_port}\nenable_natpmp=no\nenable_upnp=yes\n"
            f"uuid={uuid.uuid4()}\nsystem_uptime=yes\n"
            "allow 1024-65535 0.0.0.0/0 1024-65535\n", encoding="utf-8")
        log = (d / "miniupnpd.log").open("wb")
        proc = self.router.spawn(["miniupnpd", "-d", "-f", str(d / "miniupnpd.conf"),
                                  "-P", str(d / "miniupnpd.pid")], stdout=log, stderr=log)
        url = f"http://{self.router_lan_ip}:{self.upnp_port}/rootDesc.xml"

        def described() -> bool:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status == 200

        services.wait_for(described, 60, "miniupnpd in the router namespace", proc,
                          d / "miniupnpd.log")
        return routerstats.RouterCounters(source="upnp", url=url)

    # ------------------------------------------------------------------ traffic

    def office_download(self, seconds: int = 120) -> subprocess.Popen[bytes]:
        """Start the office's download across the WAN (stopped by :meth:`stop_flows`)."""
        proc = self.office.spawn(["iperf3", "-c", self.server_ip, "-p", "5202", "-R",
                                  "-t", str(seconds)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        self._flows.append(proc)
        return proc

    def stop_flows(self) -> None:
        """Stop the office's traffic."""
        for proc in self._flows:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self._flows.clear()

    def destroy(self) -> None:
        """Everything the lab started and created (safe to call twice)."""
        self.stop_flows()
        for svc in self._services:
            svc.stop()
        self._services.clear()
        for ns in (self.office, self.router, self.server):
            with contextlib.suppress(AttributeError):
                ns.destroy()
