"""The agent's configuration: one TOML file plus ``NETMON_`` environment overrides.

Two layers, so the test plan can also arrive over MQTT (signed remote config, issue 10):

* :class:`AgentConfig` — the probe's own settings: identity, links, broker, spool, clock.
  Only the file (and environment) can set these.
* :class:`TestPlan` — what to measure and how often (``tests``) plus per-link monthly
  data budgets (``budgets``). It comes from the file's ``[tests.<name>]`` tables and
  ``budget_mb`` keys of the links, or from a remote plan validated with the same model;
  :meth:`TestPlan.problems` checks it against the probe's links.

Every ``[tests.<name>]`` table has scheduling keys (see :class:`TestSpec`) and the
method's own options, validated by ``agent.methods.get(method).Options``.
See ``docs/agent.md`` for the reference and ``examples/agent.toml`` for a commune probe.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import date, time
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings

from agent import methods
from agent.methods.base import Kind, LinkBinding, MethodOptions
from agent.remote_config import RemoteConfigSettings
from netmon.contract import DEFAULT_PREFIX, LINK_NAME_PATTERN, PROBE_ID_PATTERN, Access
from netmon.mqtt import BrokerSettings, ReconnectPolicy
from netmon.settings import ConfigError, describe_errors, load_settings

TestName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
LinkName = Annotated[str, StringConstraints(pattern=LINK_NAME_PATTERN)]
MB = 1_000_000

#: Keys of a ``[tests.<name>]`` table that belong to the scheduler, not to the method.
SCHEDULE_KEYS = frozenset({"method", "every_s", "jitter_s", "links", "enabled",
                           "expected_mb", "defer_when_busy_mbps", "defer_s", "defer_max"})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- links


class LinkConfig(_Section):
    """One access link of the probe (``[links.<name>]``)."""

    access: Access = Field(description="fixed (fibre, DSL, cable) or mobile (3G/4G/5G)")
    isp: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    interface: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,15}$")] | None = \
        Field(None, description="network interface tests bind to (SO_BINDTODEVICE)")
    source_address: str | None = Field(None, description="local address tests bind to")
    budget_mb: float | None = Field(
        None, gt=0, description="monthly data budget in MB (10^6 bytes) for a metered link")
    budget_reserve_pct: float = Field(
        5.0, ge=0, lt=100,
        description="share of the budget kept for latency tests: throughput tests stop "
                    "when only this much is left")

    @field_validator("source_address")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_address(value)  # ValueError names the bad address
        return value

    def binding(self, name: str) -> LinkBinding:
        """The method-facing view of this link."""
        return LinkBinding(name=name, access=self.access, isp=self.isp,
                           interface=self.interface, source_address=self.source_address)


# --------------------------------------------------------------------------- tests


class TestSpec(BaseModel):
    """One ``[tests.<name>]`` table: scheduling keys plus the method's own options.

    Unknown keys are passed to the method's ``Options`` model, which rejects the ones it
    does not know, so a typo is still named.
    """

    __test__ = False  # not a pytest class, despite the name
    model_config = ConfigDict(extra="allow", frozen=True)

    method: str = Field(description="a method registered in agent.methods.REGISTRY")
    # Not ``interval_s``: latency methods use that name for the gap between probes.
    every_s: float = Field(3600.0, ge=1, le=31 * 86400,
                           description="mean time between two runs on one link")
    jitter_s: float | None = Field(
        None, ge=0, description="each run moves by a random amount in [-jitter, +jitter]; "
                                "default a tenth of the interval, at most 5 minutes")
    links: tuple[LinkName, ...] | None = Field(
        None, min_length=1, description="links it runs on (default: every link)")
    enabled: bool = True
    expected_mb: float | None = Field(
        None, gt=0, description="data one run moves, used for the budget until past "
                                "results give a measured figure")

    defer_when_busy_mbps: float | None = Field(
        None, gt=0, description="throughput tests only: when the link's interface already "
                                "carries more than this (users' traffic), postpone the test")
    defer_s: float = Field(300.0, ge=1, le=86400, description="how long to postpone")
    defer_max: int = Field(3, ge=0, le=100,
                           description="postpone at most this many times in a row, then run")

    _options: MethodOptions = PrivateAttr()

    @model_validator(mode="wrap")
    @classmethod
    def _known_method_wrap(cls, data: Any, handler: Any) -> Any:
        # KeyError from methods.get is not a ValueError; turn it into one so pydantic
        # reports it under ``tests.<name>.method`` with the list of known methods.
        if isinstance(data, dict) and isinstance(data.get("method"), str):
            try:
                methods.get(data["method"])
            except KeyError as exc:
                raise ValueError(f"method: {exc.args[0]}") from None
        return handler(data)

    @model_validator(mode="after")
    def _options_valid(self) -> TestSpec:
        if self.jitter_s is not None and self.jitter_s > self.every_s / 2:
            raise ValueError(f"jitter_s ({self.jitter_s:g}) must be at most half of "
                             f"every_s ({self.every_s:g})")
        plugin = methods.get(self.method)
        try:
            self._options = plugin.Options.model_validate(self.model_extra or {})
        except ValidationError as exc:
            # One "option: why" per line; load() turns them into tests.<name>.<option>.
            raise ValueError("\n".join(
                p.replace(": Value error, ", ": ") for p in describe_errors(exc))) from None
        return self

    @property
    def options(self) -> MethodOptions:
        """The method's validated options."""
        return self._options

    @property
    def kind(self) -> Kind:
        """``throughput`` or ``latency``, from the method."""
        return methods.get(self.method).kind

    @property
    def jitter(self) -> float:
        """The effective jitter in seconds."""
        return self.jitter_s if self.jitter_s is not None else min(self.every_s / 10, 300.0)

    def links_on(self, all_links: list[str]) -> list[str]:
        """The link names this test runs on."""
        return list(self.links) if self.links is not None else list(all_links)


class TestPlan(BaseModel):
    """What to measure: the tests and the monthly data budgets (MB) per link.

    The same model validates the file's tests and a remote plan; check it against the
    probe's links with :meth:`problems` before applying it.
    """

    __test__ = False
    model_config = ConfigDict(extra="forbid", frozen=True)

    tests: dict[TestName, TestSpec] = Field(default_factory=dict)
    budgets_mb: dict[LinkName, float] = Field(
        default_factory=dict, description="monthly data budget (MB) per metered link")

    @field_validator("budgets_mb")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        for link, mb in value.items():
            if mb <= 0:
                raise ValueError(f"budget of link {link!r} must be > 0 MB (got {mb!r})")
        return value

    def problems(self, links: dict[str, LinkConfig]) -> list[str]:
        """``key: why`` for each reference to a link the probe does not have."""
        out = []
        known = ", ".join(sorted(links)) or "(none)"
        for name, spec in self.tests.items():
            for link in spec.links or ():
                if link not in links:
                    out.append(f"tests.{name}.links: unknown link {link!r} (known: {known})")
        for link in self.budgets_mb:
            if link not in links:
                out.append(f"budgets_mb.{link}: unknown link {link!r} (known: {known})")
        return out

    def budget_bytes(self, link: str) -> int | None:
        """The monthly budget of ``link`` in bytes, or None when unmetered."""
        mb = self.budgets_mb.get(link)
        return int(mb * MB) if mb is not None else None


# --------------------------------------------------------------------------- broker etc.


class BrokerConfig(BrokerSettings):
    """``[broker]``: where results go.

    The connection keys (``host``, ``port``, ``tls``, ``ca_file``, ``cert_file``,
    ``key_file``, ``username``, ``password_file``, ``keepalive_s``) and the file checks
    are :class:`netmon.mqtt.BrokerSettings`'; this adds the probe's own.
    """

    section: ClassVar[str] = "broker"

    username: str | None = Field(None, description="default: the probe id")
    password: SecretStr | None = Field(
        None, description="prefer password_file; for NETMON_BROKER__PASSWORD only")
    client_id: str | None = Field(None, description="default: the probe id")
    reconnect_min_s: float = Field(1.0, gt=0, le=3600)
    reconnect_max_s: float = Field(300.0, gt=0, le=86400)
    max_inflight: int = Field(100, ge=1, le=65535)

    @model_validator(mode="after")
    def _consistent(self) -> BrokerConfig:
        # Stricter than the collector: a probe's client certificate is two files.
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        if self.password is not None and self.password_file is not None:
            raise ValueError("set password_file or password, not both")
        return self

    def read_password(self) -> str | None:
        """The password: ``password`` (environment) as is, else the file by the secret-file
        rule (:func:`netmon.settings.read_secret`); never logged."""
        if self.password is not None:
            return self.password.get_secret_value()
        return super().read_password()

    def reconnect_policy(self) -> ReconnectPolicy:
        """Backoff between connection attempts; the publisher runs the attempts itself."""
        return ReconnectPolicy(self.reconnect_min_s, self.reconnect_max_s, automatic=False)


class SpoolConfig(_Section):
    """``[spool]``: the durable on-disk queue of results not yet acknowledged."""

    path: Path = Field(Path("/var/lib/netmon-agent/spool.db"))
    max_mb: float = Field(64.0, gt=0, description="payload bytes kept at most (MB)")
    max_results: int = Field(200_000, ge=10, description="results kept at most")


class ClockConfig(_Section):
    """``[clock]``: what to do while the system clock is not synchronised."""

    policy: Literal["flag", "hold"] = Field(
        "flag", description="flag: run tests, mark results clock_unsynced; "
                            "hold: run no test until the clock is synchronised")
    not_before: date = Field(date(2025, 1, 1),
                             description="a clock before this date is wrong: never run tests")


class ScheduleConfig(_Section):
    """``[schedule]``: scheduler-wide settings."""

    timezone: str = "Asia/Ho_Chi_Minh"
    peak_start: time = time(19, 0)
    peak_end: time = time(23, 0)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


class AgentConfig(BaseSettings):
    """The whole agent configuration file."""

    probe_id: Annotated[str, StringConstraints(pattern=PROBE_ID_PATTERN)]
    topic_prefix: str = Field(DEFAULT_PREFIX, pattern=r"^[A-Za-z0-9_./-]{1,100}$")
    heartbeat_s: float = Field(300.0, ge=5, le=3600)
    state_dir: Path | None = Field(
        None, description="where `status` finds the runtime's state (default: spool dir)")
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    clock: ClockConfig = Field(default_factory=ClockConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    links: dict[LinkName, LinkConfig] = Field(min_length=1)
    tests: dict[TestName, TestSpec] = Field(default_factory=dict)
    remote_config: RemoteConfigSettings = Field(
        default_factory=RemoteConfigSettings,
        description="signed test plans from the NOC over MQTT (agent/remote_config.py)")

    def plan(self) -> TestPlan:
        """The file's test plan: its tests and the links' budgets."""
        return TestPlan(tests=self.tests, budgets_mb={
            name: link.budget_mb for name, link in self.links.items()
            if link.budget_mb is not None})

    def bindings(self) -> dict[str, LinkBinding]:
        """Method-facing link views by name."""
        return {name: link.binding(name) for name, link in self.links.items()}

    @property
    def state_path(self) -> Path:
        """The runtime state file read by ``netmon-agent status``."""
        base = self.state_dir or self.spool.path.parent
        return base / "agent-state.json"


def load(path: Path | None, data: dict[str, Any] | None = None,
         check_files: bool = True) -> AgentConfig:
    """Load and validate the agent config; ConfigError names every bad key."""
    try:
        cfg = load_settings(AgentConfig, path, data=data)
    except ConfigError as exc:
        raise ConfigError(path, _flatten(exc.problems)) from None
    problems = cfg.plan().problems(cfg.links)
    if check_files:
        problems += cfg.broker.file_problems()
        remote_files = getattr(cfg.remote_config, "file_problems", None)
        if remote_files is not None:
            problems += remote_files()
    if problems:
        raise ConfigError(path, problems)
    return cfg


def _flatten(problems: list[str]) -> list[str]:
    # "tests.x: Value error, target: why\ncount: why" -> "tests.x.target: why", ...
    out = []
    for problem in problems:
        head, sep, rest = problem.partition(": Value error, ")
        if not sep:
            out.append(problem)
            continue
        for line in rest.split("\n"):
            key, sep2, why = line.partition(": ")
            if sep2 and re.fullmatch(r"[A-Za-z0-9_.\[\]]+", key):
                out.append(f"{head}.{key}: {why}")
            else:
                out.append(f"{head}: {line}")
    return out
