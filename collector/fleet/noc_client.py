"""The NOC's MQTT client: a short-lived MQTT v5 session for ``probes config push/show``.

Built with :func:`netmon.mqtt.new_client` from the collector config's ``[mqtt]`` section
(normally with the NOC account). Every publish waits for its PUBACK and checks the
reason code, so a broker ACL refusal is an error, not a silent loss.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from collector.config import MqttSettings
from collector.fleet.errors import FleetError
from netmon.mqtt import ReconnectPolicy, new_client
from netmon.settings import SecretFileError

#: A command lasts seconds: paho's loop may reconnect once within its timeout, and a
#: resent publish still has to be acknowledged before the timeout.
NOC_RECONNECT = ReconnectPolicy(1.0, 30.0, automatic=True)


class NocClient:
    """A short-lived MQTT v5 session for NOC commands (push, show); use as a context
    manager. Connection settings are the collector config's ``[mqtt]`` section, normally
    with the NOC account (``NETMON_MQTT__USERNAME`` / ``NETMON_MQTT__PASSWORD_FILE``)."""

    def __init__(self, settings: MqttSettings, timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        # Its own client id: never takes over the session of a collector that shares the
        # config file.
        client_id = f"{settings.client_id[:40]}-noc-{int(time.time() * 1000) % 10**9}"
        try:
            credentials = settings.credentials()  # as the collector reads it
        except SecretFileError as exc:
            raise FleetError(str(exc), usage=True) from None
        try:
            self.client = new_client(settings, client_id=client_id,
                                     protocol=MQTTProtocolVersion.MQTTv5,
                                     reconnect=NOC_RECONNECT, credentials=credentials)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise FleetError(f"mqtt TLS files: {exc}", usage=True) from None
        self._connected = threading.Event()
        self._connect_rc: ReasonCode | None = None
        self._cond = threading.Condition()
        self._acks: dict[int, ReasonCode] = {}
        self._subacks: dict[int, list[ReasonCode]] = {}
        self.messages: dict[str, bytes] = {}
        self.last_message_at = 0.0
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    # paho callbacks run in its network thread
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode,
                    props: Properties | None = None) -> None:
        self._connect_rc = rc
        self._connected.set()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode,
                    props: Properties | None = None) -> None:
        with self._cond:
            self._acks[mid] = rc
            self._cond.notify_all()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      rcs: list[ReasonCode], props: Properties | None = None) -> None:
        with self._cond:
            self._subacks[mid] = list(rcs)
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages[msg.topic] = bytes(msg.payload)
            self.last_message_at = time.monotonic()
            self._cond.notify_all()

    def __enter__(self) -> NocClient:
        s = self.settings
        try:
            self.client.connect(s.host, s.port, keepalive=s.keepalive_s)
        except OSError as exc:  # refused, unreachable, or a failed TLS handshake
            raise FleetError(f"broker {s.host}:{s.port} unreachable: {exc}") from None
        self.client.loop_start()
        if not self._connected.wait(self.timeout_s):
            self.close()
            raise FleetError(f"broker {s.host}:{s.port}: no CONNACK in {self.timeout_s:g}s")
        if self._connect_rc is None or self._connect_rc.is_failure:
            self.close()
            raise FleetError(f"broker {s.host}:{s.port} refused the connection: "
                             f"{self._connect_rc} (user {s.username!r})")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, retain: bool = True) -> None:
        """QoS 1 publish; FleetError unless the broker acknowledges with success."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise FleetError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        deadline = time.monotonic() + self.timeout_s
        with self._cond:
            while info.mid not in self._acks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FleetError(f"publish to {topic}: no PUBACK in {self.timeout_s:g}s")
                self._cond.wait(left)
            rc = self._acks.pop(info.mid)
        if rc.is_failure:
            raise FleetError(f"broker refused the config on {topic}: {rc} (the account "
                             f"{self.settings.username!r} may not write config topics)")

    def collect_retained(self, topic_filter: str, expect: Iterable[str] = (),
                         quiet_s: float = 0.5) -> dict[str, bytes]:
        """Subscribe and gather retained messages: returns once every topic in ``expect``
        has arrived, or ``quiet_s`` after the last message (the broker sends retained
        messages right after the SUBACK)."""
        wanted = set(expect)
        rc, mid = self.client.subscribe(topic_filter, qos=1)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise FleetError(f"subscribe to {topic_filter} failed: {mqtt.error_string(rc)}")
        deadline = time.monotonic() + self.timeout_s
        with self._cond:
            while mid not in self._subacks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FleetError(f"subscribe to {topic_filter}: no SUBACK")
                self._cond.wait(left)
            codes = self._subacks.pop(mid)
            if any(c.is_failure for c in codes):
                raise FleetError(f"broker refused the subscription to {topic_filter}: "
                                 f"{', '.join(str(c) for c in codes)}")
            self.last_message_at = time.monotonic()
            while not (wanted and wanted <= set(self.messages)):
                left = min(deadline, self.last_message_at + quiet_s) - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return dict(self.messages)
