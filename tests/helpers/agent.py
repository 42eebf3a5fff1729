"""Helpers for the agent runtime tests: config files, an MQTT subscriber, the agent as a
subprocess, a fake clock, and test-only methods (named as such) for scheduler tests
where a real measurement would be slow or could not report a chosen byte count."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.clock import Clock
from agent.methods.base import MethodContext, make_result
from devstack.services import Service
from netmon.contract import ResultMessage, now_utc
from netmon.methods import Declaration, MethodOptions
from tests.helpers import REPO


def toml_value(value: Any) -> str:
    """A Python value as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def toml_text(data: dict[str, Any]) -> str:
    """A (two-level) dict as TOML text: scalars first, then tables."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []

    def walk(prefix: str, obj: dict[str, Any]) -> None:
        for key, value in obj.items():
            if isinstance(value, dict):
                tables.append((f"{prefix}{key}", value))
    walk("", data)
    for key, value in data.items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {toml_value(value)}")
    while tables:
        name, table = tables.pop(0)
        lines.append(f"\n[{name}]")
        for key, value in table.items():
            if isinstance(value, dict):
                tables.append((f"{name}.{key}", value))
            else:
                lines.append(f"{key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def agent_config(tmp_path: Path, svc: Service | None, tests: dict[str, Any] | None = None,
                 **top: Any) -> dict[str, Any]:
    """A config dict for one loopback link, plain MQTT to the broker ``svc``; ``top``
    replaces top-level keys (dict values update sections)."""
    cfg: dict[str, Any] = {
        "probe_id": "test-probe-01",
        "heartbeat_s": 5,
        "broker": {"host": "127.0.0.1", "port": svc.port if svc else 1, "tls": False,
                   "reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
        "spool": {"path": str(tmp_path / "state" / "spool.db")},
        "links": {"lo": {"access": "fixed", "isp": "Loopback"}},
        "tests": tests or {},
    }
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


def write_config(tmp_path: Path, data: dict[str, Any], name: str = "agent.toml") -> Path:
    """Write ``data`` as TOML; returns the path."""
    path = tmp_path / name
    path.write_text(toml_text(data), encoding="utf-8")
    return path


def tcp_test(port: int, every_s: float = 1.0, **extra: Any) -> dict[str, Any]:
    """A cheap real measurement: TCP connect time to a loopback port."""
    return {"method": "tcp", "every_s": every_s, "jitter_s": 0.0,
            "target": f"127.0.0.1:{port}", "count": 1, **extra}


class Listener:
    """A loopback TCP port that accepts and closes connections (a target for the tcp
    method): accepting keeps the backlog from filling however long the test runs.
    ``accepted`` counts them: each ``tcp`` run with ``count = 1`` makes exactly one, so it
    counts results independently of the agent."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port = self.sock.getsockname()[1]
        self.target = f"127.0.0.1:{self.port}"
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------- MQTT


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    #: ``time.monotonic()`` when it arrived.
    at: float = 0.0

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.payload)
        return data


@dataclass
class Subscriber:
    """A real MQTT subscriber collecting messages in a background thread."""

    host: str
    port: int
    topic: str
    client_id: str = ""
    persistent: bool = False
    ca_file: str | None = None
    username: str | None = None
    password: str | None = None
    messages: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=self.client_id or f"sub-{os.getpid()}-{id(self)}",
                                  clean_session=not self.persistent)
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.reconnect_delay_set(0.1, 0.5)
        if self.ca_file:
            self.client.tls_set(ca_certs=self.ca_file)
        if self.username:
            self.client.username_pw_set(self.username, self.password)
        self.client.connect(self.host, self.port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscription not acknowledged"

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain),
                                          time.monotonic()))

    def results(self) -> list[dict[str, Any]]:
        """Result messages received so far, in arrival order."""
        with self._lock:
            return [m.json() for m in self.messages if m.topic.endswith("/results")]

    def statuses(self) -> list[Received]:
        """Status messages received so far."""
        with self._lock:
            return [m for m in self.messages if m.topic.endswith("/status")]

    def wait(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``pred`` until true or fail naming ``what``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; got {len(self.messages)} msgs")

    def deliveries(self) -> dict[str, list[float]]:
        """Arrival times of each result id (several when it was published again)."""
        out: dict[str, list[float]] = {}
        with self._lock:
            for m in self.messages:
                if m.topic.endswith("/results"):
                    out.setdefault(m.json()["id"], []).append(m.at)
        return out

    def receipt(self, probe_id: str, ids: list[str], prefix: str = "netmon/v1",
                payload: bytes | None = None) -> None:
        """Play the collector: publish a receipt (QoS 1) naming ``ids`` to ``probe_id``,
        or ``payload`` as is; returns once the broker acknowledged it."""
        import uuid

        from netmon.contract import ReceiptMessage, Topics
        if payload is None:
            payload = ReceiptMessage(probe_id=probe_id,
                                     ids=tuple(uuid.UUID(i) for i in ids)).to_json()
        info = self.client.publish(Topics(prefix).receipts(probe_id), payload, qos=1)
        info.wait_for_publish(10)
        assert info.is_published(), "receipt not acknowledged by the broker"

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _read_spool(path: Path, read: Callable[[Any], list[str]]) -> list[str]:
    """``read(spool)`` on a read-only view; [] while the agent has not created it yet."""
    import sqlite3

    from agent.spool import Spool, SpoolError
    if not path.exists():
        return []
    try:
        with Spool(path, readonly=True) as spool:
            return read(spool)
    except (sqlite3.OperationalError, SpoolError) as exc:
        if "no such table" in str(exc) or "unable to open" in str(exc):
            return []  # the file exists, its schema does not yet
        raise


def spool_ids(path: Path) -> list[str]:
    """Ids in a spool file right now (read-only, while the agent may be writing)."""
    return _read_spool(path, lambda spool: spool.ids())


def spool_unsent_ids(path: Path) -> list[str]:
    """Ids the broker has not acknowledged yet (not marked sent), oldest first."""
    return _read_spool(path, lambda spool: [e.id for e in spool.peek(limit=10**9)])


def spool_sent_ids(path: Path) -> list[str]:
    """Ids acknowledged by the broker and waiting for a receipt, oldest first."""
    return _read_spool(path, lambda spool: [e.id for e in spool.due(float("inf"), 10**9)])


# --------------------------------------------------------------------------- TLS


def make_tls(directory: Path, host_ip: str = "127.0.0.1") -> dict[str, Path]:
    """A throwaway CA and a server certificate for ``host_ip`` (cryptography package)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("netmon test CA"))
          .issuer_name(name("netmon test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("broker"))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(host_ip)), x509.DNSName("localhost")]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    out = {"ca": directory / "ca.pem", "cert": directory / "server.pem",
           "key": directory / "server.key"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.TraditionalOpenSSL,
                                             serialization.NoEncryption()))
    out["key"].chmod(0o600)
    return out


def start_tls_mosquitto(workdir: Path, users: dict[str, str]) -> Service:
    """mosquitto with only a TLS listener and a password file (mosquitto_passwd)."""
    from devstack import services
    tls = make_tls(workdir / "tls")
    passwd = workdir / "passwd"
    passwd.touch(mode=0o600)
    for user, password in users.items():
        subprocess.run([services.require_binary("mosquitto_passwd"), "-b", str(passwd),
                        user, password], check=True, capture_output=True)
    extra = (f"cafile {tls['ca']}\ncertfile {tls['cert']}\nkeyfile {tls['key']}\n"
             f"password_file {passwd}\n")
    svc = start_broker(workdir, extra=extra, anonymous=False)
    svc.extra["ca"] = tls["ca"]
    return svc


def start_broker(workdir: Path, port: int | None = None, extra: str = "",
                 anonymous: bool = True) -> Service:
    """mosquitto whose persistence, log and password file work when the tests run as
    root: started as root, mosquitto drops to the ``mosquitto`` user, which cannot
    open files under pytest's private (0700) temporary directories."""
    from devstack import services
    port = port or services.free_port()
    conf = services.mosquitto_config(workdir, port, extra=extra, anonymous=anonymous)
    if os.geteuid() == 0 and "user root" not in conf:  # newer services.py does it itself
        conf = "user root\n" + conf
    return services.start_mosquitto(workdir, port=port, config=conf)


# --------------------------------------------------------------------------- agent process


#: ``netmon-agent`` (the real CLI) from this checkout.
AGENT_ARGV = [sys.executable, "-c", "import sys; from agent.cli import main; sys.exit(main())"]


def agent_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for the agent: the clock taken as synced, plus ``env``."""
    return {**os.environ, "NETMON_CLOCK_ASSUME": "synced", **(env or {})}


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120
        ) -> subprocess.CompletedProcess[str]:
    """``netmon-agent ARGS`` run to completion, output captured."""
    return subprocess.run([*AGENT_ARGV, *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, env=agent_env(env))


def start_agent(config: Path, log: Path, env: dict[str, str] | None = None,
                command: str = "run") -> subprocess.Popen[bytes]:
    """``netmon-agent run --config`` as a subprocess (the real CLI)."""
    with open(log, "ab") as out:  # the child has its own copy of the descriptor
        return subprocess.Popen(
            [*AGENT_ARGV, command, "--config", str(config), "--log-level", "debug"],
            stdout=out, stderr=subprocess.STDOUT, env=agent_env(env), cwd=REPO)


def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL, timeout: float = 15) -> int:
    """Send ``sig`` and wait; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout)


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``pred`` (10 ms) until true or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


# --------------------------------------------------------------------------- fake clock


class FakeClock(Clock):
    """Virtual time: ``sleep`` lets ready tasks run, then jumps. For scheduler tests over
    days or a month; the broker and the spool stay real."""

    def __init__(self, start: datetime | None = None) -> None:
        self.t = 1000.0
        self.start_mono = self.t
        self.start_wall = start or datetime(2026, 6, 1, tzinfo=UTC) - timedelta(hours=7)
        #: Virtual time stops advancing at this wall time (end of a simulation).
        self.frozen_at: datetime | None = None

    def monotonic(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return self.start_wall + timedelta(seconds=self.t - self.start_mono)

    async def sleep(self, seconds: float) -> None:
        for _ in range(50):  # let started jobs finish before time jumps
            await asyncio.sleep(0)
        if self.frozen_at is not None and self.wall() >= self.frozen_at:
            await asyncio.sleep(0.01)  # time stands still: nothing new becomes due
            return
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.t += seconds


# --------------------------------------------------------------------------- test-only methods


class TestOnlyOptions(MethodOptions):
    """Options of the test-only methods."""

    __test__ = False
    sleep_s: float = 0.0  # real seconds the "measurement" takes
    virtual_s: float = 0.0  # fake-clock seconds it takes (needs ``clock`` set)
    bytes: float = 0.0


# Declared here, not in netmon.methods: a test registers them for its own duration with
# the ``register_method`` fixture (tests/conftest.py), so production never knows them.
TEST_ONLY_THROUGHPUT = Declaration("test_only_throughput", "throughput", TestOnlyOptions,
                                   "TEST ONLY: sleeps, reports a chosen byte count")
TEST_ONLY_LATENCY = Declaration("test_only_latency", "latency", TestOnlyOptions,
                                "TEST ONLY: the latency twin")


class TestOnlyThroughputMethod:
    """TEST ONLY: a throughput 'measurement' that sleeps and reports a chosen byte count.
    Records (start, end) of every run in ``RUNS`` for overlap checks."""

    __test__ = False
    decl: ClassVar[Declaration] = TEST_ONLY_THROUGHPUT
    RUNS: ClassVar[list[tuple[str, str, float, float]]] = []
    clock: ClassVar[FakeClock | None] = None

    async def run(self, ctx: MethodContext, options: TestOnlyOptions) -> list[ResultMessage]:
        """Sleep (really or on the fake clock), record the run, return one result."""
        t0 = self.clock.monotonic() if self.clock else time.monotonic()
        started = now_utc()
        if options.sleep_s:
            await asyncio.sleep(options.sleep_s)
        if options.virtual_s and self.clock:
            self.clock.advance(options.virtual_s)
        t1 = self.clock.monotonic() if self.clock else time.monotonic()
        kind = self.decl.kind
        self.RUNS.append((kind, f"{options.target}@{ctx.link.name}", t0, t1))
        metrics = {"download_mbps": 50.0} if kind == "throughput" else {"rtt_ms": 1.0}
        if options.bytes:
            metrics["bytes"] = options.bytes
        return [make_result(ctx, self.decl.name, options.target, started, t1 - t0, metrics)]


class TestOnlyLatencyMethod(TestOnlyThroughputMethod):
    """TEST ONLY: the latency twin of :class:`TestOnlyThroughputMethod`."""

    __test__ = False
    decl: ClassVar[Declaration] = TEST_ONLY_LATENCY


class AgentProcess:
    """``netmon-agent run --config CONFIG`` as a child process, its output in ``log``."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "run", "--config", str(self.config),
                 "--log-level", "info"], stdout=out, stderr=subprocess.STDOUT,
                env=os.environ | {"PYTHONUNBUFFERED": "1"})

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def text(self) -> str:
        """Everything the agent logged so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self) -> str:
        """The end of the log, for assertion messages."""
        return self.text()[-3000:]


def fresh_state(path: Path, timeout: float = 10.0) -> dict[str, Any]:
    """The running agent's state file at ``path`` after asking it for a fresh one
    (SIGUSR1, as ``netmon-agent status`` does: at its heartbeat it rewrites the file for
    news, not for counters); {} when there is none or it is unreadable."""
    def read() -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):  # absent, or being replaced
            return {}
        return data
    try:
        before = path.stat().st_mtime_ns
        pid = int(read().get("pid", 0))
        # Never 0 or -1 (a whole process group, every process), nor a reused pid.
        if pid <= 0 or b"agent" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return read()
        os.kill(pid, signal.SIGUSR1)
    except (OSError, ValueError):
        return read()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if path.stat().st_mtime_ns != before:
                break
        time.sleep(0.01)
    return read()
