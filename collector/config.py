"""The collector's configuration (TOML + ``NETMON_`` environment overrides).

One file configures ingest, InfluxDB, the site registry, dead letters, the targets the
dashboards and bulletin compare with, and the bulletin. Load with :func:`load`.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings

from netmon.contract import DEFAULT_PREFIX, TopicPrefix
from netmon.mqtt import BrokerSettings, ReconnectPolicy
from netmon.settings import ConfigError, load_settings, url_problem, writable_path_problem

if TYPE_CHECKING:
    from collector.core.registry import Registry
    from collector.core.units import UnitMap


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MqttSettings(BrokerSettings):
    """Broker connection and subscription.

    The connection keys (``host``, ``port``, ``tls``, ``ca_file``, ``cert_file``,
    ``key_file``, ``username``, ``password_file``, ``keepalive_s``) are
    :class:`netmon.mqtt.BrokerSettings`'; this adds the subscription's own.
    """

    # "_": no probe account can have this id (docs/security.md, "Sessions").
    client_id: str = Field("netmon_collector", min_length=1, max_length=64)
    topic_prefix: TopicPrefix = DEFAULT_PREFIX
    #: ``$share/<group>/...`` subscriptions so several collectors split the load.
    shared_group: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    session_expiry_s: int = Field(7 * 86400, ge=0)
    keepalive_s: int = Field(30, ge=5, le=3600)
    #: Unacknowledged messages the broker may have in flight to us (MQTT v5 Receive
    #: Maximum): bounds memory while InfluxDB is down and caps the batch size.
    receive_maximum: int = Field(10000, ge=1, le=65535)
    #: Collector processes on this machine, splitting the load through a shared
    #: subscription (``shared_group``, default "netmon-collectors"); process 0 keeps
    #: ``client_id``, process i uses ``<client_id>-<i>``.
    workers: int = Field(1, ge=1, le=64)

    def reconnect_policy(self) -> ReconnectPolicy:
        """paho's own reconnect loop, 1 s doubling to 30 s: the session and the messages
        queued for us wait on the broker meanwhile (clean_start=False)."""
        return ReconnectPolicy(1.0, 30.0, automatic=True)


class InfluxSettings(_Section):
    """InfluxDB through its v1 HTTP API (1.x, 2.x with DBRP mappings, 3.x)."""

    url: str = "http://127.0.0.1:8086"
    database: str = "netmon"
    retention_policy: str | None = None
    username: str | None = None
    password_file: Path | None = None
    #: 2.x/3.x token, sent as the basic-auth password (v1 compatibility API).
    token_file: Path | None = None
    create_database: bool = True
    retention: str = Field("0s", description="for create_database on 1.x: 0s keeps forever")
    timeout_s: float = Field(10.0, gt=0)
    verify_tls: bool = True


class WriterSettings(_Section):
    """Batching and retries of writes to InfluxDB, and self-metrics."""

    batch_size: int = Field(5000, ge=1, le=100_000, description="points per HTTP write")
    flush_interval_s: float = Field(0.5, gt=0, le=60, description="oldest point waits at most")
    linger_s: float = Field(0.02, ge=0, le=5, description="flush once input pauses this long")
    gzip: bool = True
    retry_initial_s: float = Field(0.5, gt=0, le=60)
    retry_max_s: float = Field(30.0, gt=0, le=3600)
    stats_interval_s: float = Field(60.0, gt=0, le=3600)


class RegistrySettings(_Section):
    """The site registry file (TOML or CSV) mapping probe id to site, and the reference
    map of commune-level units its codes are checked against."""

    path: Path = Path("sites.toml")
    #: Reference data CSV (``collector/core/units.py``); None: the packaged 2025 map.
    units_file: Path | None = None
    #: The day the reference map took effect (the reorganisation, Vietnam's calendar).
    units_effective: date = date(2025, 7, 1)


class DeadLetterSettings(_Section):
    """Where rejected messages go, and how much of them is kept.

    When a probe's records pass ``max_bytes_per_probe`` or the file passes
    ``max_bytes_total``, the oldest records (that probe's, or anyone's) are rotated out
    down to 90 % of the cap, counted in self-metrics as ``dead_rotated``.
    """

    path: Path = Path("dead-letters.jsonl")
    publish: bool = True
    max_bytes_per_probe: int = Field(8 * 1024 * 1024, ge=4096)
    max_bytes_total: int = Field(256 * 1024 * 1024, ge=4096)

    @model_validator(mode="after")
    def _caps_order(self) -> DeadLetterSettings:
        if self.max_bytes_per_probe > self.max_bytes_total:
            raise ValueError("max_bytes_per_probe must not exceed max_bytes_total")
        return self


#: ISPs of Hà Tĩnh's fixed and mobile networks; another value is stored but counted
#: (self-metrics ``unknown_isp``), since a typo makes a new series on every dashboard.
KNOWN_ISPS = ("VNPT", "Viettel", "FPT", "MobiFone", "Vietnamobile", "CMC", "SCTV",
              "NetNam", "Gmobile", "iTel", "Wintel")


class IntegritySettings(_Section):
    """What keeps one message from spoiling the data (docs/protocol.md, "Limits").

    ``index_path``: the SQLite index of stored results (result id -> content digest)
    that dead-letters a second, different message with an id already stored
    (``conflict``), and the per-probe, per-UTC-day sets of ``isp`` and ``target`` values
    behind ``max_isps_per_day`` / ``max_targets_per_day`` (excess: ``cardinality``).
    Entries older than ``index_max_age_days`` (by the result's ``started_at``) are pruned.
    """

    index_path: Path = Path("state/result-index.sqlite")
    index_max_age_days: int = Field(400, ge=1, le=36500)
    max_isps_per_day: int = Field(8, ge=1, le=10_000)
    max_targets_per_day: int = Field(64, ge=1, le=100_000)
    known_isps: list[str] = Field(default_factory=lambda: list(KNOWN_ISPS))


class Targets(_Section):
    """Download targets of plan 568/KH-UBND, Mb/s."""

    mobile_mbps: float = Field(71.0, gt=0)
    fixed_mbps: float = Field(150.0, gt=0)
    fixed_2030_mbps: float = Field(1000.0, gt=0)

    def for_access(self, access: Literal["fixed", "mobile"]) -> float:
        """The 2025 target for an access type."""
        return self.fixed_mbps if access == "fixed" else self.mobile_mbps


class BulletinMailSettings(_Section):
    """Mail of the final edition to the leadership (``[bulletin.mail]``; off by default).

    TLS always: ``starttls`` (port 587) or ``tls`` (implicit TLS, port 465). The password
    is read from ``password_file``, which must be 0600 (docs/operations.md).
    """

    enabled: bool = False
    host: str = "localhost"
    port: int = Field(587, ge=1, le=65535)
    tls: Literal["starttls", "tls"] = "starttls"
    #: CA bundle to verify the server with (a private CA); None: the system's.
    ca_file: Path | None = None
    username: str = ""
    password_file: Path | None = None
    sender: str = Field("", description="the From address")
    recipients: list[str] = Field(default_factory=list)
    timeout_s: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _complete(self) -> BulletinMailSettings:
        if self.enabled:
            if not self.recipients:
                raise ValueError("recipients: at least one address when mail is enabled")
            if "@" not in self.sender:
                raise ValueError("sender: an e-mail address is required when mail is "
                                 "enabled")
            bad = [r for r in self.recipients if "@" not in r]
            if bad:
                raise ValueError(f"recipients: not an e-mail address: {', '.join(bad)}")
            if self.username and self.password_file is None:
                raise ValueError("password_file: required with username")
        return self


class BulletinSettings(_Section):
    """The monthly bulletin."""

    #: A unit (province, commune/ward, ISP ...) is rated only with at least ``min_tests``
    #: valid tests and ``min_probe_days`` probe-days (distinct probe x local day with a
    #: valid test) in the month; defaults justified in docs/methodology.md.
    min_tests: int = Field(30, ge=1, description="below this a unit is 'insufficient data'")
    min_probe_days: int = Field(10, ge=1, description="below this a unit is 'insufficient "
                                "data' (probe-days with a valid test)")
    #: i-Speed reference medians entered by the NOC (TOML, ``[[median]]`` rows with a
    #: ``source``); None: no reference row. Relative to the config file.
    reference_file: Path | None = None
    language: Literal["vi", "en"] = "vi"
    province: str = "Hà Tĩnh"
    timezone: str = "Asia/Ho_Chi_Minh"
    peak_start_hour: int = Field(19, ge=0, le=23)
    peak_end_hour: int = Field(23, ge=1, le=24)
    #: Throughput tests a day per link, only for links whose agent never reported
    #: ``expected_runs_per_day`` in its status (agents before that field).
    expected_tests_per_day: float = Field(24.0, gt=0,
                                          description="per link that never reported its "
                                          "plan, for probe availability")
    #: Read the month's throughput tests from the rollups' day packs where they cover
    #: it (docs/schema.md, "Day packs"); False: always from the raw points (same output).
    day_packs: bool = True

    #: The public archive of editions (``bulletin --edition``); None: ``--archive`` is
    #: required on the command line.
    archive_dir: Path | None = None
    #: Where the archive is served (links in the mail); "" = no link.
    public_url: str = ""
    mail: BulletinMailSettings = BulletinMailSettings()

    @model_validator(mode="after")
    def _peak_order(self) -> BulletinSettings:
        if self.peak_end_hour <= self.peak_start_hour:
            raise ValueError("peak_end_hour must be after peak_start_hour")
        return self


class RollupSettings(_Section):
    """Hourly and daily aggregates the dashboards read (collector/core/rollups.py)."""

    enabled: bool = True
    interval_s: float = Field(60.0, gt=0, le=3600, description="dirty hours recomputed every")


class EnrollmentSettings(_Section):
    """``[enrollment]`` of the collector config (the NOC host, which is the broker host)."""

    probes_password_file: Path = Field(
        Path("/etc/mosquitto/netmon.passwd"),
        description="the probes' listener password file (the Ansible role writes it)")
    accounts_file: Path = Field(
        Path("/etc/mosquitto/netmon-enrolled.passwd"),
        description="enrolled probes' accounts (hashed); written here only, merged into "
                    "probes_password_file here and by the Ansible role")
    reload_command: list[str] = Field(
        ["systemctl", "reload", "mosquitto"], min_length=1,
        description="makes the broker re-read its password files (SIGHUP)")
    mosquitto_passwd: str = "mosquitto_passwd"
    state_file: Path = Field(Path("/var/lib/netmon-collector/enrollment.json"),
                             description="decisions: used claim codes, rejected requests")
    request_ttl_s: float = Field(7 * 86400.0, ge=60,
                                 description="older requests are refused as expired")
    answer_valid_s: float = Field(30 * 86400.0, ge=60,
                                  description="how long a probe accepts an answer")


class CollectorConfig(BaseSettings):
    """The whole collector config file."""

    mqtt: MqttSettings = MqttSettings()
    influxdb: InfluxSettings = InfluxSettings()
    writer: WriterSettings = WriterSettings()
    registry: RegistrySettings = RegistrySettings()
    dead_letters: DeadLetterSettings = DeadLetterSettings()
    integrity: IntegritySettings = IntegritySettings()
    targets: Targets = Targets()
    bulletin: BulletinSettings = BulletinSettings()
    rollups: RollupSettings = RollupSettings()
    enrollment: EnrollmentSettings = EnrollmentSettings()


def load(path: Path | None) -> CollectorConfig:
    """Load and validate; raises :class:`netmon.settings.ConfigError` naming bad keys.

    Relative paths in the file are resolved against the file's folder.
    """
    cfg = load_settings(CollectorConfig, path)
    if path is not None:
        base = path.resolve().parent
        cfg.registry.path = _resolve(base, cfg.registry.path)
        if cfg.registry.units_file is not None:
            cfg.registry.units_file = _resolve(base, cfg.registry.units_file)
        cfg.dead_letters.path = _resolve(base, cfg.dead_letters.path)
        cfg.integrity.index_path = _resolve(base, cfg.integrity.index_path)
        for key in ("probes_password_file", "accounts_file", "state_file"):
            setattr(cfg.enrollment, key, _resolve(base, getattr(cfg.enrollment, key)))
        if cfg.bulletin.reference_file is not None:
            cfg.bulletin.reference_file = _resolve(base, cfg.bulletin.reference_file)
        if cfg.bulletin.archive_dir is not None:
            cfg.bulletin.archive_dir = _resolve(base, cfg.bulletin.archive_dir)
        for key in ("ca_file", "password_file"):
            value = getattr(cfg.bulletin.mail, key)
            if value is not None:
                setattr(cfg.bulletin.mail, key, _resolve(base, value))
    return cfg


def preflight(cfg: CollectorConfig) -> list[str]:
    """What ``run`` needs that validation alone cannot see: URLs it can use, paths it can
    create and write on this machine. ``run`` and ``check-config`` refuse to start (exit 2)
    on any; commands that only read (bulletin, dashboards) do not check."""
    problems = [url_problem("influxdb.url", cfg.influxdb.url),
                writable_path_problem("dead_letters.path", cfg.dead_letters.path)]
    return [p for p in problems if p]


def _resolve(base: Path, p: Path) -> Path:
    return p if p.is_absolute() else base / p


def unit_map(cfg: CollectorConfig, source: Path | None = None) -> UnitMap:
    """The reference map of ``[registry]`` (``units_file``, ``units_effective``).

    Raises :class:`ConfigError` naming ``registry.units_file`` when the file cannot be
    used (``source``: the config file, for the message).
    """
    from collector.core.units import DEFAULT_FILE, UnitsError, load_units

    path = cfg.registry.units_file or DEFAULT_FILE
    try:
        return load_units(path, cfg.registry.units_effective)
    except UnitsError as exc:
        raise ConfigError(source, [f"registry.units_file: {exc}"]) from None
    except OSError as exc:  # a directory, unreadable, ...
        raise ConfigError(source, [f"registry.units_file: cannot read {path}: "
                                   f"{exc.strerror or exc}"]) from None


def open_registry(cfg: CollectorConfig, source: Path | None = None) -> Registry:
    """The live site registry of ``[registry]``, checked against its reference map.

    Raises :class:`ConfigError` (bad units file) or
    :class:`collector.core.registry.RegistryError` (bad registry).
    """
    from collector.core.registry import Registry

    return Registry(cfg.registry.path, units=unit_map(cfg, source))

