"""Start real services (mosquitto, influxd, iperf3, nginx) as plain user processes on
loopback, each under its own directory. Used by the tests' fixtures and by the local
end-to-end stack; never touches a system service.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from netmon.errors import NetmonError


class ServiceError(NetmonError, RuntimeError):
    """A service could not start; the message says which and where its log is."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def require_binary(name: str) -> str:
    """Absolute path of an executable, or ServiceError naming the Debian package."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}", f"/sbin/{name}")
         if os.access(p, os.X_OK)), None)
    if not path:
        raise ServiceError(f"{name} not found: install it (apt-get install {name}) "
                           "or run scripts/setup")
    return path


def wait_for(check: Callable[[], bool], timeout: float, what: str,
             proc: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> None:
    """Poll ``check`` until true; fail with the log's tail if the process died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"{what} exited with {proc.returncode}: {_tail(log)}")
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.05)
    raise ServiceError(f"{what} not ready after {timeout:.0f}s: {_tail(log)}")


def _tail(log: Path | None, lines: int = 15) -> str:
    if log is None or not log.exists():
        return "(no log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def tcp_open(host: str, port: int) -> bool:
    """True when something accepts TCP connections on host:port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@dataclass
class Service:
    """A running service process and how to reach it."""

    name: str
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    workdir: Path
    log: Path
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; idempotent."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL: a crash, for tests of what survives one."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _spawn(argv: Sequence[str], log: Path, cwd: Path | None = None,
           env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        # Own process group so Ctrl-C in a terminal reaches us first and we stop it cleanly.
        return subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                env=env, start_new_session=True)


# --------------------------------------------------------------------------- mosquitto


#: The broker's persistence settings, the same as the Ansible role deploys
#: (``mosquitto_autosave_interval`` / ``mosquitto_autosave_on_changes``; a test compares
#: them). Measured loss window and cost: docs/operations.md, "Broker persistence".
AUTOSAVE_INTERVAL = 5
AUTOSAVE_ON_CHANGES = False


def mosquitto_config(workdir: Path, port: int, host: str = "127.0.0.1",
                     extra: str = "", anonymous: bool = True,
                     autosave_interval: int = AUTOSAVE_INTERVAL,
                     autosave_on_changes: bool = AUTOSAVE_ON_CHANGES,
                     listeners: str | None = None) -> str:
    """A minimal mosquitto.conf for a loopback listener with persistence under workdir
    (saved every ``autosave_interval`` seconds, or changes with ``autosave_on_changes``).
    ``listeners`` (from :func:`collector.fleet.acl.mosquitto_listeners`) replaces the
    single anonymous-or-not listener and ``extra``."""
    # As root, mosquitto drops to the "mosquitto" user, which cannot read files under a
    # private work dir (password file, log); these are throwaway local brokers.
    run_as = "user root\n" if os.geteuid() == 0 else ""
    auth = ("" if listeners is not None else
            f"per_listener_settings false\nallow_anonymous {'true' if anonymous else 'false'}\n")
    return (
        f"{run_as}{auth}"
        f"persistence true\npersistence_location {workdir}/\n"
        f"autosave_interval {autosave_interval}\n"
        f"autosave_on_changes {'true' if autosave_on_changes else 'false'}\n"
        f"log_dest file {workdir}/mosquitto.log\nlog_type error\nlog_type warning\n"
        f"log_type notice\nlog_type information\n"
        f"max_queued_messages 1000000\nmax_inflight_messages 100\n"
        + (listeners if listeners is not None else f"listener {port} {host}\n{extra}")
    )


def start_mosquitto(workdir: Path, port: int | None = None, host: str = "127.0.0.1",
                    config: str | None = None, ready_port: int | None = None) -> Service:
    """Start mosquitto with ``config`` (default: anonymous loopback listener)."""
    binary = require_binary("mosquitto")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    conf = workdir / "mosquitto.conf"
    conf.write_text(config if config is not None else mosquitto_config(workdir, port, host))
    log = workdir / "mosquitto.stdout"
    proc = _spawn([binary, "-c", str(conf)], log)
    probe_port = ready_port or port
    wait_for(lambda: tcp_open(host, probe_port), 15, f"mosquitto on {host}:{probe_port}", proc,
             workdir / "mosquitto.log")
    return Service("mosquitto", proc, host, port, workdir, workdir / "mosquitto.log")


# --------------------------------------------------------------------------- influxd


def influxd_config(workdir: Path, port: int, rpc_port: int, host: str = "127.0.0.1",
                   auth: bool = False) -> str:
    """An influxd 1.x config serving the v1 HTTP API on host:port with data under workdir."""
    return f"""reporting-disabled = true
bind-address = "{host}:{rpc_port}"
[meta]
  dir = "{workdir}/meta"
[data]
  dir = "{workdir}/data"
  wal-dir = "{workdir}/wal"
  query-log-enabled = false
  wal-fsync-delay = "0s"
  max-series-per-database = 0
  max-values-per-tag = 0
[coordinator]
  query-timeout = "0s"
[retention]
  enabled = true
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "{host}:{port}"
  auth-enabled = {'true' if auth else 'false'}
  log-enabled = false
  max-body-size = 0
[continuous_queries]
  enabled = false
"""


def start_influxd(workdir: Path, port: int | None = None, host: str = "127.0.0.1",
                  auth: bool = False) -> Service:
    """Start influxd (1.x) with its own meta/data/wal directories."""
    binary = require_binary("influxd")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    rpc_port = free_port(host)
    conf = workdir / "influxdb.conf"
    conf.write_text(influxd_config(workdir, port, rpc_port, host, auth))
    log = workdir / "influxd.log"
    proc = _spawn([binary, "-config", str(conf)], log)

    def ping() -> bool:
        with urllib.request.urlopen(f"http://{host}:{port}/ping", timeout=1) as resp:
            return bool(resp.status == 204)

    wait_for(ping, 30, f"influxd on {host}:{port}", proc, log)
    return Service("influxd", proc, host, port, workdir, log, {"rpc_port": rpc_port})


# --------------------------------------------------------------------------- iperf3


def iperf3_server_argv(port: int, bind: str | None = None) -> list[str]:
    """argv for one iperf3 server (it runs one test at a time)."""
    argv = [require_binary("iperf3"), "-s", "-p", str(port)]
    if bind:
        argv += ["-B", bind]
    return argv


def start_iperf3(workdir: Path, port: int | None = None, host: str = "127.0.0.1",
                 netns: str | None = None) -> Service:
    """Start an iperf3 server on host:port, optionally inside a network namespace."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or (free_port(host) if netns is None else 5201)
    argv = iperf3_server_argv(port, host)
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    log = workdir / f"iperf3-{port}.log"
    proc = _spawn(argv, log)
    wait_for(lambda: _listening(port, netns), 10, f"iperf3 on {host}:{port}", proc, log)
    return Service("iperf3", proc, host, port, workdir, log)


def _listening(port: int, netns: str | None) -> bool:
    argv = ["ss", "-Hltn", f"sport = :{port}"]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    return bool(out.strip())


# --------------------------------------------------------------------------- nginx


def start_nginx(workdir: Path, config: str, port: int, host: str = "127.0.0.1",
                netns: str | None = None) -> Service:
    """Start nginx in the foreground with ``config`` (a full nginx.conf text)."""
    binary = require_binary("nginx")
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(config)
    argv = [binary, "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    log = workdir / "nginx.stdout"
    proc = _spawn(argv, log)
    wait_for(lambda: _listening(port, netns), 10, f"nginx on {host}:{port}", proc, log)
    return Service("nginx", proc, host, port, workdir, log)
