"""Ansible deployment (deploy/ansible): lint, syntax, and every rendered file validated by
the real program that reads it.

One session renders the whole example inventory offline on localhost (``render.yml``:
the roles' own tasks with paths pointed into a temporary folder) with a test CA made by
``pki.yml`` and random secrets; then the agent, the collector, mosquitto (with real MQTT
clients), nginx (with the agent's http and speedtest methods), systemd and influxd check
what came out.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import tomllib
import unicodedata
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from devstack import services
from netmon.contract import Topics
from tests.helpers import need
from tests.helpers.ansible import (
    ANSIBLE_DIR,
    INVENTORY,
    ROOT,
    Ansible,
    group_vars,
    host_vars,
    inventory_groups,
    make_secrets,
    recap_changed,
    role_defaults,
    role_playbook,
    task_status,
    tool,
)

GROUPS = inventory_groups()
PROBES = GROUPS["probes"]
BROKER = GROUPS["broker"][0]
COLLECTOR = GROUPS["collector"][0]
SERVER = GROUPS["measurement_servers"][0]
TOPICS = Topics("netmon/v1")
NOT_AUTHORIZED = 135
# The first test to use the rendered inventory pays for the whole render (a minute or two
# on a busy machine): more than the suite's default per-test limit.
pytestmark = pytest.mark.timeout(900)
#: PUBACK codes of an accepted publish: success, or success with no subscriber (16).
ACCEPTED = (0, 16)



@dataclass
class Rendered:
    """The example inventory rendered once for the session."""

    ansible: Ansible
    out: Path
    pki: Path
    secrets: dict[str, Any]

    def host(self, name: str) -> Path:
        return self.out / name

    def extra(self) -> dict[str, Any]:
        values = self.secrets | {"netmon_pki_dir": str(self.pki),
                                 "netmon_render_dir": str(self.out)}
        if os.geteuid() == 0 and _group_exists("mosquitto"):
            # As in production: broker files root:mosquitto 0640, because mosquitto
            # started as root reads the password file and ACL as user mosquitto.
            values["mosquitto_group"] = "mosquitto"
        return values


def _group_exists(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="module")
def service_base() -> Iterator[Path]:
    """A folder for this module's files outside pytest's base temp: mosquitto and nginx
    drop privileges when started as root and must traverse to their files, and pytest
    makes /tmp/pytest-of-<user> 0700 again whenever another pytest session starts."""
    base = Path(tempfile.mkdtemp(prefix="netmon-ansible-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def tmp_path(service_base: Path) -> Path:
    """Overrides pytest's ``tmp_path`` in this module: a fresh 0755 folder under
    :func:`service_base`, so the services these tests start can reach their files."""
    path = Path(tempfile.mkdtemp(dir=service_base))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def rendered(service_base: Path) -> Rendered:
    need("mosquitto_passwd")
    need("openssl")
    base = service_base / "ansible"
    base.mkdir(mode=0o755)
    ans = Ansible(base / "home")
    pki = base / "pki"
    ans.make_pki(pki)
    r = Rendered(ans, base / "out", pki, make_secrets())
    ans.playbook(ANSIBLE_DIR / "render.yml", r.extra())
    # Let services that drop privileges (mosquitto) traverse to their files; the files
    # themselves keep the modes the roles gave them.
    for d in (r.out, r.host(BROKER)):
        d.chmod(d.stat().st_mode | 0o001)
    return r


# --------------------------------------------------------------------------- lint


def test_ansible_lint_production_profile_offline(tmp_path: Path) -> None:
    lint = tool("ansible-lint")
    assert lint, "ansible-lint not installed (pip install -e '.[dev]')"
    cfg = yaml.safe_load((ANSIBLE_DIR / ".ansible-lint").read_text())
    # Offline: ansible-lint would otherwise try to install collections from Galaxy.
    assert cfg["offline"] is True and cfg["profile"] == "production"
    env = Ansible(tmp_path / "home").env() | {"ANSIBLE_LINT_SKIP_SCHEMA_UPDATE": "1"}
    proc = subprocess.run([lint, "--offline", "--profile", "production"], cwd=ANSIBLE_DIR,
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert "Profile 'production' was required, and it passed" in out, out[-3000:]


@pytest.mark.parametrize("playbook", ["site.yml", "probes.yml", "pki.yml", "render.yml"])
def test_syntax_check(playbook: str, tmp_path: Path) -> None:
    proc = Ansible(tmp_path / "home").playbook(ANSIBLE_DIR / playbook, args=("--syntax-check",))
    assert f"playbook: {ANSIBLE_DIR / playbook}" in proc.stdout


def test_only_builtin_modules_are_used() -> None:
    """No collection beyond ansible.builtin: nothing to fetch from Galaxy, ever."""
    used = set()
    for path in ANSIBLE_DIR.rglob("*.yml"):
        for match in re.finditer(r"^\s*-?\s*([a-z_]+\.[a-z_]+\.[a-z_0-9]+):", path.read_text(),
                                 re.M):
            used.add(match.group(1))
    assert used and all(m.startswith("ansible.builtin.") for m in used), sorted(used)


# --------------------------------------------------------------------------- secrets


def test_no_plaintext_secret_in_the_repository() -> None:
    for path in ANSIBLE_DIR.rglob("*"):
        if not path.is_file() or ".build" in path.parts:
            continue
        text = path.read_text(errors="replace")
        if path.name.startswith("vault") and not path.name.endswith(".example"):
            assert text.startswith("$ANSIBLE_VAULT;"), f"{path} is not vault-encrypted"
        assert "PRIVATE KEY-----" not in text or text.startswith("$ANSIBLE_VAULT;"), path
    example = yaml.safe_load((INVENTORY / "group_vars/all/vault.yml.example").read_text())
    # Every vault variable the inventory needs is in the example, with a placeholder only.
    assert set(example) == set(make_secrets())
    for probe in PROBES:
        assert example["vault_netmon_mqtt_probe_passwords"][probe].startswith("REPLACE")


def test_placeholder_passwords_are_refused(rendered: Rendered, tmp_path: Path) -> None:
    example = yaml.safe_load((INVENTORY / "group_vars/all/vault.yml.example").read_text())
    proc = rendered.ansible.playbook(
        ANSIBLE_DIR / "render.yml", example | {"netmon_pki_dir": str(rendered.pki),
                                               "netmon_render_dir": str(tmp_path / "out")},
        limit=BROKER, check=False)
    assert proc.returncode != 0
    assert f"probe {PROBES[0]}: needs an id" in proc.stdout, proc.stdout[-3000:]


def test_secret_files_are_private_and_secrets_stay_in_them(rendered: Rendered) -> None:
    values = [v for k, v in rendered.secrets.items() if isinstance(v, str)]
    values += list(rendered.secrets["vault_netmon_mqtt_probe_passwords"].values())
    secret_names = {"mqtt-password", "mqtt.password", "influxdb.password", "noc-mqtt.password",
                    "noc-influxdb.password", "bulletin-influxdb.password",
                    "bulletin-smtp.password",
                    "influx-password", "admin-password", "broker.key", "noc-config.key"}
    seen = 0
    for path in rendered.out.rglob("*"):
        if not path.is_file():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.name in secret_names:
            seen += 1
            assert mode & 0o007 == 0, f"{path} is readable by others ({oct(mode)})"
            continue
        text = path.read_text(errors="replace")
        leaked = [v for v in values if v in text]
        assert not leaked, f"a secret is in {path}"
    assert seen >= len(PROBES) + 6
    # The broker has only hashes.
    passwd = (rendered.host(BROKER) / "mosquitto" / "netmon.passwd").read_text()
    assert "$7$" in passwd


# --------------------------------------------------------------------------- agent


@pytest.mark.parametrize("probe", PROBES)
def test_every_agent_config_passes_check_config(rendered: Rendered, probe: str) -> None:
    agent = tool("netmon-agent")
    assert agent
    path = rendered.host(probe) / "probe" / "etc" / "agent.toml"
    proc = subprocess.run([agent, "check-config", "--config", str(path), "--json"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    verdict = json.loads(proc.stdout)
    assert verdict["ok"] and verdict["probe_id"] == probe

    # One source of truth: links, ISPs and budgets are the inventory's.
    from agent.config import load

    cfg = load(path)
    links = {link["name"]: link for link in host_vars(probe)["netmon_links"]}
    assert set(cfg.links) == set(links)
    for name, link in cfg.links.items():
        assert (link.access, link.isp, link.interface) == (
            links[name]["access"], links[name]["isp"], links[name]["interface"])
        assert link.budget_mb == links[name].get("budget_mb")
    assert cfg.broker.username == probe and cfg.broker.tls
    assert cfg.broker.read_password() == rendered.secrets[
        "vault_netmon_mqtt_probe_passwords"][probe]
    assert cfg.remote_config.enabled
    # Throughput on metered mobile links only where the plan says so.
    fixed = {n for n, lk in links.items() if lk["access"] == "fixed"}
    if fixed:
        assert set(cfg.tests["iperf3"].links or ()) == fixed
    else:
        assert "iperf3" not in cfg.tests


def test_probes_spread_over_the_iperf3_ports(rendered: Rendered) -> None:
    ports = []
    for probe in PROBES:
        data = tomllib.loads((rendered.host(probe) / "probe/etc/agent.toml").read_text())
        if "iperf3" in data["tests"]:
            ports.append(data["tests"]["iperf3"]["port"])
    server_ports = group_vars()["netmon_iperf3_ports"]
    most = -(-len(PROBES) // len(server_ports))  # ceil: round-robin over every probe
    assert set(ports) <= set(server_ports) and len(set(ports)) > 1, ports
    assert max(ports.count(p) for p in ports) <= most, ports


def test_ipv6_and_tslcd_tests_are_deployed_and_allowed(rendered: Rendered) -> None:
    """Every probe runs the IPv6 test on each link and TSLCD reachability on its fixed
    link, against the inventory's endpoints (a probe's own list overrides the global one),
    and a signed remote plan may target those hosts."""
    from agent.config import load

    everywhere = group_vars()
    overridden = 0
    for probe in PROBES:
        cfg = load(rendered.host(probe) / "probe" / "etc" / "agent.toml")
        endpoints = host_vars(probe).get("netmon_tslcd_endpoints",
                                         everywhere["netmon_tslcd_endpoints"])
        overridden += "netmon_tslcd_endpoints" in host_vars(probe)
        ipv6 = cfg.tests["ipv6"]
        assert ipv6.method == "ipv6" and ipv6.links is None  # every link
        assert ipv6.options.target == everywhere["netmon_ipv6_test_host"]
        links = {link["name"]: link for link in host_vars(probe)["netmon_links"]}
        fixed = {n for n, lk in links.items() if lk["access"] == "fixed"}
        if not fixed:
            assert "tslcd" not in cfg.tests
            continue
        tslcd = cfg.tests["tslcd"]
        assert tslcd.method == "reachability" and set(tslcd.links or ()) == fixed
        opts = tslcd.options
        assert [opts.target, *opts.endpoints] == endpoints  # type: ignore[attr-defined]
        allowed = set(cfg.remote_config.allowed_targets)
        hosts = {e.removeprefix("icmp:") if e.startswith("icmp:") else e.rsplit(":", 1)[0]
                 for e in endpoints}
        assert hosts | {everywhere["netmon_ipv6_test_host"]} <= allowed, (hosts, allowed)
    assert overridden == 1
    # Only documentation addresses and .example names in the example inventory.
    for endpoint in everywhere["netmon_tslcd_endpoints"]:
        host = endpoint.removeprefix("icmp:").rsplit(":", 1)[0]
        assert host.endswith(".example") or host.startswith("192.0.2."), endpoint


# --------------------------------------------------------------------------- collector


#: The hatinh inventory's probes on the map from 1 July 2025: (unit, old district), read
#: by hand from collector/core/reference/ha-tinh-communes-2025.csv by each probe's old
#: commune.
HATINH_UNITS = {
    "ht-camxuyen-camthanh": ("Xã Cẩm Bình", "Huyện Cẩm Xuyên"),        # was Cẩm Thành
    "ht-canloc-thuanthien": ("Xã Tùng Lộc", "Huyện Can Lộc"),         # was Thuần Thiện
    "ht-huongkhe-phuongdien": ("Xã Hà Linh", "Huyện Hương Khê"),      # was Điền Mỹ
    "ht-kyanh-kydong": ("Xã Kỳ Anh", "Huyện Kỳ Anh"),                 # was Kỳ Đồng
    "ht-thachha-thachdai": ("Phường Hà Huy Tập", "Thành phố Hà Tĩnh"),  # was Thạch Đài
}


def test_collector_config_and_site_registry_load(rendered: Rendered) -> None:
    from collector import config as collector_config
    from collector.core.registry import load_sites

    etc = rendered.host(COLLECTOR) / "collector" / "etc"
    cfg = collector_config.load(etc / "collector.toml")
    assert cfg.mqtt.username == "netmon_collector" and cfg.mqtt.tls
    assert cfg.influxdb.create_database is False  # the write-only user cannot
    assert cfg.influxdb.password_file is not None
    assert cfg.influxdb.password_file.read_text().strip() == rendered.secrets[
        "vault_netmon_influxdb_collector_password"]
    sites = load_sites(cfg.registry.path, collector_config.unit_map(cfg))
    assert sorted(sites) == PROBES
    for probe in PROBES:
        want = host_vars(probe)["netmon_site"]
        got = sites[probe]
        assert got.name == unicodedata.normalize("NFC", want["name"])
        assert (got.commune_code, got.legacy_commune_code) == (
            want["commune_code"], want["legacy_commune_code"])
        assert (got.latitude, got.longitude, got.site_type) == (
            want["latitude"], want["longitude"], want["site_type"])
    # Unit names and old districts come from the reference data, not the inventory.
    assert {p: (s.commune, s.district) for p, s in sites.items()} == HATINH_UNITS

    collector = tool("netmon-collector")
    assert collector
    for name in ("collector.toml", "noc.toml"):
        proc = subprocess.run([collector, "check-config", "--config", str(etc / name), "--json"],
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        verdict = json.loads(proc.stdout)
        assert verdict["ok"] and verdict["sites"] == len(PROBES), verdict
        assert verdict["units"] == 69, verdict
        assert not verdict["warnings"], verdict
    noc = collector_config.load(etc / "noc.toml")
    assert noc.mqtt.username == "netmon_noc" and noc.mqtt.shared_group is None
    # NOC commands read InfluxDB: the read-only account, not the collector's write-only one.
    assert noc.influxdb.username == "netmon_grafana"


# --------------------------------------------------------------------------- broker


#: The service listener's port of each test broker, by the probes' listener port.
SERVICE_PORTS: dict[int, int] = {}


def _test_broker_config(rendered: Rendered, workdir: Path, port: int,
                        mosquitto_dir: Path | None = None) -> str:
    """The rendered mosquitto.conf with only listener port, persistence, log and pid
    rewritten for a loopback test (and, for a copy, the folder of its files); TLS,
    password file and ACL are the rendered ones."""
    rendered_dir = rendered.host(BROKER) / "mosquitto"
    text = (rendered_dir / "mosquitto.conf").read_text()
    if mosquitto_dir is not None:
        text = text.replace(str(rendered_dir), str(mosquitto_dir))
    # Three listeners (probes, services, enrollment): the probes' on ``port``, the service
    # one on a free port recorded in ``SERVICE_PORTS[port]``, the enrollment one on another.
    service_port = services.free_port()
    SERVICE_PORTS[port] = service_port
    ports = iter([port, service_port, services.free_port()])
    text, n = re.subn(r"^listener \d+.*$", lambda m: f"listener {next(ports)} 127.0.0.1", text,
                      flags=re.M)
    assert n == 3
    text = re.sub(r"^persistence_location .*$", f"persistence_location {workdir}/", text,
                  flags=re.M)
    text = re.sub(r"^pid_file .*$\n", "", text, flags=re.M)
    text = re.sub(r"^log_dest .*$", f"log_dest file {workdir}/mosquitto.log", text, flags=re.M)
    return text


def _start_broker(rendered: Rendered, tmp_path: Path,
                  mosquitto_dir: Path | None = None) -> services.Service:
    need("mosquitto")
    workdir = tmp_path / "broker"
    workdir.mkdir()
    workdir.chmod(0o777)  # mosquitto runs as user mosquitto when started as root
    port = services.free_port()
    return services.start_mosquitto(
        workdir, port, config=_test_broker_config(rendered, workdir, port, mosquitto_dir))


class Client:
    """A paho MQTT v5 client over TLS that records acknowledgements and messages."""

    def __init__(self, port: int, ca: Path, user: str | None, password: str | None) -> None:
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{user}-{os.getpid()}",
                             protocol=mqtt.MQTTv5)
        if user:
            self.c.username_pw_set(user, password)
        self.c.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
        self.connected = threading.Event()
        self.connect_rc: ReasonCode | None = None
        self.acks: dict[int, int] = {}
        self.subacks: dict[int, list[int]] = {}
        self.messages: list[tuple[str, bytes]] = []
        self.cond = threading.Condition()
        self.c.on_connect = self._on_connect
        self.c.on_publish = self._on_publish
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = self._on_message
        self.c.connect("localhost", port)
        self.c.loop_start()
        assert self.connected.wait(15), "no CONNACK"

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        self.connect_rc = rc
        self.connected.set()

    def _on_publish(self, c: Any, u: Any, mid: int, rc: ReasonCode, props: Any) -> None:
        with self.cond:
            self.acks[mid] = rc.value
            self.cond.notify_all()

    def _on_subscribe(self, c: Any, u: Any, mid: int, rcs: list[ReasonCode], props: Any) -> None:
        with self.cond:
            self.subacks[mid] = [r.value for r in rcs]
            self.cond.notify_all()

    def _on_message(self, c: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.messages.append((msg.topic, msg.payload))
            self.cond.notify_all()

    @property
    def ok(self) -> bool:
        return self.connect_rc is not None and not self.connect_rc.is_failure

    def publish(self, topic: str, payload: bytes) -> int:
        """QoS 1 publish; the PUBACK reason code (0 = accepted, 135 = not authorised)."""
        info = self.c.publish(topic, payload, qos=1)
        with self.cond:
            assert self.cond.wait_for(lambda: info.mid in self.acks, 10), "no PUBACK"
            return self.acks[info.mid]

    def subscribe(self, topic: str) -> int:
        """The SUBACK reason code (granted QoS, or 135)."""
        _, mid = self.c.subscribe(topic, qos=1)
        with self.cond:
            assert self.cond.wait_for(lambda: mid in self.subacks, 10), "no SUBACK"
            return self.subacks[mid][0]

    def wait_message(self, payload: bytes, timeout: float = 5) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: any(p == payload for _, p in self.messages),
                                      timeout)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _acl_rules(text: str) -> set[tuple[str, str]]:
    """An ACL file's rules as (account, rule); ``pattern`` rules apply to every account
    ("*"), ``topic`` rules to the ``user`` above them. Comments and order do not count."""
    rules, user = set(), ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("user "):
            user = line.split(None, 1)[1]
        elif line.startswith(("topic ", "pattern ")):
            rules.add(("*" if line.startswith("pattern ") else user, " ".join(line.split())))
    return rules


def test_broker_acl_is_the_fleet_module_s(rendered: Rendered) -> None:
    """The role's netmon.acl.j2 grants exactly what collector.fleet.acl.mosquitto_acl() (the
    ACL of the local stack and the fleet tests) grants."""
    from collector.fleet.acl import mosquitto_acl

    settings = group_vars()
    noc, collector = settings["netmon_mqtt_noc_user"], settings["netmon_mqtt_collector_user"]
    role = _acl_rules((rendered.host(BROKER) / "mosquitto" / "netmon.acl").read_text())
    fleet = _acl_rules(mosquitto_acl(TOPICS.prefix, noc_user=noc, collector_user=collector))
    assert role == fleet, (role - fleet, fleet - role)


def test_broker_listeners_are_the_fleet_module_s(rendered: Rendered) -> None:
    """The role's listener part of mosquitto.conf is collector.fleet.acl.mosquitto_listeners()
    (the one definition devstack and tests/fleet/test_sessions.py run): probes' client id
    = username, service accounts alone on the service listener."""
    from collector.fleet.acl import Listener, mosquitto_listeners

    d = rendered.host(BROKER) / "mosquitto"
    text = (d / "mosquitto.conf").read_text()
    tls = (f"{d}/certs/ca.crt", f"{d}/certs/broker.crt", f"{d}/certs/broker.key", "tlsv1.2")
    want = mosquitto_listeners(
        Listener(8883, "", f"{d}/netmon.passwd", f"{d}/netmon.acl", True, tls),
        Listener(8884, "", f"{d}/netmon-services.passwd", f"{d}/netmon.acl", False, tls),
        Listener(8885, "", f"{d}/netmon-enrollment.passwd", f"{d}/netmon-enrollment.acl",
                 False, tls))
    assert text[text.index("# Sessions"):] == want
    from collector.fleet.acl import enrollment_acl

    assert _acl_rules((d / "netmon-enrollment.acl").read_text()) == \
        _acl_rules(enrollment_acl(TOPICS.prefix))
    assert [ln.split(":")[0] for ln in
            (d / "netmon-enrollment.passwd").read_text().splitlines()] == ["netmon_enroll"]
    services_passwd = (d / "netmon-services.passwd").read_text()
    assert sorted(ln.split(":")[0] for ln in services_passwd.splitlines()) == \
        ["netmon_collector", "netmon_noc"]
    probes_passwd = (d / "netmon.passwd").read_text()
    assert {p for p in PROBES} <= {ln.split(":")[0] for ln in probes_passwd.splitlines()}


def test_broker_persistence_is_devstack_s(rendered: Rendered) -> None:
    """The deployed broker saves its store as often as devstack's (the settings whose loss
    window docs/operations.md states, and the tests' brokers use)."""
    text = (rendered.host(BROKER) / "mosquitto" / "mosquitto.conf").read_text()
    conf = dict(ln.split(None, 1) for ln in text.splitlines()
                if ln.startswith(("autosave_", "persistence ")))
    assert conf == {"persistence": "true",
                    "autosave_interval": str(services.AUTOSAVE_INTERVAL),
                    "autosave_on_changes": "true" if services.AUTOSAVE_ON_CHANGES else "false"}


@pytest.fixture
def broker(rendered: Rendered, tmp_path: Path) -> Iterator[services.Service]:
    svc = _start_broker(rendered, tmp_path)
    yield svc
    svc.stop()


def test_broker_acl_with_real_clients(rendered: Rendered, broker: services.Service) -> None:
    ca = rendered.pki / "ca.crt"
    pw = rendered.secrets["vault_netmon_mqtt_probe_passwords"]
    a, b = PROBES[0], PROBES[1]
    clients: list[Client] = []

    def connect(user: str | None, password: str | None) -> Client:
        c = Client(broker.port, ca, user, password)
        clients.append(c)
        return c

    try:
        collector = connect("netmon_collector",
                            rendered.secrets["vault_netmon_mqtt_collector_password"])
        assert collector.ok, collector.connect_rc
        # mosquitto's ACL file grants every SUBSCRIBE and filters each delivery, so read
        # rights are checked by what arrives, write rights by the PUBACK reason code.
        for topic in (TOPICS.all_results(), TOPICS.all_status(), TOPICS.config(a)):
            assert collector.subscribe(topic) == 1
        assert collector.publish(TOPICS.results(a), b"forged") == NOT_AUTHORIZED
        assert collector.publish(TOPICS.dead_letters(), b"rejected") in ACCEPTED

        probe_a = connect(a, pw[a])
        assert probe_a.ok, probe_a.connect_rc
        for topic in (TOPICS.config(a), TOPICS.config(b), TOPICS.all_results()):
            probe_a.subscribe(topic)
        assert probe_a.publish(TOPICS.results(a), b"a-own") in ACCEPTED
        assert probe_a.publish(TOPICS.status(a), b"a-status") in ACCEPTED
        assert collector.wait_message(b"a-own") and collector.wait_message(b"a-status")
        # Probe A on probe B's topics: refused, and nothing reaches the collector.
        assert probe_a.publish(TOPICS.results(b), b"a-as-b") == NOT_AUTHORIZED
        assert probe_a.publish(TOPICS.status(b), b"a-as-b-status") == NOT_AUTHORIZED
        # A probe cannot write a config, not even its own.
        assert probe_a.publish(TOPICS.config(a), b"self-config") == NOT_AUTHORIZED
        assert probe_a.publish(TOPICS.config(b), b"b-config") == NOT_AUTHORIZED

        # Only the NOC account writes configs; each probe receives only its own.
        noc = connect("netmon_noc", rendered.secrets["vault_netmon_mqtt_noc_password"])
        assert noc.ok, noc.connect_rc
        assert noc.publish(TOPICS.config(b), b"plan-for-b") in ACCEPTED
        assert noc.publish(TOPICS.config(a), b"plan-for-a") in ACCEPTED
        assert probe_a.wait_message(b"plan-for-a")
        assert noc.publish(TOPICS.results(a), b"noc-forged") == NOT_AUTHORIZED

        # Probe B's own publish goes through to the collector, not to probe A.
        probe_b = connect(b, pw[b])
        assert probe_b.publish(TOPICS.results(b), b"b-own") in ACCEPTED
        assert collector.wait_message(b"b-own")
        assert not probe_a.wait_message(b"b-own", timeout=1)
        got = [p for _, p in collector.messages]
        for forged in (b"a-as-b", b"a-as-b-status", b"noc-forged", b"self-config",
                       b"plan-for-a", b"plan-for-b"):
            assert forged not in got, forged
        got_a = [p for _, p in probe_a.messages]
        assert b"plan-for-b" not in got_a and b"a-own" not in got_a
    finally:
        for c in clients:
            c.close()


def test_broker_refuses_anonymous_wrong_password_and_cross_login(
        rendered: Rendered, broker: services.Service) -> None:
    ca = rendered.pki / "ca.crt"
    pw = rendered.secrets["vault_netmon_mqtt_probe_passwords"]
    a, b = PROBES[0], PROBES[1]
    for user, password in ((None, None), (a, "wrong-password"), (a, pw[b]),
                           ("netmon_collector", pw[a])):
        c = Client(broker.port, ca, user, password)
        try:
            assert not c.ok, f"{user} logged in"
        finally:
            c.close()
    # Plain MQTT without TLS is not served at all.
    plain = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    plain.username_pw_set(a, pw[a])
    connected = False
    try:
        plain.connect("127.0.0.1", broker.port)
        for _ in range(6):  # a CONNACK would arrive well within these 3 s
            if plain.loop(timeout=0.5) != 0:
                break
        connected = plain.is_connected()
    except Exception:  # any failure: the TLS listener does not speak plain MQTT
        pass
    finally:
        plain.disconnect()
    assert not connected, "plain MQTT accepted"


def test_service_listener_takes_only_service_accounts(
        rendered: Rendered, broker: services.Service) -> None:
    """The deployed broker's service listener (TLS) lets the collector and NOC in and no
    probe (so no probe can choose a client id anywhere); the probes' listener keeps
    taking probes (tests/fleet/test_sessions.py attacks the same shape)."""
    ca = rendered.pki / "ca.crt"
    pw = rendered.secrets["vault_netmon_mqtt_probe_passwords"]
    service_port = SERVICE_PORTS[broker.port]
    for port, user, password, admitted in (
            (service_port, PROBES[0], pw[PROBES[0]], False),
            (service_port, "netmon_collector",
             rendered.secrets["vault_netmon_mqtt_collector_password"], True),
            (service_port, "netmon_noc", rendered.secrets["vault_netmon_mqtt_noc_password"],
             True),
            (broker.port, PROBES[0], pw[PROBES[0]], True)):
        c = Client(port, ca, user, password)
        try:
            assert c.ok == admitted, (port, user, c.connect_rc)
        finally:
            c.close()


def test_rotating_a_probe_password_and_idempotent_rerun(rendered: Rendered,
                                                        tmp_path: Path) -> None:
    """Re-running with the same vault leaves the password file alone; rotating one
    probe's password rebuilds it, and after SIGHUP the old password is refused. An
    enrolled probe's account (written by ``probes enroll approve`` into a file the role
    never writes) survives the rebuild."""
    tmp_path.chmod(0o755)
    mosq = tmp_path / "mosquitto"  # a copy (owners kept): the session's files stay as rendered
    subprocess.run(["cp", "-a", str(rendered.host(BROKER) / "mosquitto"), str(mosq)],
                   check=True)
    broker = _start_broker(rendered, tmp_path, mosq)
    play = role_playbook(tmp_path / "broker.yml", BROKER, "mosquitto", {
        "mosquitto_manage_service": False, "mosquitto_conf_dir": str(mosq)})
    passwd = mosq / "netmon.passwd"
    before = passwd.read_bytes()
    try:
        proc = rendered.ansible.playbook(play, rendered.extra())
        # (mosquitto.conf changes: it names this copy's folder.)
        assert task_status(proc.stdout, "Hash the passwords in place") == "skipping"
        assert passwd.read_bytes() == before

        a = PROBES[0]
        old = rendered.secrets["vault_netmon_mqtt_probe_passwords"][a]
        rotated = json.loads(json.dumps(rendered.secrets))
        rotated["vault_netmon_mqtt_probe_passwords"][a] = new = old[::-1] + "-rotated"
        enrolled_pw = "enrolled-probe-password-0123456789"
        subprocess.run([need("mosquitto_passwd"), "-c", "-b",
                        str(mosq / "netmon-enrolled.passwd"), "ht-enrolled-01", enrolled_pw],
                       check=True, capture_output=True)
        proc = rendered.ansible.playbook(play, rendered.extra() | rotated)
        assert task_status(proc.stdout, "Hash the passwords in place") == "changed"
        assert passwd.read_bytes() != before
        broker.proc.send_signal(signal.SIGHUP)  # what the role's "Reload mosquitto" does
        ca = rendered.pki / "ca.crt"
        for _ in range(50):
            c = Client(broker.port, ca, a, new)
            ok = c.ok
            c.close()
            if ok:
                break
            threading.Event().wait(0.1)
        assert ok, "new password refused after reload"
        c = Client(broker.port, ca, a, old)
        try:
            assert not c.ok, "old password still accepted"
        finally:
            c.close()
        c = Client(broker.port, ca, "ht-enrolled-01", enrolled_pw)
        try:
            assert c.ok, "the enrolled probe's account was lost in the rebuild"
        finally:
            c.close()
    finally:
        broker.stop()


# --------------------------------------------------------------------------- measurement server


@pytest.fixture
def measurement_server(rendered: Rendered, tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """The netmon_server role run for the server host with the web root prepared (small
    download object) and nginx pointed at loopback and a temporary folder."""
    need("nginx")
    tmp_path.chmod(0o755)
    port = services.free_port()
    conf_dir = tmp_path / "server"
    play = role_playbook(tmp_path / "server.yml", SERVER, "netmon_server", {
        "netmon_server_manage_service": False, "netmon_server_systemd_dir": str(conf_dir)})
    rendered.ansible.playbook(play, rendered.extra() | {
        "netmon_server_conf_dir": str(conf_dir),
        "netmon_server_webroot": str(tmp_path / "www"),
        "netmon_server_blob_mib": 8,
        "netmon_server_listen": [f"127.0.0.1:{port}"],
        "netmon_server_pid_file": str(tmp_path / "nginx.pid"),
        "netmon_server_temp_dir": str(tmp_path / "tmp"),
        "netmon_server_error_log": str(tmp_path / "error.log"),
        "netmon_server_worker_processes": 1,
        # nginx is started as root here; the real unit starts it as netmon-www instead.
        "netmon_server_nginx_user": "root" if os.geteuid() == 0 else "",
    })
    (tmp_path / "tmp").mkdir(exist_ok=True)
    yield conf_dir, port


def test_rendered_nginx_config_passes_nginx_t(rendered: Rendered, tmp_path: Path) -> None:
    nginx = need("nginx")
    # The production rendering, with only pid, log and temp paths moved for a test.
    text = (rendered.host(SERVER) / "server" / "nginx.conf").read_text()
    assert "listen 0.0.0.0:80;" in text and "listen [::]:80;" in text
    for old in ("/run/netmon-nginx/nginx.pid", "/var/log/netmon-nginx/error.log",
                "/var/cache/netmon-nginx"):
        assert old in text
        text = text.replace(old, str(tmp_path / Path(old).name))
    (tmp_path / "netmon-nginx").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    proc = subprocess.run([nginx, "-t", "-c", str(conf), "-p", str(tmp_path)],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "syntax is ok" in proc.stderr and "test is successful" in proc.stderr


def test_agent_methods_measure_against_the_deployed_nginx(
        measurement_server: tuple[Path, int], tmp_path: Path) -> None:
    from agent.methods.base import LinkBinding, MethodContext
    from agent.methods.registry import get

    conf_dir, port = measurement_server
    nginx = need("nginx")
    conf = conf_dir / "nginx.conf"
    proc = subprocess.run([nginx, "-t", "-c", str(conf), "-p", str(tmp_path)],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    svc = services.start_nginx(tmp_path / "nginx-run", conf.read_text(), port)
    try:
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/speedtest/latency.txt", timeout=5) as resp:
            assert resp.read() == b"test=test\n"
        with urllib.request.urlopen(f"{base}/speedtest/random350x350.jpg", timeout=5) as resp:
            assert len(resp.read()) == 350 * 350 * 2
        ctx = MethodContext(probe_id=PROBES[0], agent_version="test",
                            link=LinkBinding("fibre", "fixed", "VNPT"))
        for method, options in (
                ("http", {"target": base, "duration_s": 2, "warmup_s": 0.5, "streams": 2,
                          "loaded_latency": False}),
                ("speedtest", {"target": f"{base}/speedtest/upload.php", "length_s": 1,
                               "loaded_latency": False, "download_threads": 2,
                               "upload_threads": 2})):
            cls = get(method)
            results = asyncio.run(cls().run(ctx, cls.decl.options(**options)))
            assert len(results) == 1
            res = results[0]
            assert res.ok, (method, res.error)
            m = res.metrics.values()
            assert m["download_mbps"] > 0 and m["upload_mbps"] > 0, (method, m)
    finally:
        svc.stop()


def test_iperf3_unit_command_serves_the_agent_s_iperf3_method(rendered: Rendered,
                                                             tmp_path: Path) -> None:
    """The rendered netmon-iperf3@.service's ExecStart, instantiated on a free port (bound
    to loopback for the test), is a server the agent's iperf3 method measures against."""
    from agent.methods.base import LinkBinding, MethodContext
    from agent.methods.registry import get

    need("iperf3")
    unit = (rendered.host(SERVER) / "server" / "netmon-iperf3@.service").read_text()
    exec_start = re.search(r"^ExecStart=(.+)$", unit, flags=re.M)
    assert exec_start and "%i" in exec_start.group(1)
    port = services.free_port()
    argv = [*exec_start.group(1).replace("%i", str(port)).split(), "--bind", "127.0.0.1"]
    log = tmp_path / "iperf3.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        services.wait_for(lambda: services.tcp_open("127.0.0.1", port), 10, "iperf3", proc, log)
        ctx = MethodContext(probe_id=PROBES[0], agent_version="test",
                            link=LinkBinding("fibre", "fixed", "VNPT"))
        cls = get("iperf3")
        opts = cls.decl.options(target="127.0.0.1", port=port, duration_s=1, omit_s=0,
                                streams=1, loaded_latency=False)
        (res,) = asyncio.run(cls().run(ctx, opts))
        assert res.ok, res.error
        assert res.metrics.values()["download_mbps"] > 0
    finally:
        proc.terminate()
        proc.wait(10)
    # Several ports, one unit instance each, as the inventory says.
    assert len(group_vars()["netmon_iperf3_ports"]) > 1


def test_server_layout_matches_measurement_server_module() -> None:
    from devstack import measurement_server as ms

    sizes = role_defaults("netmon_server")["netmon_server_speedtest_sizes"]
    assert sizes == list(ms.SPEEDTEST_SIZES)
    assert ms.DOWNLOAD_PATH == "/download/blob.bin" and ms.UPLOAD_PATH == "/upload"


# --------------------------------------------------------------------------- systemd


def test_rendered_systemd_units_verify(rendered: Rendered, tmp_path: Path) -> None:
    analyze = need("systemd-analyze")
    agent, collector = tool("netmon-agent"), tool("netmon-collector")
    assert agent and collector
    units = {
        "netmon-agent.service": (rendered.host(PROBES[0]) / "probe" / "netmon-agent.service",
                                 "/opt/netmon/venv/bin/netmon-agent", agent),
        "netmon-collector.service": (
            rendered.host(COLLECTOR) / "collector" / "netmon-collector.service",
            "/opt/netmon/venv/bin/netmon-collector", collector),
        "netmon-nginx.service": (rendered.host(SERVER) / "server" / "netmon-nginx.service",
                                 None, None),
        "netmon-iperf3@5201.service": (
            rendered.host(SERVER) / "server" / "netmon-iperf3@.service", None, None),
    }
    for name, (src, venv_path, real) in units.items():
        text = src.read_text()
        repo_unit = ROOT / "deploy" / "systemd" / src.name
        if repo_unit.exists():  # one unit for everyone: the role installs it unchanged
            assert text == repo_unit.read_text(), src.name
        if venv_path:  # the venv does not exist here: point at the installed entry point
            assert venv_path in text
            text = text.replace(venv_path, real)
        if name == "netmon-agent.service":  # nor the releases: point at this Python
            releases = "/var/lib/netmon-agent/releases"
            for env in ("current", "stable"):
                assert f"{releases}/{env}/bin/python -m agent.cli" in text
                text = text.replace(f"{releases}/{env}/bin/python", sys.executable)
        unit = tmp_path / name
        unit.write_text(text)
        proc = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True,
                              text=True, timeout=60, check=False)
        problems = [line for line in (proc.stdout + proc.stderr).splitlines()
                    if name.split("@")[0] in line or "Unknown" in line]
        assert proc.returncode == 0 and not problems, (name, proc.stdout, proc.stderr)


# --------------------------------------------------------------------------- influxdb


def test_influxdb_role_least_privilege_and_rotation(rendered: Rendered, tmp_path: Path) -> None:
    need("influxd")
    tmp_path.chmod(0o755)
    svc = services.start_influxd(tmp_path / "influxd", auth=True)
    play = role_playbook(tmp_path / "influx.yml", GROUPS["influxdb"][0], "influxdb", {
        "influxdb_manage_service": False,
        "influxdb_conf_path": str(tmp_path / "conf" / "influxdb.conf")})
    url = f"http://127.0.0.1:{svc.port}"
    extra = rendered.extra() | {"netmon_influxdb_url": url}
    s = rendered.secrets
    try:
        host = GROUPS["influxdb"][0]
        first = rendered.ansible.playbook(play, extra)
        assert recap_changed(first.stdout, host) > 0
        second = rendered.ansible.playbook(play, extra)
        assert recap_changed(second.stdout, host) == 0, second.stdout[-3000:]

        def call(path: str, user: str, password: str, data: bytes | None = None,
                 **params: str) -> int:
            import base64
            import urllib.error
            import urllib.parse

            req = urllib.request.Request(f"{url}{path}?{urllib.parse.urlencode(params)}",
                                         data=data, method="POST" if data else "GET")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return int(resp.status)
            except urllib.error.HTTPError as exc:
                return int(exc.code)

        coll = ("netmon_collector", s["vault_netmon_influxdb_collector_password"])
        graf = ("netmon_grafana", s["vault_netmon_influxdb_grafana_password"])
        line = b"results,probe=x download_mbps=1 1700000000000"
        assert call("/write", *coll, data=line, db="netmon", precision="ms") == 204
        # The collector reads back what it wrote (rollups, registry points) but
        # administers nothing.
        assert call("/query", *coll, db="netmon", q="SELECT * FROM results") == 200
        assert call("/query", *coll, q='DROP DATABASE "netmon"') == 403
        assert call("/query", *coll, q='CREATE USER "x" WITH PASSWORD \'y-long-enough\'') == 403
        assert call("/query", *graf, db="netmon", q="SELECT * FROM results") == 200
        assert call("/write", *graf, data=line, db="netmon", precision="ms") == 403
        assert call("/query", *graf, q='DROP DATABASE "netmon"') == 403
        admin = ("netmon_admin", s["vault_netmon_influxdb_admin_password"])
        with urllib.request.urlopen(urllib.request.Request(
                f"{url}/query?db=netmon&q=SHOW+RETENTION+POLICIES&u={admin[0]}&p={admin[1]}"),
                timeout=10) as resp:
            rps = json.loads(resp.read())["results"][0]["series"][0]["values"]
        assert rps[-1][:2] == ["netmon_10y", "87600h0m0s"] and rps[-1][4] is True, rps
        # 52-week shard groups (a year of dashboards reads 1 or 2 shards, not 53).
        assert rps[-1][2] == "8736h0m0s", rps

        # The NOC's `probes list` reads with noc.toml (read-only account).
        collector_bin = tool("netmon-collector")
        assert collector_bin
        etc = rendered.host(COLLECTOR) / "collector" / "etc"
        env = os.environ | {"NETMON_INFLUXDB__URL": url}
        listed = subprocess.run([collector_bin, "probes", "list", "--config",
                                 str(etc / "noc.toml"), "--json"], env=env,
                                capture_output=True, text=True, timeout=60, check=False)
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert sorted(r["probe_id"] for r in json.loads(listed.stdout)) == PROBES

        # Rotation: a new vault password is applied, the old one stops working.
        rotated = extra | {"vault_netmon_influxdb_collector_password": "rotated-" + coll[1]}
        rendered.ansible.playbook(play, rotated)
        assert call("/write", *coll, data=line, db="netmon", precision="ms") == 401
        assert call("/write", "netmon_collector", "rotated-" + coll[1], data=line,
                    db="netmon", precision="ms") == 204

        # A vault admin password that is not the server's stops the play, saying so.
        wrong = rotated | {"vault_netmon_influxdb_admin_password": "not-the-admin-password-1"}
        proc = rendered.ansible.playbook(play, wrong, check=False)
        assert proc.returncode != 0
        assert "cannot log in with the vault" in proc.stdout, proc.stdout[-3000:]
    finally:
        svc.stop()


def test_role_paths_match_the_repository_units() -> None:
    """The roles install deploy/systemd/*.service unchanged, so their paths must agree."""
    p = role_defaults("netmon_probe")
    agent_unit = (ROOT / "deploy/systemd/netmon-agent.service").read_text()
    home, conf = p["netmon_probe_home"], p["netmon_probe_conf_dir"]
    releases = p["netmon_probe_releases_dir"].replace(
        "{{ netmon_probe_state_dir }}", p["netmon_probe_state_dir"])
    assert releases.startswith(p["netmon_probe_state_dir"] + "/")  # writable: StateDirectory
    assert (f"ExecStart={releases}/current/bin/python -m agent.cli run "
            f"--config {conf}/agent.toml") in agent_unit
    assert f"update-init --root {releases}\n" in agent_unit
    assert (f"ExecStartPre=-{releases}/stable/bin/python -m agent.cli update-guard "
            f"--root {releases}\n") in agent_unit
    assert f"ExecStartPre={home}/venv/bin/netmon-agent update-init" in agent_unit
    assert f"LoadCredential=mqtt-password:{conf}/mqtt-password" in agent_unit
    assert f"StateDirectory={Path(p['netmon_probe_state_dir']).name}" in agent_unit
    c = role_defaults("netmon_collector")
    unit = (ROOT / "deploy/systemd/netmon-collector.service").read_text()
    home, conf = c["netmon_collector_home"], c["netmon_collector_conf_dir"]
    assert f"ExecStart={home}/venv/bin/netmon-collector run --config {conf}/collector.toml" in unit
    assert f"StateDirectory={Path(c['netmon_collector_state_dir']).name}" in unit
    assert f"User={c['netmon_collector_user']}" in unit


# --------------------------------------------------------------------------- grafana


def test_grafana_provisioning_is_the_repository_s_and_gets_its_environment(
        rendered: Rendered) -> None:
    """Grafana cannot run here: check the installed files are the generated ones and that
    every $__env{} / $__file{} they expand is provided by the role."""
    g = rendered.host(GROUPS["grafana"][0]) / "grafana"
    src = ROOT / "collector" / "dashboards"
    ds_text = (g / "etc/provisioning/datasources/netmon.yaml").read_text()
    assert ds_text == (src / "provisioning/datasources/influxdb-1x.yaml").read_text()
    for lang in ("vi", "en"):
        for f in (src / "json" / lang).glob("*.json"):
            assert (g / "dashboards" / lang / f.name).read_text() == f.read_text()
    provider = yaml.safe_load((g / "etc/provisioning/dashboards/netmon.yaml").read_text())
    defaults = role_defaults("grafana")
    assert {p["options"]["path"] for p in provider["providers"]} == {
        f"{defaults['grafana_dashboard_dir']}/{lang}" for lang in ("vi", "en")}
    rules = yaml.safe_load((g / "etc/provisioning/alerting/netmon-rules.yaml").read_text())
    ds = yaml.safe_load(ds_text)["datasources"][0]
    for rule in rules["groups"][0]["rules"]:
        assert all(d["datasourceUid"] in (ds["uid"], "__expr__") for d in rule["data"])

    dropin = (g / "grafana-server.service.d" / "netmon.conf").read_text()
    env = dict(re.findall(r"^Environment=([A-Z_]+)=(.*)$", dropin, flags=re.M))
    for name in re.findall(r"\$__env\{([A-Z_]+)\}", ds_text):
        assert name in env, name
    assert env["NETMON_INFLUX_USER"] == "netmon_grafana"
    assert env["NETMON_INFLUX_URL"] == "http://127.0.0.1:8086"
    for path in re.findall(r"\$__file\{([^}]+)\}", ds_text):
        name = Path(path).name
        assert path == f"{defaults['grafana_conf_dir']}/secrets/{name}", path
        assert (g / "etc/secrets" / name).read_text() == rendered.secrets[
            "vault_netmon_influxdb_grafana_password"]


def test_grafana_contact_point_is_the_generated_one_with_the_inventory_s_addresses(
        rendered: Rendered, tmp_path: Path) -> None:
    """contact-points.yaml.j2 writes dashboards.provisioning.contact_point_example() with
    netmon_grafana_alert_emails as the addresses (the example inventory sets none)."""
    from collector.dashboards.provisioning import contact_point_example

    emails = ["noc@example.org", "oncall@example.org"]
    conf = tmp_path / "etc"
    play = role_playbook(tmp_path / "grafana.yml", GROUPS["grafana"][0], "grafana", {
        "grafana_manage_service": False, "grafana_conf_dir": str(conf),
        "grafana_dashboard_dir": str(tmp_path / "dashboards"),
        "grafana_systemd_dropin_dir": str(tmp_path / "grafana-server.service.d")})
    # (The play is not in deploy/ansible, so the checkout is not playbook_dir/../..)
    rendered.ansible.playbook(play, rendered.extra() | {"netmon_source_dir": str(ROOT),
                                                        "netmon_grafana_alert_emails": emails})
    got = yaml.safe_load((conf / "provisioning/alerting/netmon-contact-points.yaml").read_text())
    want = contact_point_example()
    want["contactPoints"][0]["receivers"][0]["settings"]["addresses"] = ";".join(emails)
    assert got == want


def test_bad_inventory_entries_are_named(rendered: Rendered, tmp_path: Path) -> None:
    """A wrong access type or a site without its unit's code stops the run, naming probe
    and key; so does a code YAML reads as a number (leading zeros would be lost)."""
    import shutil

    inv = tmp_path / "inventory"
    shutil.copytree(INVENTORY, inv)
    a, b = PROBES[0], PROBES[1]
    hv = host_vars(a)
    hv["netmon_links"][0]["access"] = "dsl"
    (inv / "host_vars" / f"{a}.yml").write_text(yaml.safe_dump(hv, allow_unicode=True))
    hv = host_vars(b)
    del hv["netmon_site"]["commune_code"], hv["netmon_site"]["legacy_commune_code"]
    (inv / "host_vars" / f"{b}.yml").write_text(yaml.safe_dump(hv, allow_unicode=True))
    c = PROBES[2]
    hv = host_vars(c)
    hv["netmon_site"]["commune_code"] = int(hv["netmon_site"]["commune_code"])
    (inv / "host_vars" / f"{c}.yml").write_text(yaml.safe_dump(hv, allow_unicode=True))
    proc = rendered.ansible.playbook(
        ANSIBLE_DIR / "render.yml", rendered.extra() | {"netmon_render_dir": str(tmp_path / "o")},
        inventory=inv, limit=f"{COLLECTOR},{a}", check=False)
    assert proc.returncode != 0
    link = host_vars(a)["netmon_links"][0]["name"]
    assert f"probe {a}, link {link}: needs name" in proc.stdout, proc.stdout[-4000:]
    for probe in (b, c):
        assert f"probe {probe}: host_vars/{probe}.yml needs netmon_site with name, " \
            "commune_code" in proc.stdout, proc.stdout[-4000:]
    assert not (tmp_path / "o" / a / "probe" / "etc" / "agent.toml").exists()


def test_a_moved_probe_keeps_its_old_site_for_old_results(rendered: Rendered,
                                                          tmp_path: Path) -> None:
    """``netmon_site_history`` + a dated ``netmon_site`` become dated registry entries:
    results measured before the move keep the old unit."""
    import shutil
    from datetime import UTC, date, datetime

    from collector.core.registry import load_table

    inv = tmp_path / "inventory"
    shutil.copytree(INVENTORY, inv)
    probe = "ht-kyanh-kydong"
    hv = host_vars(probe)
    hv["netmon_site_history"] = [dict(hv["netmon_site"])]
    hv["netmon_site"] = {"name": "UBND phường Sông Trí", "commune_code": "18754",
                         "legacy_commune_code": "18820", "latitude": 18.0731,
                         "longitude": 106.2936, "site_type": "commune_office",
                         "valid_from": date(2026, 3, 1)}
    (inv / "host_vars" / f"{probe}.yml").write_text(yaml.safe_dump(hv, allow_unicode=True))
    out = tmp_path / "o"
    rendered.ansible.playbook(ANSIBLE_DIR / "render.yml",
                              rendered.extra() | {"netmon_render_dir": str(out)},
                              inventory=inv, limit=COLLECTOR)
    table = load_table(out / COLLECTOR / "collector" / "etc" / "sites.toml")
    before = table.at(probe, datetime(2026, 2, 28, 16, 59, tzinfo=UTC))
    after = table.at(probe, datetime(2026, 2, 28, 17, 0, tzinfo=UTC))  # 1 March, UTC+7
    assert before is not None and (before.commune_code, before.commune) == ("18775",
                                                                           "Xã Kỳ Anh")
    assert after is not None and (after.commune_code, after.commune) == ("18754",
                                                                         "Phường Sông Trí")
    assert len(table.periods) == len(PROBES)


def test_a_second_run_changes_nothing(rendered: Rendered) -> None:
    """Idempotent: the same inventory and vault rendered again report no change (the
    broker's password file keeps its hashes; no file is rewritten)."""
    passwd = rendered.host(BROKER) / "mosquitto" / "netmon.passwd"
    before = passwd.read_bytes()
    proc = rendered.ansible.playbook(ANSIBLE_DIR / "render.yml", rendered.extra())
    for host in GROUPS["all"]:
        assert recap_changed(proc.stdout, host) == 0, (host, proc.stdout[-4000:])
    assert passwd.read_bytes() == before


# --------------------------------------------------------------------------- hardening

#: The [Service] section of Debian bookworm's units (mosquitto 2.0.11-1.2, influxdb
#: 1.6.7), used when the package is not installed here (``scripts/setup`` installs both).
STOCK_UNITS = {
    "mosquitto": """[Unit]
Description=Mosquitto MQTT Broker
After=network.target

[Service]
Type=notify
NotifyAccess=main
ExecStart=/usr/sbin/mosquitto -c /etc/mosquitto/mosquitto.conf
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
ExecStartPre=/bin/mkdir -m 740 -p /var/log/mosquitto
ExecStartPre=/bin/chown mosquitto /var/log/mosquitto
ExecStartPre=/bin/mkdir -m 740 -p /run/mosquitto
ExecStartPre=/bin/chown mosquitto /run/mosquitto
""",
    "influxdb": """[Unit]
Description=InfluxDB is an open-source, distributed, time series database
After=network.target

[Service]
User=influxdb
Group=influxdb
LimitNOFILE=65536
EnvironmentFile=-/etc/default/influxdb
ExecStart=/usr/bin/influxd -config /etc/influxdb/influxdb.conf $INFLUXD_OPTS
KillMode=control-group
Restart=on-failure
""",
}


def _stock_unit(name: str) -> str:
    """The package's unit without [Install] (the installed one when there is one)."""
    path = Path(f"/lib/systemd/system/{name}.service")
    text = path.read_text() if path.exists() else STOCK_UNITS[name]
    return text.split("[Install]")[0].rstrip("\n") + "\n"


def _exposure(unit: Path) -> float:
    """``systemd-analyze security --offline=true``'s overall exposure of ``unit``."""
    proc = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                          capture_output=True, text=True, timeout=120, check=False)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert m, proc.stdout[-2000:] + proc.stderr[-2000:]
    return float(m.group(1))


@pytest.mark.parametrize("unit", ["mosquitto", "influxdb"])
def test_hardening_drop_ins_score_below_5(rendered: Rendered, tmp_path: Path,
                                          unit: str) -> None:
    """Debian's unit with the role's drop-in, merged into one unit file (a drop-in's
    [Service] lines apply after the unit's, as here), scores below 5 (Debian's alone:
    mosquitto 9.6, influxdb 9.2, both UNSAFE)."""
    need("systemd-analyze")
    host = BROKER if unit == "mosquitto" else GROUPS["influxdb"][0]
    dropin = rendered.host(host) / unit / f"{unit}.service.d" / "netmon-hardening.conf"
    lines = [ln for ln in dropin.read_text().splitlines()
             if ln and not ln.startswith(("#", "[Service]"))]
    stock = tmp_path / f"stock-{unit}.service"
    stock.write_text(_stock_unit(unit))
    merged = tmp_path / f"{unit}.service"
    merged.write_text(_stock_unit(unit) + "\n".join(lines) + "\n")
    before, after = _exposure(stock), _exposure(merged)
    print(f"{unit}: exposure {before} -> {after}")
    assert before > 9.0  # the comparison means something: the stock unit is UNSAFE
    assert after < 5.0, after
    # Both roles share one set of hardening lines.
    common = [(ANSIBLE_DIR / "roles" / role / "templates" / "netmon-hardening-common.conf.j2")
              .read_text() for role in ("mosquitto", "influxdb")]
    assert common[0] == common[1]


@pytest.mark.parametrize("unit", ["netmon-agent", "netmon-collector"])
def test_netmon_units_score_below_5(tmp_path: Path, unit: str) -> None:
    """The repository's own units, as installed by the roles."""
    need("systemd-analyze")
    path = tmp_path / f"{unit}.service"
    path.write_text((ANSIBLE_DIR.parent / "systemd" / f"{unit}.service").read_text())
    score = _exposure(path)
    print(f"{unit}: exposure {score}")
    assert score < 5.0, score
