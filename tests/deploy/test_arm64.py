"""The agent on a Pi 4/5's architecture: arm64 Debian 12 under qemu-user emulation.

The arm64 root filesystem (debootstrap --arch arm64, built by `scripts/deploytest-cache
--arm64`, not by setup: see tests/deploy/conftest.py)
gets the project's wheel installed with the ``[agent]`` extra from the wheelhouse only
(aarch64 wheels, no index, no compiler), as the probe role does; then the agent checks a
config and measures a latency test once. Emulated: timings mean nothing here, only that
every dependency installs and imports on aarch64.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.helpers.agent import Listener, agent_config, tcp_test, write_config
from tests.helpers.container import (
    ROOTFS_ARM64,
    WHEELHOUSE,
    copy_tree,
    missing_cache,
    offline_pip,
)

pytestmark = [pytest.mark.timeout(1800), pytest.mark.slow, pytest.mark.root]


def _binfmt_aarch64() -> bool:
    entry = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    return entry.exists() and entry.read_text().startswith("enabled")


def _in_root(root: Path, *argv: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    """A command in the arm64 tree (systemd-nspawn, not booted; host network = loopback)."""
    return subprocess.run(
        ["systemd-nspawn", "-q", "-D", str(root), "--keep-unit", "--register=no",
         "--setenv=PIP_NO_INDEX=1", *argv],
        capture_output=True, text=True, timeout=timeout, check=False)


def test_agent_installs_and_measures_on_arm64(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("systemd-nspawn needs root")
    why = missing_cache(ROOTFS_ARM64, WHEELHOUSE)
    if why:
        pytest.skip(why)
    if not _binfmt_aarch64():
        pytest.skip("qemu-aarch64 is not registered with binfmt_misc (scripts/setup --dev)")
    started = time.monotonic()
    root = tmp_path / "rootfs"
    root.mkdir()
    copy_tree(ROOTFS_ARM64, root)
    offline_pip(root)
    # The wheel the roles build on the control machine, from this checkout.
    env = os.environ | {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(WHEELHOUSE)}
    subprocess.run([shutil.which("python3") or "python3", "-m", "pip", "wheel", "-q",
                    "--no-deps", "--wheel-dir", str(root / "srv"), str(REPO)],
                   env=env, check=True, capture_output=True, timeout=600)
    (wheel,) = (root / "srv").glob("hatinh_netmon-*.whl")
    arch = _in_root(root, "dpkg", "--print-architecture")
    assert arch.stdout.strip() == "arm64", arch

    install = _in_root(root, "/bin/sh", "-c",
                       "python3 -m venv /opt/netmon/venv && "
                       f"/opt/netmon/venv/bin/pip install -q '/srv/{wheel.name}[agent]' && "
                       "/opt/netmon/venv/bin/python -c 'import platform, uvloop, cryptography;"
                       " print(platform.machine())'")
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    assert install.stdout.split()[-1] == "aarch64", install.stdout

    listener = Listener()  # on the host's loopback, which the tree shares
    try:
        data = agent_config(tmp_path, None, {"latency": tcp_test(listener.port, every_s=300)})
        data["spool"]["path"] = "/var/lib/netmon-agent/spool.db"
        write_config(root / "etc", data, "agent.toml")
        check = _in_root(root, "/opt/netmon/venv/bin/netmon-agent", "check-config",
                         "--config", "/etc/agent.toml")
        assert check.returncode == 0, check.stdout + check.stderr
        once = _in_root(root, "/opt/netmon/venv/bin/netmon-agent", "once", "--no-publish",
                        "--json", "--config", "/etc/agent.toml")
        assert once.returncode == 0, once.stdout[-3000:] + once.stderr[-3000:]
    finally:
        listener.close()
        shutil.rmtree(root, ignore_errors=True)
    results = [json.loads(line) for line in once.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 1, once.stdout
    result = results[0]
    assert result["error"] is None, result
    assert result["probe_id"] == data["probe_id"] and result["method"] == "tcp", result
    assert result["metrics"]["rtt_ms"] > 0, result
    print(f"arm64 install check: {time.monotonic() - started:.0f} s")
