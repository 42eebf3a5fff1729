"""Fleet control for the NOC: the probe inventory and signed remote configuration.

* :func:`inventory` joins the site registry with what InfluxDB knows from the probes'
  status messages (``probe_status``, ``link_usage``) and results.
* :func:`load_plan` reads a plan TOML file and validates it with the agent's own
  :class:`agent.config.TestPlan` model; :func:`push_configs` signs it
  (:mod:`netmon.signing`) and publishes it retained, QoS 1, on each probe's config topic,
  checking the broker's PUBACK reason code (MQTT v5) so an ACL refusal is an error,
  not a silent loss.
* :func:`read_retained` fetches the retained configs for ``probes config show``.
* :func:`mosquitto_acl` is the broker ACL that makes config topics writable by the NOC
  account only (documented in ``docs/fleet.md``).
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from collector.config import MqttSettings, read_secret
from collector.core.influx import InfluxClient, Series
from collector.core.schema import LINK_USAGE, PROBE_STATUS, RESULTS, Site
from netmon.contract import DEFAULT_PREFIX, Topics, format_time
from netmon.settings import describe_errors, read_toml
from netmon.signing import Envelope, SigningError, parse_envelope, sign, verify


class FleetError(Exception):
    """A fleet command failed. ``usage`` is True for bad input (exit 2), False for a
    runtime failure such as an unreachable or refusing broker (exit 1)."""

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


# --------------------------------------------------------------------------- broker ACL


def mosquitto_acl(prefix: str = DEFAULT_PREFIX, noc_user: str = "noc",
                  collector_user: str = "collector") -> str:
    """A mosquitto ``acl_file``: only ``noc_user`` writes config topics; each probe (its
    username is its probe id) publishes its own results and status and reads only its
    own config."""
    return (
        "# hatinh-netmon broker ACL (docs/fleet.md). Probes log in with their probe id.\n"
        f"user {noc_user}\n"
        f"topic readwrite {prefix}/probes/+/config\n"
        f"topic read {prefix}/probes/+/status\n"
        f"topic read {prefix}/dead-letters\n"
        "\n"
        f"user {collector_user}\n"
        f"topic read {prefix}/probes/+/results\n"
        f"topic read {prefix}/probes/+/status\n"
        f"topic write {prefix}/dead-letters\n"
        "\n"
        "# Applies to every account; %u is the username, i.e. the probe id.\n"
        f"pattern write {prefix}/probes/%u/results\n"
        f"pattern write {prefix}/probes/%u/status\n"
        f"pattern read {prefix}/probes/%u/config\n"
    )


# --------------------------------------------------------------------------- MQTT


class NocClient:
    """A short-lived MQTT v5 session for NOC commands (push, show); use as a context
    manager. Connection settings are the collector config's ``[mqtt]`` section, normally
    with the NOC account (``NETMON_MQTT__USERNAME`` / ``NETMON_MQTT__PASSWORD_FILE``)."""

    def __init__(self, settings: MqttSettings, timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        client_id = f"{settings.client_id[:40]}-noc-{int(time.time() * 1000) % 10**9}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)
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
        if s.username:
            try:
                password = read_secret(s.password_file)  # as the collector reads it
            except OSError as exc:
                raise FleetError(f"mqtt.password_file: cannot read {s.password_file}: "
                                 f"{exc.strerror}", usage=True) from None
            self.client.username_pw_set(s.username, password)
        if s.tls:
            try:
                self.client.tls_set(
                    ca_certs=str(s.ca_file) if s.ca_file else None,
                    certfile=str(s.cert_file) if s.cert_file else None,
                    keyfile=str(s.key_file) if s.key_file else None,
                    cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise FleetError(f"mqtt TLS files: {exc}", usage=True) from None
        try:
            self.client.connect(s.host, s.port, keepalive=s.keepalive_s)
        except (OSError, ssl.SSLError) as exc:
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


# --------------------------------------------------------------------------- plans


def load_plan(path: Path) -> dict[str, Any]:
    """Read a plan TOML file (``[tests.<name>]`` tables as in the agent's file config and
    ``[budgets_mb]``) and validate it with the agent's :class:`~agent.config.TestPlan`.

    Returns the plan as a JSON-ready dict; FleetError(usage=True) names each bad key.
    """
    from netmon.settings import ConfigError

    try:
        data = read_toml(path)
    except ConfigError as exc:
        raise FleetError(exc.report(), usage=True) from None
    from agent.config import TestPlan  # the same model the probe validates with

    try:
        TestPlan.model_validate(data)
    except ValidationError as exc:
        raise FleetError(f"invalid plan {path}:\n" + "\n".join(
            f"  - {p}" for p in describe_errors(exc)), usage=True) from None
    return data


@dataclass
class PushResult:
    """One probe's published config."""

    probe_id: str
    topic: str
    version: int
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        return {"probe_id": self.probe_id, "topic": self.topic, "version": self.version,
                "bytes": self.bytes}


def next_version(retained: Mapping[str, bytes], now: float | None = None) -> int:
    """A version newer than every retained config and at least the current Unix time, so
    versions keep growing even if a retained message was lost or cleared."""
    highest = 0
    for payload in retained.values():
        try:
            highest = max(highest, parse_envelope(payload)[0].version)
        except SigningError:
            continue
    return max(int(now if now is not None else time.time()), highest + 1)


def push_configs(client: NocClient, topics: Topics, probe_ids: Sequence[str],
                 plan: dict[str, Any], key: Ed25519PrivateKey,
                 version: int | None = None) -> list[PushResult]:
    """Sign ``plan`` once per probe (its own ``probe_id`` inside the signature, so an
    envelope cannot be replayed onto another probe) and publish each retained, QoS 1."""
    if version is None:
        retained = client.collect_retained(f"{topics.prefix}/probes/+/config",
                                           quiet_s=0.3)
        version = next_version({t: p for t, p in retained.items()
                                if topics.parse(t)[0] in set(probe_ids)})
    out = []
    for probe_id in probe_ids:
        try:
            env = sign(plan, probe_id=probe_id, version=version, key=key)
        except SigningError as exc:
            raise FleetError(f"cannot sign the plan: {exc}", usage=True) from None
        payload = env.to_json()
        topic = topics.config(probe_id)
        client.publish(topic, payload, retain=True)
        out.append(PushResult(probe_id, topic, version, len(payload)))
    return out


@dataclass
class ShownConfig:
    """A retained config as ``probes config show`` reports it."""

    probe_id: str
    topic: str
    present: bool
    verified: bool | None = None
    error: str | None = None
    envelope: Envelope | None = None

    def as_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        env = self.envelope
        return {
            "probe_id": self.probe_id, "topic": self.topic, "present": self.present,
            "verified": self.verified, "error": self.error,
            "version": env.version if env else None,
            "issued_at": format_time(env.issued_at) if env else None,
            "key_id": env.key_id if env else None,
            "envelope_probe_id": env.probe_id if env else None,
            "plan": env.plan if env else None,
        }


def show_config(payload: bytes | None, probe_id: str, topic: str,
                public_keys: Sequence[Any]) -> ShownConfig:
    """Verify a retained config exactly as the probe would (signature and addressee)."""
    if not payload:
        return ShownConfig(probe_id, topic, present=False)
    try:
        env = verify(payload, public_keys)
    except SigningError as exc:
        shape: Envelope | None
        try:
            shape = parse_envelope(payload)[0]
        except SigningError:
            shape = None
        return ShownConfig(probe_id, topic, True, False, str(exc), shape)
    if env.probe_id not in (probe_id, "*"):
        return ShownConfig(probe_id, topic, True, False,
                           f"wrong_probe: envelope is for {env.probe_id!r}", env)
    return ShownConfig(probe_id, topic, True, True, None, env)


# --------------------------------------------------------------------------- inventory


@dataclass
class LinkUsage:
    """Data used this month on one link, as the probe last reported it."""

    link: str
    used_bytes: int | None = None
    budget_bytes: int | None = None


@dataclass
class ProbeRow:
    """One line of ``probes list``."""

    probe_id: str
    registered: bool
    site: Site | None = None
    state: str = "never_seen"  # online | offline | silent | never_seen
    last_seen: datetime | None = None
    last_result_at: datetime | None = None
    last_result: dict[str, Any] = field(default_factory=dict)
    spool_depth: int | None = None
    config_version: int | None = None
    config_error: str | None = None
    agent_version: str | None = None
    links: list[LinkUsage] = field(default_factory=list)

    @property
    def data_used_bytes(self) -> int | None:
        """Sum over links of the bytes used this month."""
        used = [u.used_bytes for u in self.links if u.used_bytes is not None]
        return sum(used) if used else None

    def as_dict(self) -> dict[str, Any]:
        """For ``--json`` (times RFC 3339 UTC)."""
        site = self.site
        return {
            "probe_id": self.probe_id, "registered": self.registered,
            "site_name": site.name if site else None,
            "commune": site.commune if site else None,
            "district": site.district if site else None,
            "site_type": site.site_type if site else None,
            "state": self.state,
            "last_seen": format_time(self.last_seen) if self.last_seen else None,
            "last_result_at": format_time(self.last_result_at) if self.last_result_at else None,
            "last_result": self.last_result or None,
            "spool_depth": self.spool_depth,
            "config_version": self.config_version,
            "config_error": self.config_error,
            "agent_version": self.agent_version,
            "data_used_bytes": self.data_used_bytes,
            "links": [{"link": u.link, "used_bytes": u.used_bytes,
                       "budget_bytes": u.budget_bytes} for u in self.links],
        }


def _ms(value: Any) -> datetime | None:
    if value is None:
        return None
    return datetime.fromtimestamp(int(value) / 1000, UTC)


def _by_probe(series: list[Series]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for s in series:
        probe = s.tags.get("probe")
        if probe:
            out.setdefault(probe, []).extend(
                r | {k: v for k, v in s.tags.items() if k != "probe"} for r in s.rows())
    return out


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) else None


def inventory(influx: InfluxClient, sites: Mapping[str, Site], stale_after_s: float = 900.0,
              now: datetime | None = None) -> list[ProbeRow]:
    """Every registered probe (and any unregistered one InfluxDB has seen), sorted by id.

    ``state`` is ``online`` when the last status said online and arrived within
    ``stale_after_s``, ``silent`` when it said online but nothing came since (power or
    link gone without a clean last will), ``offline`` after the last will, ``never_seen``
    without any status.
    """
    now = now or datetime.now(UTC)
    q_seen = f'SELECT last("state") AS state FROM "{PROBE_STATUS}" GROUP BY "probe"'
    # The last will carries no figures: take them from the last *online* status.
    q_figures = (f'SELECT last("spool_depth") AS spool_depth, '
                 f'last("config_version") AS config_version, '
                 f'last("config_error") AS config_error, '
                 f'last("agent_version") AS agent_version, '
                 f'last("last_result_ms") AS last_result_ms FROM "{PROBE_STATUS}" '
                 f'WHERE "online" = 1 GROUP BY "probe"')
    q_result = (f'SELECT * FROM "{RESULTS}" WHERE time > now() - 90d GROUP BY "probe" '
                f'ORDER BY time DESC LIMIT 1')
    q_links = (f'SELECT last("used_bytes") AS used_bytes, last("budget_bytes") AS budget_bytes '
               f'FROM "{LINK_USAGE}" WHERE time > now() - 35d GROUP BY "probe", "link"')
    seen, figures, results, links = influx.query(";".join([q_seen, q_figures, q_result,
                                                           q_links]))
    rows: dict[str, ProbeRow] = {pid: ProbeRow(pid, True, site) for pid, site in sites.items()}

    def row(pid: str) -> ProbeRow:
        return rows.setdefault(pid, ProbeRow(pid, False))

    for pid, recs in _by_probe(seen).items():
        r, rec = row(pid), recs[0]
        r.last_seen = _ms(rec.get("time"))
        age = (now - r.last_seen).total_seconds() if r.last_seen else None
        if rec.get("state") == "online":
            r.state = "online" if age is not None and age <= stale_after_s else "silent"
        else:
            r.state = "offline"
    for pid, recs in _by_probe(figures).items():
        r, rec = row(pid), recs[0]
        r.spool_depth = _int(rec.get("spool_depth"))
        r.config_version = _int(rec.get("config_version"))
        r.config_error = rec.get("config_error") or None
        r.agent_version = rec.get("agent_version")
        r.last_result_at = _ms(rec.get("last_result_ms"))
    for pid, recs in _by_probe(results).items():
        r, rec = row(pid), recs[0]
        at = _ms(rec.get("time"))
        if at and (r.last_result_at is None or at > r.last_result_at):
            r.last_result_at = at
        r.last_result = {k: rec.get(k) for k in ("method", "link", "target", "status",
                                                  "download_mbps", "rtt_ms", "error_code")
                         if rec.get(k) not in (None, "")}
        r.last_result["at"] = format_time(at) if at else None
    for pid, recs in _by_probe(links).items():
        r = row(pid)
        for rec in recs:
            r.links.append(LinkUsage(str(rec.get("link")), _int(rec.get("used_bytes")),
                                     _int(rec.get("budget_bytes"))))
        r.links.sort(key=lambda u: u.link)
    return [rows[k] for k in sorted(rows)]
