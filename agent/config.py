"""The agent's configuration: one TOML file plus ``NETMON_`` environment overrides.

Two layers, so the test plan can also arrive over MQTT (signed remote config, issue 10):

* :class:`AgentConfig` — the probe's own settings: identity, links, broker, spool, clock.
  Only the file (and environment) can set these.
* :class:`netmon.plan.TestPlan` — what to measure and how often (``tests``) plus per-link
  monthly data budgets (``budgets``). It comes from the file's ``[tests.<name>]`` tables
  and ``budget_mb`` keys of the links (:meth:`AgentConfig.plan`), or from a remote plan
  validated with the same model; :meth:`TestPlan.problems` checks it against the links.
  It lives in the core because the NOC tools validate plans with it too.

Every ``[tests.<name>]`` table has scheduling keys (see :class:`netmon.plan.TestSpec`)
and the method's own options, validated by the options model declared in
:mod:`netmon.methods`.
See ``docs/agent.md`` for the reference and ``examples/agent.toml`` for a commune probe.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import re
from datetime import date, time
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings

from agent.allowlist import allowlist_entry
from agent.methods.base import LinkBinding
from agent.runconfig import RouterSecrets
from netmon.contract import (
    DEFAULT_PREFIX,
    LINK_NAME_PATTERN,
    PROBE_ID_PATTERN,
    Access,
    TopicPrefix,
)
from netmon.mqtt import BrokerSettings, ReconnectPolicy
from netmon.plan import TestName, TestPlan, TestSpec
from netmon.settings import ConfigError, load_settings, read_toml, writable_path_problem

LinkName = Annotated[str, StringConstraints(pattern=LINK_NAME_PATTERN)]


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
    router: RouterCounters | None = Field(
        None, description="read the line's counters at the office router (SNMP or UPnP "
                          "IGD) for busy-line deferral and cross-traffic")
    modem: ModemConfig | None = Field(
        None, description="a ModemManager modem: its radio context (access technology, "
                          "signal, band, operator, cell) goes with each throughput result")

    @field_validator("source_address")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_address(value)  # ValueError names the bad address
        return value

    def binding(self, name: str) -> LinkBinding:
        """The method-facing view of this link (the run time's plain router and modem
        configuration, made from the same JSON the start stage hands over)."""
        from agent.handoff import plain
        from agent.runconfig import Modem, Router

        return LinkBinding(name=name, access=self.access, isp=self.isp,
                           interface=self.interface, source_address=self.source_address,
                           router=None if self.router is None else
                           Router.from_json(plain(self.router.model_dump())),
                           modem=None if self.modem is None else
                           Modem(**self.modem.model_dump()))


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
    receipts: bool = Field(
        True, description="keep a result after the broker's PUBACK until the collector's "
                          "receipt names it; false: delete on PUBACK (a collector that "
                          "sends no receipts)")
    receipt_timeout_s: float = Field(
        900.0, ge=1, le=7 * 86400,
        description="a result acknowledged by the broker but not receipted this long is "
                    "published again")
    reconnect_receipt_s: float = Field(
        60.0, ge=1, le=7 * 86400,
        description="once a broker connection has been up this long, a result sent on an "
                    "earlier connection (or by an earlier run) and still not receipted is "
                    "published again: the clean session lost the receipts sent while the "
                    "agent was away (at most receipt_timeout_s)")
    resend_batch: int = Field(
        500, ge=1, le=100_000,
        description="at most this many overdue results are published again per round")
    write_delay_s: float = Field(
        30.0, ge=0, le=3600,
        description="while connected, a result waits in memory this long for its receipt "
                    "before it is written to the spool (SD-card writes); 0: every result is "
                    "written before it is published")
    unusable_exit_s: float = Field(
        600.0, ge=1, le=7 * 86400,
        description="exit 1 (systemd restarts the agent) when no result could be stored "
                    "in the spool for this long")


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


# --------------------------------------------------------------------------- fleet


class RemoteConfigSettings(_Section):
    """``[remote_config]``: signed test plans from the NOC (:mod:`agent.remote_config`;
    provisioned by Ansible). Remote configuration is off while ``public_keys`` is empty.
    """

    public_keys: list[Path] = Field(
        default_factory=list,
        description="NOC Ed25519 public key files (PEM); two during a key rotation")
    allowed_targets: list[str] = Field(
        default_factory=list,
        description="hosts a remote plan may test: names, *.suffix, IPs or CIDRs; the "
                    "file config's own test targets are always allowed")
    state_file: Path = Field(
        Path("remote-config.json"),
        description="where the last applied signed config is kept (relative: under the "
                    "agent's state directory)")

    @field_validator("allowed_targets")
    @classmethod
    def _check_allowlist(cls, entries: list[str]) -> list[str]:
        return [allowlist_entry(entry) for entry in entries]

    @property
    def enabled(self) -> bool:
        """True when at least one NOC key is configured."""
        return bool(self.public_keys)

    def file_problems(self) -> list[str]:
        """``remote_config.public_keys[i]: why`` for each key file that cannot be used."""
        if not self.public_keys:
            return []  # remote configuration off: nothing to load
        from netmon.sigcheck import SigningError, load_public_key

        out = []
        for i, path in enumerate(self.public_keys):
            try:
                load_public_key(path)
            except SigningError as exc:
                out.append(f"remote_config.public_keys[{i}]: {exc.detail}")
        return out


class UpdateSettings(_Section):
    """``[update]``: signed agent updates with rollback (:mod:`agent.update`). Updates
    are off while ``root`` is unset."""

    root: Path | None = Field(None, description="where versions live (see agent/update.py)")
    link: str | None = Field(
        None, description="the link the download goes over: its data budget counts it "
                          "(default: the first link)")
    max_starts: int = Field(3, ge=1, le=100,
                            description="starts of a new version before it is rolled back")
    download_timeout_s: float = Field(300.0, ge=5, le=86400)
    budget_retry_s: float = Field(
        3600.0, ge=1, le=86400,
        description="how often a release refused for the data budget is checked again "
                    "(also at the start of the budget month)")
    budget_wait_days: float = Field(
        62.0, ge=1, le=366,
        description="how long such a release is checked again by itself; afterwards only "
                    "a reconnect (the retained manifest redelivered) tries it")


class EnrollmentSettings(_Section):
    """``[enrollment]``: zero-touch enrollment of a blank probe (:mod:`agent.enroll`; in
    the probe image). Enrollment is off while ``claim_file`` is unset."""

    claim_file: Path | None = Field(
        None, description="the one-time claim code printed on the probe's label")
    username: str = Field("netmon_enroll", min_length=1,
                          description="the shared enrollment account")
    password_file: Path | None = Field(None, description="its password (in the image)")
    port: int = Field(8885, ge=1, le=65535, description="the broker's enrollment listener")
    state_dir: Path = Field(Path("/var/lib/netmon-agent/enrollment"),
                            description="key pair, request, identity and credentials")
    retry_after_rejection_s: float = Field(3600.0, ge=1, le=30 * 86400)

    @property
    def enabled(self) -> bool:
        """True when this probe may enrol itself."""
        return self.claim_file is not None

    @property
    def identity_path(self) -> Path:
        """Written once enrolled."""
        return self.state_dir / IDENTITY_FILE

    def file_problems(self) -> list[str]:
        """Missing files, named with their key."""
        out = []
        for key in ("claim_file", "password_file"):
            path = getattr(self, key)
            if path is not None and not path.is_file():
                out.append(f"enrollment.{key}: no such file {str(path)!r}")
        if self.enabled and self.password_file is None:
            out.append("enrollment.password_file: needed with claim_file (the enrollment "
                       "account's password)")
        return out


class AgentConfig(BaseSettings):
    """The whole agent configuration file."""

    probe_id: Annotated[str, StringConstraints(pattern=PROBE_ID_PATTERN)]
    topic_prefix: TopicPrefix = DEFAULT_PREFIX
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
    update: UpdateSettings = Field(
        default_factory=UpdateSettings,
        description="signed agent updates with rollback (agent/update.py)")
    enrollment: EnrollmentSettings = Field(
        default_factory=EnrollmentSettings,
        description="zero-touch enrollment of a blank probe (agent/enroll.py)")

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
    """Load and validate the agent config; ConfigError names every bad key.

    An enrolled probe's identity (``[enrollment] state_dir``/identity.json: probe id,
    broker username and password file) fills those keys when the file leaves them out.
    """
    if data is None and path is not None:
        data = with_identity(read_toml(path))
    try:
        cfg = load_settings(AgentConfig, path, data=data)
    except ConfigError as exc:
        raise ConfigError(path, _flatten(exc.problems)) from None
    problems = cfg.plan().problems(cfg.links)
    if check_files:
        problems += preflight(cfg)
        problems += cfg.broker.file_problems()
        for name, link in cfg.links.items():
            if link.router is not None:
                problems += link.router.problems(f"links.{name}.router")
        remote_files = getattr(cfg.remote_config, "file_problems", None)
        if remote_files is not None:
            problems += remote_files()
        if cfg.enrollment.enabled and cfg.probe_id == NOT_ENROLLED:
            problems += cfg.enrollment.file_problems()
            if not cfg.remote_config.public_keys:
                problems.append("enrollment: needs remote_config.public_keys (the NOC key "
                                "that signs the answer)")
    if problems:
        raise ConfigError(path, problems)
    return cfg


def from_handoff(doc: dict[str, Any]) -> AgentConfig:
    """The config :func:`load` validated, from what the start stage handed over
    (:func:`agent.handoff.read_fd`); its files were checked there."""
    from pydantic import ValidationError

    from agent.handoff import HandoffError

    try:
        return AgentConfig.model_validate(doc["config"])
    except ValidationError as exc:  # a start stage of another version
        # Locations and reasons only: pydantic's text quotes the input, secrets included.
        where = "; ".join(".".join(map(str, e["loc"])) + ": " + e["msg"]
                          for e in exc.errors(include_input=False))
        raise HandoffError(f"the handed-over config is not valid here: {where}") from None


#: Written in ``[enrollment] state_dir`` once the probe is enrolled (:mod:`agent.enroll`).
IDENTITY_FILE = "identity.json"


def identity_overlay(settings: EnrollmentSettings) -> dict[str, Any] | None:
    """Config keys the enrolled identity sets (``probe_id``, ``broker.username``,
    ``broker.password_file``), or None before enrollment."""
    try:
        data = json.loads(settings.identity_path.read_text())
        return {"probe_id": str(data["probe_id"]),
                "broker": {"username": str(data["username"]),
                           "password_file": str(data["password_file"])}}
    except (OSError, ValueError, KeyError, TypeError):
        return None


#: The probe id a blank probe's config is checked under until it is enrolled.
NOT_ENROLLED = "not-enrolled"


def with_identity(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the enrolled identity's keys added where the file has none."""
    section = data.get("enrollment")
    if not isinstance(section, dict):
        return data
    try:
        settings = EnrollmentSettings.model_validate(section)
    except ValueError:  # reported with every other problem by the full validation
        return data
    overlay = identity_overlay(settings)
    if overlay is None:
        if settings.enabled and "probe_id" not in data:
            # A blank probe: `run` enrols it first; meanwhile the rest of the file is
            # checked under a placeholder id (check-config runs before every start).
            return dict(data) | {"probe_id": NOT_ENROLLED}
        return data
    out = dict(data)
    out.setdefault("probe_id", overlay["probe_id"])
    broker = dict(out.get("broker") or {})
    for key, value in overlay["broker"].items():
        broker.setdefault(key, value)
    out["broker"] = broker
    return out


def preflight(cfg: AgentConfig) -> list[str]:
    """What ``run`` needs of the machine that validation alone cannot see: the spool and
    state paths can be created and written. Empty when all is well."""
    problems = [writable_path_problem("spool.path", cfg.spool.path)]
    if cfg.state_dir is not None:
        problems.append(writable_path_problem("state_dir", cfg.state_dir, "dir"))
    return [p for p in problems if p]


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


# --------------------------------------------------------------------------- link devices
# (validation only: the run time reads them as agent.runconfig.Router / Modem)


#: The Python modules each router counter source needs (the ``router`` extra installs them).
ROUTER_NEEDS: dict[str, str] = {"snmp": "pysnmp", "upnp": "async_upnp_client"}


class ModemConfig(BaseModel):
    """``[links.<name>.modem]``: read radio context from ModemManager for this link."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    modem: str = Field("any", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9/_.-]+$",
                       description="mmcli -m argument: index, D-Bus path, or 'any'")
    mmcli: str = Field("mmcli", min_length=1, max_length=500,
                       description="the mmcli executable")
    signal_rate_s: int = Field(10, ge=1, le=3600,
                               description="--signal-setup rate when polling is off")
    timeout_s: float = Field(5.0, gt=0, le=60, description="one mmcli call's time limit")


class RouterCounters(RouterSecrets, BaseModel):
    """``[links.<name>.router]``: where the line's real counters are read (its secrets by
    :class:`agent.runconfig.RouterSecrets`, shared with the run time's config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["snmp", "upnp"] = Field(description="SNMP IF-MIB or UPnP IGD")
    # SNMP
    host: str | None = Field(None, min_length=1, max_length=253,
                             description="snmp: the router's address")
    port: int = Field(161, ge=1, le=65535, description="snmp: UDP port")
    community: SecretStr = Field(SecretStr("public"),
                                 description="snmp v2c community (prefer community_file)")
    community_file: Path | None = Field(None, description="snmp: file holding the community")
    version: Literal["2c", "3"] = Field(
        "2c", description='snmp: "2c" (community) or "3" (USM user, authPriv)')
    user: str | None = Field(None, min_length=1, max_length=32,
                             description="snmp v3: the USM user name")
    auth_protocol: Literal["md5", "sha", "sha224", "sha256", "sha384", "sha512"] = Field(
        "sha256", description="snmp v3: authentication protocol (HMAC)")
    auth_key_file: Path | None = Field(
        None, description="snmp v3: file holding the authentication passphrase (8+ chars)")
    priv_protocol: Literal["aes", "aes192", "aes256"] = Field(
        "aes", description="snmp v3: privacy protocol (AES-128 CFB, or 192/256)")
    priv_key_file: Path | None = Field(
        None, description="snmp v3: file holding the privacy passphrase (8+ chars)")
    if_index: int | None = Field(None, ge=1, le=2**31 - 1,
                                 description="snmp: ifIndex of the WAN interface")
    if_name: str | None = Field(None, min_length=1, max_length=64,
                                description="snmp: ifName (or ifDescr) of the WAN interface")
    # UPnP
    url: str | None = Field(None, min_length=1, max_length=500,
                            description="upnp: the IGD's description URL (rootDesc.xml)")
    timeout_s: float = Field(2.0, gt=0, le=30, description="one query's time limit")
    sample_s: float = Field(
        7.0, ge=1, le=120,
        description="busy-line check: watch the counters this long (longer than two of the "
                    "router's counter refreshes: snmpd refreshes every 3 s)")

    @field_validator("version", mode="before")
    @classmethod
    def _version_number(cls, value: object) -> object:
        # `version = 3` in TOML is as natural as `version = "3"`.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _complete(self) -> RouterCounters:
        v3_keys = ("user", "auth_key_file", "priv_key_file")
        if self.source == "snmp":
            if self.host is None:
                raise ValueError('host: required when source = "snmp"')
            if (self.if_index is None) == (self.if_name is None):
                raise ValueError('if_index: set exactly one of if_index or if_name for '
                                 'source = "snmp"')
            if self.url is not None:
                raise ValueError('url: only for source = "upnp"')
            if self.version == "3":
                for key in v3_keys:
                    if getattr(self, key) is None:
                        raise ValueError(f'{key}: required when version = "3" (SNMPv3 '
                                         "runs authPriv: a user, an authentication and a "
                                         "privacy passphrase file)")
                if self.community_file is not None:
                    raise ValueError('community_file: only for version = "2c"')
            else:
                for key in v3_keys:
                    if getattr(self, key) is not None:
                        raise ValueError(f'{key}: only for version = "3"')
        else:
            if self.url is None:
                raise ValueError('url: required when source = "upnp" (the IGD\'s '
                                 "description URL, e.g. http://192.168.1.1:5000/rootDesc.xml)")
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("url: must be an http:// URL of the IGD's description")
            for key in ("host", "if_index", "if_name", "community_file", *v3_keys):
                if getattr(self, key) is not None:
                    raise ValueError(f'{key}: only for source = "snmp"')
        return self

    def problems(self, key: str) -> list[str]:
        """What stops this source from running on this machine (the extra not installed,
        an unreadable community file); ``key`` names the table in the messages."""
        out = []
        module = ROUTER_NEEDS[self.source]
        if importlib.util.find_spec(module) is None:
            out.append(f"{key}.source: {self.source} needs the '{module}' module: install "
                       "the agent with the router extra (pip install 'hatinh-netmon[agent,"
                       "router]')")
        if self.community_file is not None:
            try:
                self.read_community()
            except Exception as exc:  # SecretFileError names the file and why
                out.append(f"{key}.community_file: {exc}")
        if self.source == "snmp" and self.version == "3":
            try:
                self.read_usm_keys()
            except Exception as exc:  # names the file (key prefix "router.") and why
                out.append(f"{key}.{str(exc).removeprefix('router.')}")
        return out
