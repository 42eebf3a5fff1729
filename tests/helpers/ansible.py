"""Run the project's Ansible playbooks offline on localhost for the tests.

Everything runs with ``connection: local`` against the example inventory
(``deploy/ansible/inventories/hatinh``); secrets are random per test session and passed
as extra vars from a 0600 file, so no vault is needed and nothing real is ever used.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import REPO

ROOT = REPO
ANSIBLE_DIR = ROOT / "deploy" / "ansible"
INVENTORY = ANSIBLE_DIR / "inventories" / "hatinh"


def tool(name: str) -> str | None:
    """An executable installed next to this Python (the venv's ansible), else on PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


def inventory_groups() -> dict[str, list[str]]:
    """Group name -> host names, read from hosts.yml (children flattened)."""
    data = yaml.safe_load((INVENTORY / "hosts.yml").read_text(encoding="utf-8"))
    out: dict[str, list[str]] = {}

    def walk(name: str, node: dict[str, Any] | None) -> list[str]:
        node = node or {}
        hosts = list((node.get("hosts") or {}).keys())
        for child, sub in (node.get("children") or {}).items():
            hosts += walk(child, sub)
        out[name] = sorted(set(hosts))
        return hosts

    walk("all", data["all"])
    return out


def host_vars(host: str) -> dict[str, Any]:
    """The host_vars file of one host."""
    path = INVENTORY / "host_vars" / f"{host}.yml"
    loaded: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded


def group_vars() -> dict[str, Any]:
    """The settings every host shares (group_vars/all/main.yml)."""
    loaded: dict[str, Any] = yaml.safe_load(
        (INVENTORY / "group_vars" / "all" / "main.yml").read_text(encoding="utf-8"))
    return loaded


def role_defaults(role: str) -> dict[str, Any]:
    """defaults/main.yml of one role."""
    loaded: dict[str, Any] = yaml.safe_load(
        (ANSIBLE_DIR / "roles" / role / "defaults" / "main.yml").read_text(encoding="utf-8"))
    return loaded


def make_secrets() -> dict[str, Any]:
    """Random test values for every vault variable of vault.yml.example."""
    def pw() -> str:
        return secrets.token_urlsafe(24)

    return {
        "vault_netmon_mqtt_probe_passwords": {p: pw() for p in inventory_groups()["probes"]},
        "vault_netmon_mqtt_collector_password": pw(),
        "vault_netmon_mqtt_noc_password": pw(),
        "vault_netmon_mqtt_enrollment_password": pw(),
        "vault_netmon_influxdb_admin_password": pw(),
        "vault_netmon_influxdb_collector_password": pw(),
        "vault_netmon_influxdb_grafana_password": pw(),
        "vault_netmon_grafana_admin_password": pw(),
    }


@dataclass
class Ansible:
    """ansible-playbook with an isolated ANSIBLE_HOME and the project's config."""

    home: Path

    def env(self) -> dict[str, str]:
        """Environment: project config and roles, no colour, nothing under ~/.ansible."""
        self.home.mkdir(parents=True, exist_ok=True)
        return os.environ | {
            "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
            "ANSIBLE_ROLES_PATH": str(ANSIBLE_DIR / "roles"),
            "ANSIBLE_HOME": str(self.home),
            "ANSIBLE_LOCAL_TEMP": str(self.home / "tmp"),
            "ANSIBLE_PIPELINING": "true",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_STDOUT_CALLBACK": "default",
            "NO_COLOR": "1",
        }

    def playbook(self, playbook: Path, extra_vars: dict[str, Any] | None = None,
                 limit: str | None = None, inventory: Path | str = INVENTORY,
                 check: bool = True, args: tuple[str, ...] = (),
                 ) -> subprocess.CompletedProcess[str]:
        """Run a playbook on localhost (connection local); raise with the log on failure."""
        binary = tool("ansible-playbook")
        assert binary, "ansible-playbook not installed (pip install -e '.[dev]')"
        values = {"ansible_python_interpreter": sys.executable} | (extra_vars or {})
        self.home.mkdir(parents=True, exist_ok=True)
        varfile = self.home / f"extra-vars-{secrets.token_hex(4)}.json"
        varfile.touch(mode=0o600)
        varfile.write_text(json.dumps(values), encoding="utf-8")
        argv = [binary, "-i", str(inventory), str(playbook), "-e", f"@{varfile}", *args]
        if limit:
            argv += ["--limit", limit]
        proc = subprocess.run(argv, cwd=ANSIBLE_DIR, env=self.env(), capture_output=True,
                              text=True, timeout=600, check=False)
        varfile.unlink()
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv[:4])} failed ({proc.returncode}):\n"
                                 f"{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
        return proc

    def make_pki(self, pki_dir: Path) -> None:
        """pki.yml with a broker certificate valid for localhost and 127.0.0.1."""
        self.playbook(ANSIBLE_DIR / "pki.yml", {
            "netmon_pki_dir": str(pki_dir),
            "netmon_pki_broker_san": ["DNS:localhost", "IP:127.0.0.1"],
        })


def role_playbook(path: Path, host: str, role: str, role_vars: dict[str, Any]) -> Path:
    """Write a playbook that runs one role, locally, for one inventory host."""
    path.write_text(yaml.safe_dump([{
        "name": f"{role} only", "hosts": host, "connection": "local", "gather_facts": False,
        "tasks": [{"name": role, "ansible.builtin.include_role": {"name": role},
                   "vars": role_vars}]}]), encoding="utf-8")
    return path


def recap_changed(stdout: str, host: str) -> int:
    """The ``changed=`` count of one host in PLAY RECAP."""
    for line in stdout.splitlines():
        if line.startswith(host + " ") and "changed=" in line:
            return int(line.split("changed=")[1].split()[0])
    raise AssertionError(f"no recap line for {host}:\n{stdout[-2000:]}")


def task_status(stdout: str, task: str) -> str:
    """``ok``/``changed``/``skipping``/``failed`` of the first run of a named task."""
    lines = stdout.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("TASK [") and f" : {task}]" in line:
            for follow in lines[i + 1:]:
                if follow.strip():
                    return follow.split(":")[0].strip()
    raise AssertionError(f"task {task!r} not in output:\n{stdout[-2000:]}")
