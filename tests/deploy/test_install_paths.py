"""What the roles install, checked where the booted deployment test cannot reach.

Issue 17 found each of these on a real Debian: a 32-bit Pi cannot build the agent's
dependencies, WeasyPrint misses Pango on the NOC host, ``pki.yml`` fails as documented,
the Grafana role misses its module's prerequisite, the wheel build is never idempotent,
the probe and collector roles fight over /etc/netmon, and probes have no time sync. The
booted test (test_booted.py) covers the amd64 paths end to end; these pin the rest.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement

from tests.helpers.ansible import ANSIBLE_DIR, ROOT, Ansible, role_defaults, tool
from tests.helpers.container import WHEELHOUSE


def _tasks(role: str, name: str) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = yaml.safe_load(
        (ANSIBLE_DIR / "roles" / role / "tasks" / name).read_text(encoding="utf-8"))
    return loaded


def _task(tasks: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for task in tasks:
        if task.get("name") == name:
            return task
        for inner in task.get("block", []):
            if inner.get("name") == name:
                return dict(inner)
    raise AssertionError(f"no task {name!r}")


def _agent_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [Requirement(r) for r in project["optional-dependencies"]["agent"]]


# --------------------------------------------------------------------------- 1. armhf


@pytest.mark.parametrize("machine,uvloop", [("armv7l", False), ("armv6l", False),
                                            ("aarch64", True), ("x86_64", True)])
def test_uvloop_is_left_out_where_pypi_has_no_wheel(machine: str, uvloop: bool) -> None:
    """A Pi 3B+ (armv7l) would have to compile uvloop: the agent extra skips it there."""
    env = dict(default_environment()) | {"platform_machine": machine, "sys_platform": "linux"}
    wanted = {r.name for r in _agent_requirements() if r.marker is None or r.marker.evaluate(env)}
    assert ("uvloop" in wanted) is uvloop, wanted


def test_agent_runs_without_uvloop() -> None:
    """The fallback the marker relies on: the runtime runs on asyncio's own loop, and the
    HTTP engine (the one user of uvloop) falls back to it."""
    tree = ast.parse((ROOT / "agent" / "commands.py").read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert not any(name.startswith("uvloop") for name in imported), \
        "agent/commands.py imports uvloop again: it must fall back when uvloop is missing"
    engine = (ROOT / "agent" / "methods" / "common" / "httpengine.py").read_text("utf-8")
    assert re.search(r"import uvloop\n\s*except ImportError:", engine), \
        "the HTTP engine no longer falls back when uvloop is missing"


def test_armhf_probes_get_the_compiler_for_cffi() -> None:
    """cffi (under cryptography) has no armv7l wheel on PyPI: the role installs what
    compiling it needs, on 32-bit ARM only."""
    defaults = role_defaults("netmon_probe")
    assert {"gcc", "libc6-dev", "libffi-dev", "python3-dev"} <= \
        set(defaults["netmon_probe_build_packages"])
    assert "armv7l" in defaults["netmon_probe_build_architectures"]
    assert "aarch64" not in defaults["netmon_probe_build_architectures"]
    main = _tasks("netmon_probe", "main.yml")
    task = _task(main, "Install what pip needs to compile cffi (32-bit Pi OS only)")
    assert task["ansible.builtin.apt"]["name"] == "{{ netmon_probe_build_packages }}"
    assert any("netmon_probe_build_architectures" in w for w in task["when"])
    names = [t.get("name") for t in main]
    assert names.index(task["name"]) < names.index("Install the agent into its virtualenv")


# --------------------------------------------------------------------------- 2. Pango


def test_collector_host_gets_weasyprint_s_libraries() -> None:
    """The libraries the local stack's PDF bulletin loads (scripts/setup) are the role's."""
    setup = (ROOT / "scripts" / "setup").read_text(encoding="utf-8")
    libs = set(re.findall(r"\b(lib(?:pango|harfbuzz|gobject)[\w.-]*)", setup))
    assert {"libpango-1.0-0", "libpangoft2-1.0-0", "libharfbuzz-subset0"} <= libs
    assert libs <= set(role_defaults("netmon_collector")["netmon_collector_packages"])


# --------------------------------------------------------------------------- 3. pki.yml


def test_pki_yml_runs_as_documented_without_inventory_warnings(tmp_path: Path) -> None:
    """``ansible-playbook pki.yml`` in deploy/ansible, nothing more (docs/operations.md
    1.3): no netmon_pki_dir given, files outside the inventory tree, no warnings."""
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    copy = tmp_path / "ansible"
    shutil.copytree(ANSIBLE_DIR, copy, ignore=shutil.ignore_patterns(".build", "pki"))
    env = Ansible(tmp_path / "home").env()
    for name in ("ANSIBLE_CONFIG", "ANSIBLE_ROLES_PATH"):
        env.pop(name)
    binary = tool("ansible-playbook")
    assert binary
    for _run in (1, 2):
        proc = subprocess.run([binary, "pki.yml"], cwd=copy, env=env, capture_output=True,
                              text=True, timeout=300, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        warnings = [line for line in out.splitlines() if "WARNING" in line]
        assert not warnings, warnings
    for name in ("ca.crt", "ca.key", "broker.crt", "broker.key", "noc-config.key",
                 "noc-config.pub"):
        assert (copy / "pki" / name).is_file(), name
    assert not [p for p in (copy / "inventories").rglob("*") if p.suffix in (".key", ".crt")]
    # A second run keeps what exists; keys stay private.
    assert "changed=0" in proc.stdout
    assert (copy / "pki" / "ca.key").stat().st_mode & 0o077 == 0
    # And the key is what .gitignore keeps out of git.
    assert "pki/ca.key" in (ANSIBLE_DIR / ".gitignore").read_text(encoding="utf-8").split()


# --------------------------------------------------------------------------- 4. Grafana


def test_grafana_role_installs_python3_debian_before_the_repository() -> None:
    tasks = _tasks("grafana", "install.yml")
    names = [t["name"] for t in tasks]
    prereq = _task(tasks, "Install the prerequisites of the APT repository module")
    assert prereq["ansible.builtin.apt"]["name"] == "{{ grafana_prerequisite_packages }}"
    assert "python3-debian" in role_defaults("grafana")["grafana_prerequisite_packages"]
    repo = next(t for t in tasks if "ansible.builtin.deb822_repository" in t)
    assert names.index(prereq["name"]) < names.index(repo["name"])


def test_grafana_role_takes_a_local_mirror_or_a_deb() -> None:
    defaults = role_defaults("grafana")
    assert defaults["grafana_install_from"] == "repository"
    tasks = _tasks("grafana", "install.yml")
    repo = next(t for t in tasks if "ansible.builtin.deb822_repository" in t)
    # The mirror's address, suite, component and key are all settings.
    spec = repo["ansible.builtin.deb822_repository"]
    assert spec["uris"] == ["{{ grafana_apt_repo_url }}"]
    assert spec["suites"] == ["{{ grafana_apt_suite }}"]
    assert spec["signed_by"] == "{{ grafana_apt_key_url }}"
    deb = [t for t in tasks if t.get("when") == "grafana_install_from == 'deb'"]
    kinds = [next(k for k in t if k.startswith("ansible.builtin.")) for t in deb]
    assert kinds == ["ansible.builtin.copy", "ansible.builtin.apt"], kinds
    assert deb[0]["ansible.builtin.copy"]["src"] == "{{ grafana_deb_file }}"
    assert deb[1]["ansible.builtin.apt"]["deb"] == deb[0]["ansible.builtin.copy"]["dest"]


def test_grafana_role_refuses_an_unknown_source(tmp_path: Path) -> None:
    book = tmp_path / "grafana.yml"
    book.write_text(yaml.safe_dump([{
        "name": "grafana source", "hosts": "localhost", "connection": "local",
        "gather_facts": False,
        "tasks": [{"name": "install", "ansible.builtin.include_role": {
            "name": "grafana", "tasks_from": "install"},
            "vars": {"grafana_install_from": "ppa"}}]}]), encoding="utf-8")
    proc = Ansible(tmp_path / "home").playbook(book, check=False, inventory="localhost,")
    assert proc.returncode != 0
    assert "grafana_install_from" in proc.stdout and "ppa" in proc.stdout, proc.stdout[-2000:]


# --------------------------------------------------------------------------- 5. idempotence


def test_wheel_build_folder_is_not_a_change_on_the_host() -> None:
    for role in ("netmon_probe", "netmon_collector"):
        task = _task(_tasks(role, "install.yml"), "Start from an empty build folder")
        assert task.get("changed_when") is False, role


def test_the_same_source_builds_the_same_wheel(tmp_path: Path) -> None:
    """The roles rebuild the wheel every run; the host's copy stays unchanged only because
    the same checkout gives byte-identical wheels (hatchling's reproducible builds)."""
    if not WHEELHOUSE.is_dir():
        pytest.skip(f"{WHEELHOUSE} missing: run scripts/setup --dev (as root)")
    env = os.environ | {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(WHEELHOUSE)}
    env.pop("SOURCE_DATE_EPOCH", None)
    built = []
    for n in (1, 2):
        out = tmp_path / str(n)
        subprocess.run([str(Path(tool("python") or "python3")), "-m", "pip", "wheel", "-q",
                        "--no-deps", "--wheel-dir", str(out), str(ROOT)], env=env,
                       check=True, capture_output=True, timeout=600)
        (wheel,) = out.glob("hatinh_netmon-*.whl")
        built.append(wheel.read_bytes())
        with zipfile.ZipFile(wheel) as zf:
            assert any(n.startswith("agent/") for n in zf.namelist())
    assert built[0] == built[1]


def test_probe_and_collector_roles_give_etc_netmon_one_owner() -> None:
    def folder(role: str) -> dict[str, Any]:
        task = _task(_tasks(role, "config.yml"), "Create the config folder")
        spec: dict[str, Any] = task["ansible.builtin.file"]
        return {k: spec[k] for k in ("owner", "group", "mode")}

    probe, collector = folder("netmon_probe"), folder("netmon_collector")
    assert probe == collector == {"owner": "root", "group": "root", "mode": "0755"}
    assert role_defaults("netmon_probe")["netmon_probe_conf_dir"] == \
        role_defaults("netmon_collector")["netmon_collector_conf_dir"]


# --------------------------------------------------------------------------- 6. time sync


def test_probes_run_a_time_sync_daemon_with_configurable_servers() -> None:
    defaults = role_defaults("netmon_probe")
    assert "systemd-timesyncd" in defaults["netmon_probe_packages"]
    template = (ANSIBLE_DIR / "roles/netmon_probe/templates/timesyncd.conf.j2").read_text()
    text = jinja2.Template(template).render(
        ansible_managed="test", netmon_probe_ntp_servers=["ntp1.hatinh.gov.vn", "10.0.0.1"],
        netmon_probe_ntp_fallback_servers=defaults["netmon_probe_ntp_fallback_servers"])
    assert re.search(r"^\[Time\]$", text, re.M)
    assert re.search(r"^NTP=ntp1\.hatinh\.gov\.vn 10\.0\.0\.1$", text, re.M), text
    system = _tasks("netmon_probe", "system.yml")
    conf = _task(system, "Point systemd-timesyncd at the configured NTP servers")
    assert conf["ansible.builtin.template"]["dest"] == "/etc/systemd/timesyncd.conf.d/netmon.conf"
    unit = _task(system, "Synchronise the clock now and at boot")
    assert unit["ansible.builtin.systemd_service"]["name"] == "systemd-timesyncd.service"
    assert unit["ansible.builtin.systemd_service"]["enabled"] is True
