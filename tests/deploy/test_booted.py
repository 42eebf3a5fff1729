"""The deployment as an operator does it: the real playbooks into a booted Debian 12.

One Debian 12 container (debootstrap'd root filesystem from ``scripts/deploytest-cache``,
booted with systemd as PID 1 by ``systemd-nspawn -b``) plays every machine of the example
inventory's structure: the NOC server (InfluxDB, broker, collector), the measurement
server and one probe, as three inventory hosts at the same address, so the probe and
collector roles share a host (/etc/netmon, /opt/netmon). Grafana is left out of the
inventory: its package comes only from Grafana's repository or a downloaded .deb, neither
of which exists offline (its prerequisites are checked in test_ansible.py).

The commands are those of docs/operations.md section 1, in that order, from a copy of this
checkout: ``ansible-playbook pki.yml``, ``ansible-vault encrypt`` of the keys and of
``vault.yml``, ``ansible-playbook site.yml``, twice. The only differences from a real site
are how the hosts are reached (ssh settings in the environment) and that pip, on the
control machine and in the container, is pointed at a wheelhouse that setup built (nothing
is downloaded here).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.ansible import make_secrets, recap_changed, tool
from tests.helpers.container import (
    ROOTFS_AMD64,
    WHEELHOUSE,
    Container,
    checkout_copy,
    copy_tree,
    missing_cache,
    offline_pip,
    wait_for,
)

pytestmark = [pytest.mark.timeout(3000), pytest.mark.slow, pytest.mark.root]

NOC = "noc-central"
SERVER = "speed-hatinh-01"
PROBE = "ht-kyanh-kydong"
MQTT_HOST = "mqtt.netmon.hatinh.example"
MEASUREMENT_HOST = "speed.netmon.hatinh.example"
#: Per run, so that two suites on one machine do not share a veth or an address.
_RUN = os.getpid() % 250
BENCH_NAME = f"nmbench{_RUN}"
# A /30 of the benchmarking range (RFC 2544), like devstack's shaped links (which pick
# theirs at random from 198.18.0.0/15 and skip the ones in use).
HOST_IP, BENCH_IP = f"198.19.254.{4 * (_RUN % 63) + 1}", f"198.19.254.{4 * (_RUN % 63) + 2}"
#: How often the probe's own unit runs its test in the deployment (seconds).
EVERY_S = 30
#: Every service the roles start, and the one they only enable (clock: see below).
UNITS = ["influxdb", "mosquitto", "netmon-collector", "netmon-nginx",
         "netmon-iperf3@5201", "netmon-agent"]
VENV = "/opt/netmon/venv/bin"


@dataclass
class Deployment:
    """The booted container, the control machine's checkout and the first runs' output."""

    bench: Container
    ansible_dir: Path
    env: dict[str, str]
    secrets: dict[str, Any]
    pki_log: str
    first_run: str

    def play(self, *argv: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        """An Ansible command run in deploy/ansible of the copy (like an operator)."""
        binary = tool(argv[0])
        assert binary, f"{argv[0]} not installed (pip install -e '.[dev]')"
        proc = subprocess.run([binary, *argv[1:]], cwd=self.ansible_dir, env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False)
        assert proc.returncode == 0, (f"{' '.join(argv)} failed ({proc.returncode}):\n"
                                      f"{proc.stdout[-8000:]}\n{proc.stderr[-3000:]}")
        return proc

    def noc(self, command: str, timeout: float = 300) -> str:
        """A netmon-collector command on the NOC host with the NOC's config (as root)."""
        return self.bench.ssh(f"{VENV}/netmon-collector {command}", timeout=timeout).stdout


def _inventory(ansible_dir: Path) -> None:
    """The example inventory cut down to one host per role, all at the container's address.

    Same files and structure; the probe measures the measurement server with a TCP test on
    a short schedule (its fibre link is the container's only one, so no interface name).
    """
    inv = ansible_dir / "inventories" / "hatinh"
    hosts = yaml.safe_load((inv / "hosts.yml").read_text(encoding="utf-8"))
    groups = hosts["all"]["children"]
    for name in ("broker", "influxdb", "collector"):
        groups[name] = {"hosts": {NOC: None}}
    groups["grafana"] = {"hosts": {}}
    groups["measurement_servers"] = {"hosts": {SERVER: None}}
    groups["probes"] = {"children": {"probes_arm64": {"hosts": {PROBE: None}},
                                     "probes_armhf": {"hosts": {}}}}
    (inv / "hosts.yml").write_text(yaml.safe_dump(hosts, allow_unicode=True), encoding="utf-8")
    for path in (inv / "host_vars").glob("*.yml"):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if path.stem not in (NOC, SERVER, PROBE):
            path.unlink()
            continue
        data["ansible_host"] = BENCH_IP
        if path.stem == NOC:
            # The archive's nginx (Debian's, port 80) and the measurement server's
            # netmon-nginx (port 80) cannot share a host; in the example they do not.
            data["netmon_collector_bulletin_nginx"] = False
        if path.stem == PROBE:
            data["netmon_links"] = [{"name": "fibre", "access": "fixed", "isp": "VNPT"}]
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    probes = inv / "group_vars" / "probes.yml"
    data = yaml.safe_load(probes.read_text(encoding="utf-8"))
    data["netmon_tests"] = {"tcp": {"method": "tcp", "every_s": EVERY_S,
                                    "target": "{{ netmon_measurement_host }}",
                                    "port": "{{ netmon_http_port | int }}"}}
    probes.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


def _vault(ansible_dir: Path, secrets: dict[str, Any], env: dict[str, str]) -> None:
    """docs/operations.md 1.4: vault.yml from the example, filled in, then encrypted."""
    folder = ansible_dir / "inventories" / "hatinh" / "group_vars" / "all"
    example = yaml.safe_load((folder / "vault.yml.example").read_text(encoding="utf-8"))
    assert set(example) == set(secrets)
    vault = folder / "vault.yml"
    vault.write_text(yaml.safe_dump(secrets), encoding="utf-8")
    vault.chmod(0o600)
    binary = tool("ansible-vault")
    assert binary
    subprocess.run([binary, "encrypt", str(vault.relative_to(ansible_dir))],
                   cwd=ansible_dir, env=env, check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    if os.geteuid() != 0:
        pytest.skip("booting containers needs root")
    why = missing_cache(ROOTFS_AMD64, WHEELHOUSE)
    if why:
        pytest.skip(why)
    for binary in ("systemd-nspawn", "ssh", "ssh-keygen"):
        if not shutil.which(binary):
            pytest.skip(f"{binary} not installed (scripts/setup --dev)")
    started = time.monotonic()
    base = tmp_path_factory.mktemp("booted")
    key = base / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key),
                    "-C", "netmon-deploytest"], check=True)
    root = base / "rootfs"
    root.mkdir()
    copy_tree(ROOTFS_AMD64, root)
    offline_pip(root)
    bench = Container(BENCH_NAME, root, HOST_IP, BENCH_IP, key, base / "nspawn.log")
    # Name resolution an operator's DNS gives: the broker's and the server's names.
    bench.prepare(key.with_suffix(".pub").read_text(encoding="utf-8"),
                  {MQTT_HOST: "127.0.0.1", MEASUREMENT_HOST: "127.0.0.1"})
    bench.boot()
    try:
        checkout = checkout_copy(base / "checkout")
        ansible_dir = checkout / "deploy" / "ansible"
        _inventory(ansible_dir)
        home = base / "ansible-home"
        home.mkdir()
        vault_pass = base / "vault-pass"
        vault_pass.write_text("deploy-test-" + os.urandom(8).hex(), encoding="utf-8")
        vault_pass.chmod(0o600)
        env = os.environ | {
            "ANSIBLE_HOME": str(home), "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
            "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "NO_COLOR": "1",
            "ANSIBLE_VAULT_PASSWORD_FILE": str(vault_pass),
            "ANSIBLE_REMOTE_USER": "root", "ANSIBLE_PRIVATE_KEY_FILE": str(key),
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(home / "cp"),
            "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=60s "
                                "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            # The roles build the project's wheel here with pip (build backend: hatchling).
            "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(WHEELHOUSE),
        }
        for name in ("ANSIBLE_CONFIG", "ANSIBLE_INVENTORY", "ANSIBLE_ROLES_PATH"):
            env.pop(name, None)
        secrets = make_secrets()
        secrets["vault_netmon_mqtt_probe_passwords"] = {
            PROBE: secrets["vault_netmon_mqtt_probe_passwords"][PROBE]}
        d = Deployment(bench, ansible_dir, env, secrets, "", "")
        # docs/operations.md 1.3, as written there.
        pki = d.play("ansible-playbook", "pki.yml")
        d.pki_log = pki.stdout + pki.stderr
        d.play("ansible-vault", "encrypt", "pki/broker.key", "pki/noc-config.key")
        _vault(ansible_dir, secrets, env)
        t0 = time.monotonic()
        first = d.play("ansible-playbook", "site.yml")
        d.first_run = first.stdout + first.stderr
        print(f"deployment: ready in {time.monotonic() - started:.0f} s "
              f"(first site.yml {time.monotonic() - t0:.0f} s)")
        yield d
    finally:
        bench.stop()
        if bench.proc is not None and bench.proc.poll() is not None:
            shutil.rmtree(root, ignore_errors=True)  # 400 MB a run
        print(f"deployment: total {time.monotonic() - started:.0f} s")


def _unit_states(bench: Container, units: list[str]) -> dict[str, tuple[str, str]]:
    out = {}
    for unit in units:
        active = bench.ssh(f"systemctl is-active {unit}", check=False).stdout.strip()
        enabled = bench.ssh(f"systemctl is-enabled {unit}", check=False).stdout.strip()
        out[unit] = (active, enabled)
    return out


def _all_active(bench: Container) -> bool:
    return all(s == ("active", "enabled") for s in _unit_states(bench, UNITS).values())


def _probe_row(d: Deployment) -> dict[str, Any]:
    rows = json.loads(d.noc("probes list --config /etc/netmon/noc.toml --json"))
    by_id = {r["probe_id"]: r for r in rows}
    assert PROBE in by_id, rows
    row: dict[str, Any] = by_id[PROBE]
    return row


def _influx(d: Deployment, query: str) -> list[list[Any]]:
    """An InfluxQL query inside the container, as the InfluxDB admin (the influx CLI)."""
    password = d.secrets["vault_netmon_influxdb_admin_password"]
    out = d.bench.ssh(f"INFLUX_USERNAME=netmon_admin INFLUX_PASSWORD={shlex.quote(password)} "
                      f"influx -format json -database netmon -execute {shlex.quote(query)}"
                      ).stdout
    result = json.loads(out)["results"][0]
    assert "error" not in result, (query, result)
    return [row for s in result.get("series") or [] for row in s["values"]]


# --------------------------------------------------------------------------- pki.yml


def test_pki_yml_runs_as_documented_and_keeps_the_keys_outside_the_inventory(
        deployment: Deployment) -> None:
    pki = deployment.ansible_dir / "pki"
    for name in ("ca.crt", "ca.key", "broker.crt", "broker.key", "noc-config.key",
                 "noc-config.pub"):
        assert (pki / name).is_file(), name
    assert (pki / "broker.key").read_text().startswith("$ANSIBLE_VAULT;")
    inventory = deployment.ansible_dir / "inventories"
    assert not list(inventory.rglob("*.key")) and not list(inventory.rglob("*.crt"))
    # Keys inside the inventory tree made Ansible try each as an inventory source.
    for log in (deployment.pki_log, deployment.first_run):
        assert "inventory" not in " ".join(
            line for line in log.splitlines() if "[WARNING]" in line), log[-3000:]


# --------------------------------------------------------------------------- services


def test_every_unit_is_active_and_enabled(deployment: Deployment) -> None:
    states = _unit_states(deployment.bench, UNITS)
    assert all(s == ("active", "enabled") for s in states.values()), states
    # The probe's clock daemon: enabled, with the inventory's servers; in a container
    # systemd-timesyncd's own ConditionVirtualization=!container keeps it stopped.
    assert deployment.bench.ssh("systemctl is-enabled systemd-timesyncd").stdout.strip() \
        == "enabled"
    conf = deployment.bench.ssh("cat /etc/systemd/timesyncd.conf.d/netmon.conf").stdout
    assert re.search(r"^NTP=\S*pool\.ntp\.org", conf, re.M), conf


def test_one_owner_for_etc_netmon(deployment: Deployment) -> None:
    """Probe and collector roles on one host agree on /etc/netmon (root:root 0755); the
    second run's changed=0 (last test) shows neither undoes the other."""
    out = deployment.bench.ssh("stat -c '%U:%G %a' /etc/netmon").stdout.strip()
    assert out == "root:root 755"


def test_the_agent_runs_from_the_update_layout(deployment: Deployment) -> None:
    """The unit runs the role-installed version through releases/current (so a signed
    update can switch it), from files the service's own dynamic user owns."""
    bench = deployment.bench
    releases = "/var/lib/netmon-agent/releases"
    pid = ""

    def running() -> bool:
        nonlocal pid
        pid = bench.ssh("systemctl show -p MainPID --value netmon-agent").stdout.strip()
        return pid not in ("", "0")

    wait_for("netmon-agent has a main process", running, 120)
    argv = bench.ssh(f"cat /proc/{pid}/cmdline").stdout.split("\0")
    assert argv[:4] == [f"{releases}/current/bin/python", "-m", "agent.cli", "run"], argv
    version = bench.ssh(f"{VENV}/python -c 'import netmon; print(netmon.__version__)'"
                        ).stdout.strip()
    for link in ("current", "stable"):
        assert bench.ssh(f"readlink {releases}/{link}").stdout.strip() == f"versions/{version}"
    uids = bench.ssh(f"stat -L -c %u /proc/{pid} {releases}/versions/{version}").stdout.split()
    assert len(uids) == 2 and uids[0] == uids[1] != "0", uids
    toml = bench.ssh("cat /etc/netmon/agent.toml").stdout
    assert f'[update]\nroot = "{releases}"' in toml, toml


# --------------------------------------------------------------------------- data path


def test_a_scheduled_result_reaches_influxdb_and_is_receipted(deployment: Deployment) -> None:
    bench = deployment.bench
    rows: list[list[Any]] = []

    def stored() -> bool:
        rows[:] = _influx(deployment, "SELECT \"result_id\", \"method\", \"target\" "
                                      "FROM \"results\" WHERE \"probe\" = "
                                      f"'{PROBE}' AND \"status\" = 'ok'")
        return bool(rows)

    # Nothing but the agent's unit runs tests in the container: whatever arrives was
    # measured on its schedule.
    wait_for("a result of the agent's own schedule in InfluxDB", stored, 6 * EVERY_S + 120)
    assert {row[2] for row in rows} == {"tcp"}, rows
    assert all(str(row[3]).startswith(MEASUREMENT_HOST) for row in rows), rows

    # With receipts on, the spool keeps each result until the collector's receipt names
    # it. Results keep coming every EVERY_S, so the spool is rarely empty; but once every
    # result still waiting was spooled after `found`, the stored ones (spooled before)
    # have left it, and not by eviction: they were receipted.
    found = time.time()

    last: dict[str, Any] = {}

    def receipted() -> bool:
        st = json.loads(bench.ssh(f"{VENV}/netmon-agent status --json").stdout)
        last.clear()
        last.update(st)
        assert st["receipts"] and st["spool_evicted"] == 0, st
        waiting = st["oldest_waiting_s"]
        return bool(st["agent_running"] and st["last_results"]
                    and (waiting is None or waiting < time.time() - found))

    def describe() -> str:
        since = datetime.fromtimestamp(found - 120, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        logs = bench.ssh(f"journalctl --no-pager -o short-iso -u netmon-agent "
                         f"-u netmon-collector -u mosquitto --since '{since}' | tail -n 150",
                         check=False).stdout
        return (f"found at {found:.0f}, now {time.time():.0f}; last agent status: "
                f"{json.dumps(last, sort_keys=True)}\njournal since {since}:\n{logs}")

    wait_for("the collector's receipts for the stored results", receipted, 600, describe)


def test_probes_list_shows_the_probe_online(deployment: Deployment) -> None:
    row: dict[str, Any] = {}

    def online() -> bool:
        row.update(_probe_row(deployment))
        return bool(row["state"] == "online" and row["last_result_at"])

    wait_for("the probe online with a result in `probes list`", online, 6 * EVERY_S + 120)
    assert row["registered"] and row["commune"], row


def test_bulletin_writes_html_csv_and_pdf_on_the_collector_host(deployment: Deployment) -> None:
    month = datetime.now(UTC).strftime("%Y-%m")
    out = json.loads(deployment.noc(
        f"bulletin --config /etc/netmon/noc.toml --month {month} --out /tmp/bulletin --json",
        timeout=900))
    names = deployment.bench.ssh("ls /tmp/bulletin").stdout.split()
    for ext in ("html", "csv", "pdf"):
        assert f"bulletin-{month}.{ext}" in names, (names, out)
    magic = deployment.bench.ssh(f"head -c 5 /tmp/bulletin/bulletin-{month}.pdf").stdout
    assert magic == "%PDF-"


# --------------------------------------------------------------------------- restarts


def test_everything_comes_back_after_a_reboot(deployment: Deployment) -> None:
    bench = deployment.bench
    before = _probe_row(deployment)["last_result_at"]
    bench.reboot()
    wait_for("every unit active again after the reboot", lambda: _all_active(bench), 300)

    def new_result() -> bool:
        row = _probe_row(deployment)
        return bool(row["state"] == "online" and row["last_result_at"]
                    and row["last_result_at"] > before)

    wait_for("a result measured after the reboot in `probes list`", new_result,
             6 * EVERY_S + 180)


def test_a_second_site_yml_changes_nothing(deployment: Deployment) -> None:
    proc = deployment.play("ansible-playbook", "site.yml")
    counts = {h: recap_changed(proc.stdout, h) for h in (NOC, SERVER, PROBE)}
    first = {h: recap_changed(deployment.first_run, h) for h in (NOC, SERVER, PROBE)}
    print(f"site.yml changed= first run {first}, second run {counts}")
    changed = [line for line in proc.stdout.splitlines() if line.startswith("changed:")]
    assert counts == {NOC: 0, SERVER: 0, PROBE: 0}, "\n".join(changed)
