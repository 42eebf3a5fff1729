"""The run time's configuration: plain frozen dataclasses, no pydantic (issue 20).

``netmon-agent run`` validates the config with the pydantic models (:mod:`agent.config`,
:mod:`netmon.plan`, :mod:`netmon.methods`), then hands it over as JSON
(:mod:`agent.handoff`); :func:`from_handoff` builds these from that JSON without checking
it again. Each class carries the same fields, with the same names and values, as the
model it mirrors, and what the run time calls on the model (``plan()``, ``bindings()``,
``state_path``, the broker's ``credentials()`` and ``tls_context()``, the router's
secrets, a test's ``options``, ``kind``, ``jitter`` and ``links_on``);
``tests/agent/test_runconfig.py`` keeps both equal for the example configs.

The run time (``netmon-agent run`` after the hand-over; ``once`` and the one-process
mode through :func:`from_validated`, the same JSON) runs on these: the runtime, the
scheduler and the methods take them (see benchmarks/agent/README.md, "Memory").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, make_dataclass
from datetime import date, time
from functools import cache
from pathlib import Path
from typing import Any, Literal, Protocol

from netmon.configfile import read_secret
from netmon.mqttclient import BrokerLogin, ReconnectPolicy
from netmon.planlinks import PlanLinks


class Secret:
    """A secret value that never shows in a repr or a log line (pydantic's SecretStr's
    interface: :meth:`get_secret_value`)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        """The secret itself."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class _RouterSecretFields(Protocol):
    @property
    def community(self) -> Any: ...  # SecretStr or Secret
    @property
    def community_file(self) -> Path | None: ...
    @property
    def auth_key_file(self) -> Path | None: ...
    @property
    def priv_key_file(self) -> Path | None: ...


class RouterSecrets:
    """Reading a router source's secrets, shared by the config model
    (:class:`agent.methods.common.router.RouterCounters`) and :class:`Router`."""

    def read_community(self: _RouterSecretFields) -> str:
        """The SNMP community: ``community_file`` by the secret-file rule, else
        ``community``; never logged."""
        secret = read_secret(self.community_file, "router.community_file")
        if secret is not None:
            return secret
        value: str = self.community.get_secret_value()
        return value

    def read_usm_keys(self: _RouterSecretFields) -> tuple[str, str]:
        """The SNMPv3 authentication and privacy passphrases from their files (the
        secret-file rule; RFC 3414 wants 8 characters at least); never logged."""
        keys = []
        for name, path in (("auth_key_file", self.auth_key_file),
                           ("priv_key_file", self.priv_key_file)):
            secret = read_secret(path, f"router.{name}") or ""
            if len(secret) < 8:
                raise ValueError(f"router.{name}: the passphrase is shorter than the 8 "
                                 "characters SNMPv3 requires")
            keys.append(secret)
        return keys[0], keys[1]


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


@dataclass(frozen=True)
class Router(RouterSecrets):
    """``[links.<name>.router]``."""

    source: Literal["snmp", "upnp"]
    host: str | None
    port: int
    community: Secret
    community_file: Path | None
    version: Literal["2c", "3"]
    user: str | None
    auth_protocol: str
    auth_key_file: Path | None
    priv_protocol: str
    priv_key_file: Path | None
    if_index: int | None
    if_name: str | None
    url: str | None
    timeout_s: float
    sample_s: float

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Router:
        """From the handed-over JSON."""
        return cls(**(d | {"community": Secret(d["community"]),
                           **{k: _path(d[k]) for k in ("community_file", "auth_key_file",
                                                       "priv_key_file")}}))


@dataclass(frozen=True)
class Modem:
    """``[links.<name>.modem]``."""

    modem: str
    mmcli: str
    signal_rate_s: int
    timeout_s: float


@dataclass(frozen=True)
class LinkBinding:
    """The link a test runs on and how to pin traffic to it (what the methods see of a
    link: :class:`agent.methods.base.MethodContext`)."""

    name: str
    access: Literal["fixed", "mobile"]
    isp: str
    interface: str | None = None  # SO_BINDTODEVICE / iperf3 --bind-dev
    source_address: str | None = None  # bind() before connect
    router: Router | None = None  # the line's counters at the office router
    modem: Modem | None = None  # ModemManager modem giving radio context


@dataclass(frozen=True)
class Link:
    """``[links.<name>]``."""

    access: Literal["fixed", "mobile"]
    isp: str
    interface: str | None
    source_address: str | None
    budget_mb: float | None
    budget_reserve_pct: float
    router: Router | None
    modem: Modem | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Link:
        """From the handed-over JSON."""
        return cls(**(d | {"router": Router.from_json(d["router"]) if d["router"] else None,
                           "modem": Modem(**d["modem"]) if d["modem"] else None}))


@dataclass(frozen=True)
class Broker(BrokerLogin):
    """``[broker]`` (:class:`agent.config.BrokerConfig`)."""

    host: str
    port: int
    tls: bool
    ca_file: Path | None
    cert_file: Path | None
    key_file: Path | None
    username: str | None
    password_file: Path | None
    keepalive_s: int
    password: Secret | None
    client_id: str | None
    reconnect_min_s: float
    reconnect_max_s: float
    max_inflight: int
    #: The config section, for messages (``broker.password_file: ... empty``).
    section = "broker"

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Broker:
        """From the handed-over JSON."""
        return cls(**(d | {"password": None if d["password"] is None else Secret(d["password"]),
                           **{k: _path(d[k]) for k in ("ca_file", "cert_file", "key_file",
                                                       "password_file")}}))

    def read_password(self) -> str | None:
        """``password`` (environment) as is, else ``password_file`` by the secret-file
        rule; never logged."""
        if self.password is not None:
            return self.password.get_secret_value()
        return read_secret(self.password_file, f"{self.section}.password_file")

    def reconnect_policy(self) -> ReconnectPolicy:
        """Backoff between connection attempts; the publisher runs the attempts itself."""
        return ReconnectPolicy(self.reconnect_min_s, self.reconnect_max_s, automatic=False)


@dataclass(frozen=True)
class Spool:
    """``[spool]``."""

    path: Path
    max_mb: float
    max_results: int
    receipts: bool
    receipt_timeout_s: float
    reconnect_receipt_s: float
    resend_batch: int
    write_delay_s: float
    unusable_exit_s: float


@dataclass(frozen=True)
class Clock:
    """``[clock]``."""

    policy: Literal["flag", "hold"]
    not_before: date


@dataclass(frozen=True)
class Schedule:
    """``[schedule]``."""

    timezone: str
    peak_start: time
    peak_end: time


@dataclass(frozen=True)
class RemoteConfig:
    """``[remote_config]``."""

    public_keys: tuple[Path, ...]
    allowed_targets: tuple[str, ...]
    state_file: Path

    @property
    def enabled(self) -> bool:
        """True when at least one NOC key is configured."""
        return bool(self.public_keys)


@dataclass(frozen=True)
class Update:
    """``[update]``."""

    root: Path | None
    link: str | None
    max_starts: int
    download_timeout_s: float
    budget_retry_s: float
    budget_wait_days: float


@dataclass(frozen=True)
class Enrollment:
    """``[enrollment]`` (the start stage enrols; the run time only reports it)."""

    claim_file: Path | None
    username: str
    password_file: Path | None
    port: int
    state_dir: Path
    retry_after_rejection_s: float


@cache
def _options_class(method: str, names: tuple[str, ...]) -> type:
    # One frozen dataclass per method and set of option names, made from the handed-over
    # JSON (the models that declare them are not loaded here).
    cls: type = make_dataclass(f"{method.title().replace('_', '')}Options",
                               [(n, Any) for n in names], frozen=True)
    return cls


@dataclass(frozen=True)
class Spec:
    """One ``[tests.<name>]`` table (:class:`netmon.plan.TestSpec`): scheduling keys,
    the method's kind, and its validated options (every option, defaults included)."""

    method: str
    every_s: float
    jitter_s: float | None
    links: tuple[str, ...] | None
    enabled: bool
    expected_mb: float | None
    defer_when_busy_mbps: float | None
    defer_s: float
    defer_max: int
    kind: Literal["throughput", "latency", "check"]
    options: Any

    @classmethod
    def from_json(cls, d: dict[str, Any], kind: str, options: dict[str, Any]) -> Spec:
        """From the handed-over JSON: the test's table (its option keys ignored: they
        come whole in ``options``), the method's kind and options."""
        names = tuple(options)
        return cls(method=d["method"], every_s=d["every_s"], jitter_s=d["jitter_s"],
                   links=None if d["links"] is None else tuple(d["links"]),
                   enabled=d["enabled"], expected_mb=d["expected_mb"],
                   defer_when_busy_mbps=d["defer_when_busy_mbps"], defer_s=d["defer_s"],
                   defer_max=d["defer_max"], kind=kind,  # type: ignore[arg-type]
                   options=_options_class(d["method"], names)(**options))

    @property
    def jitter(self) -> float:
        """The effective jitter in seconds."""
        return self.jitter_s if self.jitter_s is not None else min(self.every_s / 10, 300.0)

    def links_on(self, all_links: list[str]) -> list[str]:
        """The link names this test runs on."""
        return list(self.links) if self.links is not None else list(all_links)


@dataclass(frozen=True)
class Plan(PlanLinks):
    """What to measure (:class:`netmon.plan.TestPlan`)."""

    tests: Mapping[str, Spec] = field(default_factory=dict)
    budgets_mb: Mapping[str, float] = field(default_factory=dict)

    def raw(self) -> dict[str, Any]:
        """The plan as a raw ``[tests]`` document: each test's ``method`` and every
        option, defaults included (what the remote-config rules read)."""
        return {"tests": {name: {"method": spec.method, **asdict(spec.options)}
                          for name, spec in self.tests.items()}}


def plan_from_json(value: dict[str, Any]) -> Plan:
    """A plan validated in the child process (:func:`agent.validate_child.validate`)."""
    return Plan(tests={name: Spec.from_json(t["config"], t["kind"], t["options"])
                       for name, t in value["tests"].items()},
                budgets_mb=dict(value["budgets_mb"]))


@dataclass(frozen=True)
class RunConfig:
    """The whole agent configuration (:class:`agent.config.AgentConfig`)."""

    probe_id: str
    topic_prefix: str
    heartbeat_s: float
    state_dir: Path | None
    broker: Broker
    spool: Spool
    clock: Clock
    schedule: Schedule
    links: Mapping[str, Link]
    tests: Mapping[str, Spec]
    remote_config: RemoteConfig
    update: Update
    enrollment: Enrollment

    def plan(self) -> Plan:
        """The file's test plan: its tests and the links' budgets."""
        return Plan(tests=self.tests, budgets_mb={
            name: link.budget_mb for name, link in self.links.items()
            if link.budget_mb is not None})

    @property
    def state_path(self) -> Path:
        """The runtime state file read by ``netmon-agent status``."""
        base = self.state_dir or self.spool.path.parent
        return base / "agent-state.json"

    def bindings(self) -> dict[str, LinkBinding]:
        """Method-facing link views by name."""
        return {name: LinkBinding(name=name, access=link.access, isp=link.isp,
                                  interface=link.interface,
                                  source_address=link.source_address, router=link.router,
                                  modem=link.modem)
                for name, link in self.links.items()}


def from_handoff(doc: dict[str, Any]) -> RunConfig:
    """The run-time config from the start stage's JSON (:func:`agent.handoff.read_fd`):
    ``config`` (the validated config) and ``tests`` (each test's kind and options)."""
    c = doc["config"]
    runtime_tests = doc["tests"]
    spool = c["spool"]
    clock = c["clock"]
    schedule = c["schedule"]
    remote = c["remote_config"]
    update = c["update"]
    enrol = c["enrollment"]
    return RunConfig(
        probe_id=c["probe_id"], topic_prefix=c["topic_prefix"], heartbeat_s=c["heartbeat_s"],
        state_dir=_path(c["state_dir"]), broker=Broker.from_json(c["broker"]),
        spool=Spool(**(spool | {"path": Path(spool["path"])})),
        clock=Clock(policy=clock["policy"], not_before=date.fromisoformat(clock["not_before"])),
        schedule=Schedule(timezone=schedule["timezone"],
                          peak_start=time.fromisoformat(schedule["peak_start"]),
                          peak_end=time.fromisoformat(schedule["peak_end"])),
        links={name: Link.from_json(d) for name, d in c["links"].items()},
        tests={name: Spec.from_json(d, runtime_tests[name]["kind"],
                                    runtime_tests[name]["options"])
               for name, d in c["tests"].items()},
        remote_config=RemoteConfig(public_keys=tuple(Path(p) for p in remote["public_keys"]),
                                   allowed_targets=tuple(remote["allowed_targets"]),
                                   state_file=Path(remote["state_file"])),
        update=Update(**(update | {"root": _path(update["root"])})),
        enrollment=Enrollment(**(enrol | {
            "claim_file": _path(enrol["claim_file"]),
            "password_file": _path(enrol["password_file"]),
            "state_dir": Path(enrol["state_dir"])})))


def from_validated(cfg: Any) -> RunConfig:
    """The run-time config of a config validated in this process
    (:class:`agent.config.AgentConfig`: ``once``, ``NETMON_AGENT_ONE_PROCESS=1``, tests),
    made through the JSON the start stage hands over, so the run time has one path."""
    from agent.handoff import encode

    return from_handoff(json.loads(encode(cfg)))


def plan_from_validated(plan: Any) -> Plan:
    """The run time's plan of a validated :class:`netmon.plan.TestPlan`, made through the
    JSON the validation child writes (:func:`agent.validate_child.plan_json`)."""
    from agent.validate_child import plan_json

    return plan_from_json(json.loads(json.dumps(plan_json(plan))))
