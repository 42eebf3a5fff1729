"""Debian 12 containers booted with systemd as PID 1, for the deployment test.

A container is a copy of the root filesystem that ``scripts/deploytest-cache`` made with
debootstrap, booted with ``systemd-nspawn -b`` (flags from docs/operations.md's
"deployment test" section: ``--keep-unit --register=no`` because this machine's PID 1 is
not systemd) and reached over its veth pair with ssh, as Ansible reaches a real host. The
only network it has is that veth, addressed by the test on both ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import REPO

#: Where scripts/deploytest-cache keeps the root filesystems and the wheelhouse.
CACHE = Path(os.environ.get("NETMON_DEPLOYTEST_CACHE", "/var/cache/netmon-deploytest"))
ROOTFS_AMD64 = CACHE / "rootfs-bookworm-amd64"
ROOTFS_ARM64 = CACHE / "rootfs-bookworm-arm64"
WHEELHOUSE = CACHE / "wheelhouse"
#: Inside the containers: the wheelhouse pip is pointed at (no index, no network).
WHEELHOUSE_IN = "/srv/wheelhouse"


def missing_cache(*needed: Path) -> str | None:
    """Why the cache is not usable (None when it is)."""
    for path in needed:
        if not path.is_dir():
            return f"{path} missing: run scripts/setup --dev (as root) to build it"
    return None


def wait_for(what: str, check: Callable[[], bool], deadline_s: float,
             describe: Callable[[], str] | None = None) -> None:
    """Poll ``check`` until it is true or the deadline passes (then fail naming ``what``,
    with what ``describe`` says of the state then: a timeout alone tells nobody why)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if check():
            return
        time.sleep(1.0)
    detail = ""
    if describe is not None:
        try:
            detail = "\n" + describe()
        except Exception as exc:  # the state may be what broke: still fail on the timeout
            detail = f"\n(describing the state failed: {exc!r})"
    raise AssertionError(f"timed out after {deadline_s:.0f} s waiting for {what}{detail}")


def copy_tree(src: Path, dest: Path) -> None:
    """``cp -a`` (hard links, devices, xattrs kept; reflinks where the filesystem can)."""
    subprocess.run(["cp", "-a", "--reflink=auto", f"{src}/.", str(dest)], check=True)


def offline_pip(root: Path) -> None:
    """Point pip inside ``root`` at the wheelhouse, copied in: an offline site's pip.conf."""
    shutil.copytree(WHEELHOUSE, root / WHEELHOUSE_IN.lstrip("/"), dirs_exist_ok=True)
    (root / "etc/pip.conf").write_text(
        f"[global]\nno-index = true\nfind-links = {WHEELHOUSE_IN}\n", encoding="utf-8")


@dataclass
class Container:
    """One booted container with a veth pair: host ``host_ip`` <-> container ``ip``."""

    name: str
    root: Path
    host_ip: str
    ip: str
    key: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def veth(self) -> str:
        """The host side of the veth pair nspawn creates (``ve-`` + name, 15 chars max)."""
        return ("ve-" + self.name)[:15]

    def prepare(self, authorized_key: str, hosts: dict[str, str]) -> None:
        """Address, ssh key and /etc/hosts written into the root filesystem before boot."""
        net = self.root / "etc/systemd/network"
        net.mkdir(parents=True, exist_ok=True)
        (net / "10-host0.network").write_text(
            f"[Match]\nName=host0\n\n[Network]\nAddress={self.ip}/30\n"
            "LinkLocalAddressing=no\nIPv6AcceptRA=no\n", encoding="utf-8")
        wants = self.root / "etc/systemd/system/multi-user.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        link = wants / "systemd-networkd.service"
        if not link.exists():
            link.symlink_to("/lib/systemd/system/systemd-networkd.service")
        ssh = self.root / "root/.ssh"
        ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
        (ssh / "authorized_keys").write_text(authorized_key, encoding="utf-8")
        (ssh / "authorized_keys").chmod(0o600)
        (self.root / "etc/hostname").write_text(self.name + "\n", encoding="utf-8")
        lines = ["127.0.0.1 localhost " + self.name]
        lines += [f"{ip} {name}" for name, ip in hosts.items()]
        (self.root / "etc/hosts").write_text("\n".join(lines) + "\n", encoding="utf-8")
        # The containers cannot reach the archive: the package lists debootstrap left
        # count as fresh, so apt's cache_valid_time does not try an update.
        periodic = self.root / "var/lib/apt/periodic"
        periodic.mkdir(parents=True, exist_ok=True)
        (periodic / "update-success-stamp").touch()

    def boot(self, deadline_s: float = 300) -> None:
        """Start systemd-nspawn, address the host end, wait until sshd answers."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                ["systemd-nspawn", "-D", str(self.root), "--keep-unit", "--register=no",
                 "-b", "-M", self.name, "--network-veth", "--console=read-only"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        wait_for(f"{self.veth} to appear", self._veth_up, 60)
        subprocess.run(["ip", "addr", "replace", f"{self.host_ip}/30", "dev", self.veth],
                       check=True)
        subprocess.run(["ip", "link", "set", self.veth, "up"], check=True)
        wait_for(f"sshd in {self.name} ({self.ip})", self._ssh_ok, deadline_s)

    def _veth_up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"systemd-nspawn exited ({self.proc.returncode}):\n"
                                 + self.log.read_text(errors="replace")[-3000:])
        return Path("/sys/class/net", self.veth).exists()

    def _ssh_ok(self) -> bool:
        return self.ssh("true", check=False, timeout=20).returncode == 0

    def ssh_argv(self) -> list[str]:
        """ssh to the container as root with the test's key, no host key bookkeeping."""
        return ["ssh", "-i", str(self.key), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", f"root@{self.ip}"]

    def ssh(self, command: str, check: bool = True, timeout: float = 300,
            ) -> subprocess.CompletedProcess[str]:
        """Run a shell command in the container."""
        try:
            proc = subprocess.run([*self.ssh_argv(), command], capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            if check:
                raise
            return subprocess.CompletedProcess([command], 255, "", "timeout")
        if check and proc.returncode != 0:
            raise AssertionError(f"in {self.name}: {command!r} failed ({proc.returncode}):\n"
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def wait_exit(self, deadline_s: float = 180) -> int:
        """Wait for systemd-nspawn to end (after a poweroff or reboot inside)."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=deadline_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def reboot(self) -> None:
        """``systemctl reboot`` inside; nspawn ends with 133 ("reboot"), boot it again."""
        self.ssh("systemctl reboot", check=False, timeout=30)
        code = self.wait_exit()
        assert code == 133, f"systemd-nspawn ended with {code} after a reboot, not 133"
        self.boot()

    def stop(self) -> None:
        """Power the container off (killed if it does not end in time)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.ssh("systemctl poweroff", check=False, timeout=30)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def checkout_copy(dest: Path) -> Path:
    """A copy of this checkout's files (tracked and new, not ignored): an operator's clone.

    The playbooks write into their own folder (pki/, .build/), so the test runs them from
    a copy rather than from the repository itself.
    """
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if not src.is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return dest
