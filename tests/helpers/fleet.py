"""Helpers for the fleet tests: keys, plans, a mosquitto with per-account passwords and
the documented ACL, and a small MQTT v5 client that records acknowledgements."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from collector.fleet.acl import Listener, enrollment_acl, mosquitto_acl, mosquitto_listeners
from devstack import services
from netmon.signing import load_private_key, write_keypair


def make_keys(folder: Path, name: str = "noc") -> tuple[Path, Path, Ed25519PrivateKey]:
    """A fresh key pair under ``folder``: (private path, public path, private key)."""
    folder.mkdir(parents=True, exist_ok=True)
    priv, pub = folder / f"{name}.key", folder / f"{name}.pub"
    write_keypair(priv, pub)
    return priv, pub, load_private_key(priv)


def tcp_plan(target: str, every_s: float = 10.0, name: str = "rtt", count: int = 1,
             **extra: Any) -> dict[str, Any]:
    """A plan with one cheap real test: TCP connect time to ``target``."""
    test = {"method": "tcp", "target": target, "every_s": every_s, "jitter_s": 0.0,
            "count": count, "interval_s": 0.01, "timeout_s": 5.0} | extra
    return {"tests": {name: test}}


def _passwd(path: Path, users: dict[str, str]) -> None:
    tool = services.require_binary("mosquitto_passwd")
    for i, (user, password) in enumerate(users.items()):
        argv = [tool, "-b"] + (["-c"] if i == 0 else []) + [str(path), user, password]
        subprocess.run(argv, check=True, capture_output=True)
    path.chmod(0o600)


def start_acl_broker(workdir: Path, users: dict[str, str], prefix: str = "netmon/v1",
                     port: int | None = None, service_port: int | None = None,
                     service_users: tuple[str, ...] = ("noc", "collector"),
                     enrollment_users: dict[str, str] | None = None,
                     enrollment_port: int | None = None,
                     ) -> services.Service:
    """mosquitto as deployed: ``allow_anonymous false``, password files made by
    mosquitto_passwd, the ACL of :func:`collector.fleet.acl.mosquitto_acl` and the two
    listeners of :func:`collector.fleet.acl.mosquitto_listeners` (plain MQTT on loopback).
    ``port`` is the probes' listener (client id = username; every account in ``users``),
    ``extra["service_port"]`` the service listener (only ``service_users``).
    ``enrollment_users`` adds the enrollment listener (``extra["enrollment_port"]``: only
    those accounts, :func:`collector.fleet.acl.enrollment_acl`). ``users`` may be empty
    for the probes' file when it already exists (kept as is: enrolled accounts)."""
    workdir.mkdir(parents=True, exist_ok=True)
    passwd, service_passwd = workdir / "passwd", workdir / "services.passwd"
    _passwd(passwd, users)
    _passwd(service_passwd, {u: pw for u, pw in users.items() if u in service_users})
    acl = workdir / "acl"
    acl.write_text(mosquitto_acl(prefix))
    port = port or services.free_port()
    service_port = service_port or services.free_port()
    enrollment = None
    if enrollment_users:
        enrollment_port = enrollment_port or services.free_port()
        enroll_passwd, enroll_acl = workdir / "enroll.passwd", workdir / "enroll.acl"
        _passwd(enroll_passwd, enrollment_users)
        enroll_acl.write_text(enrollment_acl(prefix))
        enrollment = Listener(enrollment_port, "127.0.0.1", str(enroll_passwd),
                              str(enroll_acl))
    listeners = mosquitto_listeners(
        Listener(port, "127.0.0.1", str(passwd), str(acl), username_as_clientid=True),
        Listener(service_port, "127.0.0.1", str(service_passwd), str(acl)), enrollment)
    # (mosquitto_config keeps a root broker root, so it reads the 0600 password files)
    conf = services.mosquitto_config(workdir, port, listeners=listeners)
    svc = services.start_mosquitto(workdir, port=port, config=conf)
    services.wait_for(lambda: services.tcp_open("127.0.0.1", service_port), 15,
                      f"mosquitto service listener on {service_port}", svc.proc, svc.log)
    svc.extra["service_port"] = service_port
    if enrollment is not None:
        services.wait_for(lambda: services.tcp_open("127.0.0.1", enrollment.port), 15,
                          f"mosquitto enrollment listener on {enrollment.port}", svc.proc,
                          svc.log)
        svc.extra["enrollment_port"] = enrollment.port
    return svc


class Client:
    """A synchronous-looking MQTT v5 client for tests: connect, publish and wait for the
    PUBACK reason code, subscribe and collect messages."""

    def __init__(self, broker: services.Service, username: str | None = None,
                 password: str | None = None, client_id: str | None = None,
                 persistent: bool = False, port: int | None = None) -> None:
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2,
                             client_id=client_id or f"t-{time.monotonic_ns()}",
                             protocol=mqtt.MQTTv5)
        self.subacks: set[int] = set()
        if username:
            self.c.username_pw_set(username, password)
        self.cond = threading.Condition()
        self.acks: dict[int, ReasonCode] = {}
        self.messages: list[mqtt.MQTTMessage] = []
        self.connect_rc: ReasonCode | None = None
        self.c.on_connect = self._on_connect
        self.c.on_publish = self._on_publish
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        # persistent: the broker keeps the session (subscriptions, queued QoS 1 messages)
        # while this client is away, across a broker restart on the same persistence dir.
        props = None
        if persistent:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
        # port: another listener of the same broker (the service listener)
        self.c.connect(broker.host, port or broker.port, clean_start=not persistent,
                       properties=props)
        self.c.loop_start()
        self.wait(lambda: self.connect_rc is not None, 10)

    def _on_connect(self, c: Any, u: Any, f: Any, rc: ReasonCode, p: Any = None) -> None:
        with self.cond:
            self.connect_rc = rc
            self.cond.notify_all()

    def _on_subscribe(self, c: Any, u: Any, mid: int, rcs: Any, p: Any = None) -> None:
        with self.cond:
            self.subacks.add(mid)
            self.cond.notify_all()

    def _on_publish(self, c: Any, u: Any, mid: int, rc: ReasonCode, p: Any = None) -> None:
        with self.cond:
            self.acks[mid] = rc
            self.cond.notify_all()

    def _on_message(self, c: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def wait(self, check: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``check()`` (called under the lock) is true."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not check():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def publish(self, topic: str, payload: bytes, retain: bool = True) -> ReasonCode:
        """QoS 1 publish; the PUBACK reason code."""
        info = self.c.publish(topic, payload, qos=1, retain=retain)
        assert self.wait(lambda: info.mid in self.acks, 10), "no PUBACK"
        return self.acks[info.mid]

    def subscribe(self, topic: str) -> None:
        """QoS 1 subscription, in force when this returns (SUBACK received)."""
        _, mid = self.c.subscribe(topic, qos=1)
        assert self.wait(lambda: mid in self.subacks, 30), f"no SUBACK for {topic}"

    def payloads(self, topic: str) -> list[bytes]:
        """Payloads received on ``topic`` so far."""
        with self.cond:
            return [bytes(m.payload) for m in self.messages if m.topic == topic]

    def close(self) -> None:
        """Disconnect."""
        self.c.disconnect()
        self.c.loop_stop()
