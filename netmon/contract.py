"""The wire contract between agent and collector: MQTT topics and message models.

This module is the single definition of what travels over MQTT. The agent builds
messages with these models and the collector validates incoming bytes with
:func:`parse_result` / :func:`parse_status`. Documented with examples in
``docs/protocol.md``; change both together.
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from netmon.contractbase import (
    DEFAULT_PREFIX as DEFAULT_PREFIX,
)
from netmon.contractbase import (
    EXIT_RESTART as EXIT_RESTART,
)
from netmon.contractbase import (
    LINK_NAME_PATTERN as LINK_NAME_PATTERN,
)
from netmon.contractbase import (
    MAX_MESSAGE_BYTES as MAX_MESSAGE_BYTES,
)
from netmon.contractbase import (
    MAX_SPEED_MBPS as MAX_SPEED_MBPS,
)
from netmon.contractbase import (
    PROBE_ID_PATTERN as PROBE_ID_PATTERN,
)
from netmon.contractbase import (
    SCHEMA_VERSION as SCHEMA_VERSION,
)
from netmon.contractbase import ContractError as ContractError
from netmon.contractbase import Topics as Topics
from netmon.contractbase import now_utc as now_utc
from netmon.jsonutil import JsonError, decode_object
from netmon.jsonutil import format_time as format_time  # the wire's time format, re-exported
from netmon.methods import DECLARATIONS, IPV6, REACHABILITY

#: Ten minutes: no RTT or test duration is longer on a working probe.
MAX_MS = 600_000.0
MAX_FUTURE = timedelta(days=1)
_ZERO: Final = timedelta(0)


ProbeId = Annotated[str, StringConstraints(pattern=PROBE_ID_PATTERN)]
#: A topic prefix is one or more MQTT topic levels without wildcards (``+``, ``#``),
#: empty levels or a leading/trailing slash: ``netmon/#`` would subscribe to nothing.
TOPIC_PREFIX_PATTERN = r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$"
_TOPIC_PREFIX_RE = re.compile(TOPIC_PREFIX_PATTERN)


def _topic_prefix(value: str) -> str:
    if len(value) > 100 or not _TOPIC_PREFIX_RE.match(value):
        raise ValueError(f"{value!r} must be MQTT topic levels like 'netmon/v1': letters, "
                         "digits, '_', '.', '-' between single slashes, no wildcard "
                         "('+', '#'), at most 100 characters")
    return value


TopicPrefix = Annotated[str, AfterValidator(_topic_prefix)]
LinkName = Annotated[str, StringConstraints(pattern=LINK_NAME_PATTERN)]
Access = Literal["fixed", "mobile"]


def _declared_method(value: Any) -> Any:
    # Checked against the live registry rather than a Literal fixed at import, so a test
    # can declare a test-only method for its duration; the error is the one a Literal of
    # the declared names gives, so messages and dead-letter details stay as they were.
    if isinstance(value, str) and value in DECLARATIONS:
        return value
    names = [repr(name) for name in DECLARATIONS]
    expected = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    raise PydanticCustomError("literal_error", "Input should be {expected}",
                              {"expected": expected})


#: A declared method's name (:data:`netmon.methods.DECLARATIONS`): declaring a method
#: there is what makes both sides agree on it.
Method = Annotated[str, BeforeValidator(_declared_method)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=256)]
#: Numbers on the wire are JSON numbers, never booleans (``true`` is not 1 byte or 1 s);
#: an integer must fit InfluxDB's signed 64-bit integer field.
INFLUX_MAX_INT: Final = 2**63 - 1
Num = Annotated[float, Strict()]
Count = Annotated[int, Strict(), Field(ge=0, le=INFLUX_MAX_INT)]
#: Every declared method, in declaration order.
METHODS: Final = tuple(DECLARATIONS)
#: Methods whose results carry ``download_mbps`` / ``upload_mbps`` (kind ``throughput``).
THROUGHPUT_METHODS: Final = tuple(n for n, d in DECLARATIONS.items()
                                  if d.kind == "throughput" and d.speed)
#: Methods whose results carry ``rtt_ms`` / ``jitter_ms`` / ``loss_pct`` towards a
#: measurement target (kind ``latency``).
LATENCY_METHODS: Final = tuple(n for n, d in DECLARATIONS.items() if d.kind == "latency")
#: IPv6 readiness (plan task 2.3): ok = global address and the v6 target reached.
IPV6_METHOD: Final = IPV6.name
#: Reachability of configured endpoints (e.g. TSLCD): ok = reached, one result each.
REACHABILITY_METHOD: Final = REACHABILITY.name

#: Error codes a failed test may carry (``error.code``).
ERROR_CODES = (
    "timeout", "unreachable", "server_busy", "refused", "dns", "tool_missing", "forbidden",
    "protocol", "budget", "aborted", "internal",
)
ErrorCode = Literal[
    "timeout", "unreachable", "server_busy", "refused", "dns", "tool_missing", "forbidden",
    "protocol", "budget", "aborted", "internal",
]


def _utc(value: datetime) -> datetime:
    # The wire and InfluxDB keep milliseconds; truncating here keeps round trips exact.
    if (value.__class__ is datetime and value.tzinfo is not UTC
            and value.utcoffset() == _ZERO):
        # Another zero-offset tzinfo (pydantic's for every "...Z" on the wire; the
        # collector runs this for every result): the value the two lines below give,
        # built in one call (``replace`` with keywords costs twice as much).
        us = value.microsecond
        return datetime(value.year, value.month, value.day, value.hour, value.minute,
                        value.second, us - us % 1000, UTC)
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]
_M = TypeVar("_M", bound=BaseModel)


class _Strict(BaseModel):
    # defer_build: a model's validator is built when first used, so a process pays only
    # for the messages it handles (an agent never builds the enrollment or release
    # models unless it enrols or updates; issue 20).
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False,
                              defer_build=True)


class ErrorInfo(_Strict):
    """Why a test failed; the message keeps the tool's own words."""

    code: ErrorCode
    message: Annotated[str, StringConstraints(max_length=2000)]


#: The metrics that may be negative (radio levels in dBm/dB); bounded by their fields.
SIGNED_METRICS = frozenset({"radio_rssi_dbm", "radio_rsrp_dbm", "radio_rsrq_db",
                            "radio_sinr_db"})

#: Metric names: lower_snake_case, at most 64 characters.
_METRIC_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


class Metrics(BaseModel):
    """Numbers a test measured. Known keys are typed; extra keys are allowed if numeric,
    finite and non-negative (never a boolean), and are documented in ``docs/protocol.md``.

    Units are in the key: ``_mbps`` megabits per second (10^6 bit/s of goodput),
    ``_ms`` milliseconds, ``_pct`` percent, ``_bytes`` bytes, ``_s`` seconds.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    download_mbps: Num | None = Field(None, ge=0, le=MAX_SPEED_MBPS)
    upload_mbps: Num | None = Field(None, ge=0, le=MAX_SPEED_MBPS)
    rtt_ms: Num | None = Field(None, ge=0, le=MAX_MS, description="median RTT")
    rtt_min_ms: Num | None = Field(None, ge=0, le=MAX_MS)
    rtt_mean_ms: Num | None = Field(None, ge=0, le=MAX_MS)
    rtt_max_ms: Num | None = Field(None, ge=0, le=MAX_MS)
    jitter_ms: Num | None = Field(None, ge=0, le=MAX_MS)
    loss_pct: Num | None = Field(None, ge=0, le=100)
    idle_rtt_ms: Num | None = Field(None, ge=0, le=MAX_MS)
    loaded_rtt_ms: Num | None = Field(None, ge=0, le=MAX_MS)
    cross_traffic_mbps: Num | None = Field(None, ge=0, le=MAX_SPEED_MBPS)
    retransmits: Num | None = Field(None, ge=0)
    samples: Num | None = Field(None, ge=0)
    bytes: Num | None = Field(None, ge=0, description="bytes the test moved (data budget)")
    # Radio context of a mobile link (agent/methods/common/radio.py): dBm and dB are
    # signed, so these are the only metrics that may be negative (SIGNED_METRICS).
    radio_rssi_dbm: Num | None = Field(None, ge=-140, le=0)
    radio_rsrp_dbm: Num | None = Field(None, ge=-160, le=0)
    radio_rsrq_db: Num | None = Field(None, ge=-40, le=20)
    radio_sinr_db: Num | None = Field(None, ge=-30, le=60)
    # The modem's reported maximum of a mobile link (ModemManager bearer stats, the rates
    # negotiated with the network): it bounds the device's ceiling (device_limited).
    modem_max_down_mbps: Num | None = Field(None, gt=0, le=MAX_SPEED_MBPS)
    modem_max_up_mbps: Num | None = Field(None, gt=0, le=MAX_SPEED_MBPS)

    @model_validator(mode="before")
    @classmethod
    def _check_all_numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        # The checks, their order and their messages are those of _check_metric; a
        # plain float or int under a name already known good (a declared field) takes
        # the short way: the collector runs this for every metric of every result.
        for key, value in data.items():
            value_cls = value.__class__
            if key not in _FIELD_NAMES or (value_cls is not float and value_cls is not int):
                _check_metric(key, value)
                continue
            if value_cls is int and abs(value) > 2**53:
                raise ValueError(f"metric {key!r} is too large (more than 2**53)")
            if value_cls is float and not math.isfinite(value):
                raise ValueError(f"metric {key!r} is not finite ({value})")
            if value < 0:
                if key not in SIGNED_METRICS:
                    raise ValueError(f"metric {key!r} is negative ({value})")
            elif value > 100:  # neither limit below applies to a value up to 100
                if key.endswith("_mbps") and value > MAX_SPEED_MBPS:
                    raise ValueError(
                        f"metric {key!r}={value} is above {MAX_SPEED_MBPS:g} Mb/s")
                if key.endswith("_pct"):
                    raise ValueError(f"metric {key!r}={value} is outside 0-100")
        return data

    def values(self) -> dict[str, float | bool]:
        """All metrics that are set, known and extra, as a plain dict."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


#: The declared metric fields: every one is a valid metric name.
_FIELD_NAMES: Final = frozenset(Metrics.model_fields)


def _check_metric(key: Any, value: Any) -> None:
    # One metric of Metrics._check_all_numbers, every check in order.
    if not isinstance(key, str) or not _METRIC_NAME.fullmatch(key):
        raise ValueError(f"metric name {key!r} must be lower_snake_case, <= 64 chars")
    if value is None:
        return
    if isinstance(value, bool):
        raise ValueError(f"metric {key!r} is a boolean; send 0 or 1")
    # A tuple, not ``int | float``: isinstance with a union is several times slower.
    if not isinstance(value, (int, float)):
        raise ValueError(f"metric {key!r} must be a number, got {type(value).__name__}")
    if isinstance(value, int) and abs(value) > 2**53:
        raise ValueError(f"metric {key!r} is too large (more than 2**53)")
    if not math.isfinite(value):
        raise ValueError(f"metric {key!r} is not finite ({value})")
    if value < 0 and key not in SIGNED_METRICS:
        raise ValueError(f"metric {key!r} is negative ({value})")
    if key.endswith("_mbps") and value > MAX_SPEED_MBPS:
        raise ValueError(f"metric {key!r}={value} is above {MAX_SPEED_MBPS:g} Mb/s")
    if key.endswith("_pct") and value > 100:
        raise ValueError(f"metric {key!r}={value} is outside 0-100")


class ResultMessage(_Strict):
    """One test's outcome. A failed test is still a result: ``error`` says why."""

    schema_: Literal[1] = Field(SCHEMA_VERSION, alias="schema")
    id: uuid.UUID = Field(default_factory=uuid.uuid4, description="idempotency key")
    probe_id: ProbeId
    link: LinkName
    access: Access
    isp: ShortText
    method: Method
    target: ShortText
    started_at: UtcDatetime
    duration_s: Num = Field(ge=0, le=86_400, allow_inf_nan=False)
    metrics: Metrics = Field(default_factory=Metrics)
    error: ErrorInfo | None = None
    #: e.g. ``cross_traffic`` (line busy during the test), ``clock_unsynced``.
    flags: tuple[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")], ...] = ()
    agent_version: ShortText

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("started_at")
    @classmethod
    def _not_far_future(cls, value: datetime) -> datetime:
        if value > now_utc() + MAX_FUTURE:
            raise ValueError("started_at is more than a day in the future (probe clock wrong?)")
        return value

    @field_serializer("started_at")
    def _ser_time(self, value: datetime) -> str:
        return format_time(value)

    @field_serializer("metrics")
    def _ser_metrics(self, value: Metrics) -> dict[str, float | bool]:
        # Only what was measured travels: absent keys mean "not measured", never null.
        return value.values()

    @property
    def ok(self) -> bool:
        """True when the test succeeded."""
        return self.error is None

    def to_json(self) -> bytes:
        """The UTF-8 JSON payload as published."""
        return self.model_dump_json(by_alias=True, exclude_none=False).encode()


# --------------------------------------------------------------------------- agent updates

VERSION_PATTERN = r"^[0-9][0-9A-Za-z.+!-]{0,63}$"
AgentVersion = Annotated[str, StringConstraints(pattern=VERSION_PATTERN)]


class WheelRef(_Strict):
    """One wheel of a release: its file name under ``base_url``, SHA-256 and size."""

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.+!-]{1,200}\.whl$")]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    size: Count


class ReleaseManifest(_Strict):
    """A signed agent release (issue 18), retained on ``Topics.updates``; signed like a
    config (Ed25519 over the canonical bytes of every other member).

    ``probes`` (a list) names the probes that take it; otherwise ``percent`` of the
    fleet does, chosen by a hash of version and probe id (the same probes stay chosen
    when the percentage grows). ``serial`` grows with each manifest: an older one is a
    replay (a downgrade is a new manifest naming the old version)."""

    schema_: Literal[1] = Field(SCHEMA_VERSION, alias="schema")
    serial: int = Field(ge=1, le=2**53 - 1, strict=True)
    version: AgentVersion
    issued_at: UtcDatetime
    base_url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]{1,400}/$")]
    wheels: tuple[WheelRef, ...] = Field(min_length=1, max_length=64)
    probes: tuple[ProbeId, ...] | None = Field(None, max_length=10_000)
    percent: int = Field(100, ge=0, le=100, strict=True)
    health_timeout_s: float = Field(300.0, ge=10, le=86_400, allow_inf_nan=False)
    key_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
    signature: Annotated[str, StringConstraints(min_length=1, max_length=200)]

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_serializer("issued_at")
    def _ser_time(self, value: datetime) -> str:
        return format_time(value)


class UpdateStatus(_Strict):
    """The update part of a probe's status message."""

    #: A version being fetched or installed, or waiting for the data budget.
    pending: AgentVersion | None = None
    #: The version on trial: switched to, health check not passed yet.
    trial: AgentVersion | None = None
    #: Versions refused or rolled back, with why (newest last, at most 10).
    failed: dict[AgentVersion, Annotated[str, StringConstraints(max_length=500)]] = Field(
        default_factory=dict, max_length=10)
    last_event: Annotated[str, StringConstraints(max_length=500)] | None = None
    last_event_at: UtcDatetime | None = None

    @field_serializer("last_event_at")
    def _ser_time(self, value: datetime | None) -> str | None:
        return format_time(value) if value else None


class LinkStatus(_Strict):
    """Per-link health in a status message."""

    name: LinkName
    access: Access
    isp: ShortText
    data_used_bytes: Count = Field(0, description="bytes used by tests this month")
    data_budget_bytes: Count | None = None
    last_result_at: UtcDatetime | None = None

    @field_serializer("last_result_at")
    def _ser_time(self, value: datetime | None) -> str | None:
        return format_time(value) if value else None


class StatusMessage(_Strict):
    """Retained probe health; the MQTT last will publishes ``state=offline``."""

    schema_: Literal[1] = Field(SCHEMA_VERSION, alias="schema")
    probe_id: ProbeId
    state: Literal["online", "offline"]
    at: UtcDatetime | None = Field(None, description="when this status was produced")
    agent_version: ShortText
    started_at: UtcDatetime | None = Field(None, description="agent process start")
    uptime_s: Num | None = Field(None, ge=0, le=100 * 365 * 86400, allow_inf_nan=False)
    spool_depth: Count = 0
    spool_evicted: Count = Field(0, description="results dropped because the spool was full")
    last_result_at: UtcDatetime | None = None
    clock_synced: bool | None = None
    links: tuple[LinkStatus, ...] = ()
    config_version: Count | None = Field(None, description="applied remote config version")
    config_error: Annotated[str, StringConstraints(max_length=2000)] | None = None
    #: Results the broker acknowledged that no receipt has confirmed yet (issue 14).
    awaiting_receipt: Count | None = None
    #: Results the agent could not keep (spool unwritable, e.g. a full disk), since start.
    spool_lost: Count | None = None
    #: The previous run did not stop cleanly (a power cut, kill -9): at most this many
    #: results it held in memory for their receipt may have been lost (write-behind,
    #: docs/agent.md "SD-card writes"); None after a clean stop.
    results_maybe_lost: Count | None = None
    #: Why the spool cannot be written right now, or None.
    spool_error: Annotated[str, StringConstraints(max_length=2000)] | None = None
    #: Tests per day each link's plan schedules (link name -> runs/day), for availability.
    expected_runs_per_day: dict[LinkName, Annotated[Num, Field(ge=0, le=100_000)]] | None = None
    #: Agent updates (issue 18): pending, on trial, failed; None when updates are off.
    update: UpdateStatus | None = None
    #: When the oldest result still waiting in the spool was stored (None: nothing waits).
    oldest_waiting_at: UtcDatetime | None = None
    #: The board the probe runs on (``/proc/device-tree/model``), for the fleet view.
    board_model: Annotated[str, StringConstraints(max_length=200)] | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_serializer("at", "started_at", "last_result_at", "oldest_waiting_at")
    def _ser_time(self, value: datetime | None) -> str | None:
        return format_time(value) if value else None

    def to_json(self) -> bytes:
        """The UTF-8 JSON payload as published."""
        return self.model_dump_json(by_alias=True).encode()


#: Most result ids one receipt names (keeps a receipt far below MAX_MESSAGE_BYTES).
MAX_RECEIPT_IDS = 1000


class ReceiptMessage(_Strict):
    """The collector's confirmation that results are stored in InfluxDB (issue 14).

    Published by the collector on ``<prefix>/probes/<id>/receipts`` (QoS 1, not retained)
    after the write that stored them succeeded; the agent deletes a spooled result only
    when a receipt names it. Receipts may be lost or repeated: both are harmless (the
    agent resends unreceipted results after a while; storing a result is idempotent).
    """

    schema_: Literal[1] = Field(SCHEMA_VERSION, alias="schema")
    probe_id: ProbeId
    ids: tuple[uuid.UUID, ...] = Field(min_length=1, max_length=MAX_RECEIPT_IDS)
    at: UtcDatetime = Field(default_factory=now_utc, description="when the write succeeded")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_serializer("at")
    def _ser_time(self, value: datetime) -> str:
        return format_time(value)

    def to_json(self) -> bytes:
        """The UTF-8 JSON payload as published."""
        return self.model_dump_json(by_alias=True).encode()


# --------------------------------------------------------------------------- enrollment

#: An enrollment request's id: also the enrolling client's MQTT client id, which the
#: enrollment listener's ACL puts in the only topics that account may use (``%c``).
REQUEST_ID_PATTERN = r"^enroll-[0-9a-f]{32}$"
RequestId = Annotated[str, StringConstraints(pattern=REQUEST_ID_PATTERN)]
#: 32 raw bytes, base64 (an X25519 public key, an ephemeral key).
B64Key = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{43}=$")]
B64 = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]*={0,2}$", max_length=8192)]
Hex16 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]


class HardwareFacts(_Strict):
    """What a probe says about itself in its enrollment request (shown to the NOC)."""

    board_model: Annotated[str, StringConstraints(max_length=200)] = ""
    serial: Annotated[str, StringConstraints(max_length=100)] = ""
    macs: tuple[Annotated[str, StringConstraints(
        pattern=r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")], ...] = Field((), max_length=32)
    #: Network interfaces with a carrier when the request was made.
    links: tuple[Annotated[str, StringConstraints(max_length=32)], ...] = Field(
        (), max_length=32)


class EnrollRequest(_Strict):
    """A blank probe's enrollment request (``Topics.enroll_request``), docs/fleet.md.

    ``claim_proof`` is HMAC-SHA256, keyed with the one-time claim code from the probe's
    label, over the canonical bytes of every other member: the NOC finds the request a
    label belongs to, and nobody without the label can bind another key to that code.
    """

    schema_: Literal[1] = Field(SCHEMA_VERSION, alias="schema")
    request_id: RequestId
    public_key: B64Key = Field(description="the probe's X25519 public key (raw, base64)")
    created_at: UtcDatetime
    agent_version: ShortText
    hardware: HardwareFacts = Field(default_factory=HardwareFacts)
    claim_proof: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_serializer("created_at")
    def _ser_time(self, value: datetime) -> str:
        return format_time(value)

    def to_json(self) -> bytes:
        """The UTF-8 JSON payload as published."""
        return self.model_dump_json(by_alias=True).encode()


class SealedBox(_Strict):
    """Bytes encrypted to a probe's X25519 key: an ephemeral X25519 key, HKDF-SHA256 and
    ChaCha20-Poly1305 (``netmon.enrollment.seal``)."""

    ephemeral: B64Key
    nonce: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{16}$")]
    ciphertext: B64


class EnrollAnswer(_Strict):
    """The NOC's answer to an enrollment request, signed with the NOC key (Ed25519, the
    same canonical-bytes rule as a signed config). ``approved`` carries the probe's
    broker credentials sealed to the request's public key; ``rejected`` says why."""

    schema_: Literal[1] = Field(SCHEMA_VERSION, alias="schema")
    request_id: RequestId
    #: ``netmon.enrollment.public_key_id`` of the request's key: the answer is for it only.
    public_key_id: Hex16
    decision: Literal["approved", "rejected"]
    probe_id: ProbeId | None = None
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None
    issued_at: UtcDatetime
    expires_at: UtcDatetime
    sealed: SealedBox | None = None
    key_id: Hex16
    signature: Annotated[str, StringConstraints(min_length=1, max_length=200)]

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_serializer("issued_at", "expires_at")
    def _ser_time(self, value: datetime) -> str:
        return format_time(value)


class Credentials(_Strict):
    """What a sealed approval holds: the probe's own broker account."""

    probe_id: ProbeId
    username: ProbeId
    password: Annotated[str, StringConstraints(min_length=16, max_length=200)]


# --------------------------------------------------------------------------- topics


# --------------------------------------------------------------------------- parsing


def _decode(payload: bytes) -> dict[str, Any]:
    try:
        obj = decode_object(payload, MAX_MESSAGE_BYTES)
    except JsonError as exc:
        # A non-finite number is a broken value, not broken JSON: counted as invalid.
        raise ContractError("invalid" if exc.reason == "non_finite" else exc.reason,
                            exc.detail) from None
    schema = obj.get("schema")
    if schema != SCHEMA_VERSION or isinstance(schema, bool):
        raise ContractError("unsupported_schema",
                            f"schema is {schema!r}; this collector understands {SCHEMA_VERSION}")
    return obj


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``field.path: why``."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(message)"
        lines.append(f"{loc}: {err['msg']}")
    return "; ".join(lines)


def _parse(model: type[_M], payload: bytes, topic_probe_id: str | None) -> _M:
    obj = _decode(payload)
    try:
        msg = model.model_validate(obj)
    except ValidationError as exc:
        raise ContractError("invalid", describe_validation_error(exc)) from None
    except (OverflowError, RecursionError) as exc:  # huge integers, deep nesting
        raise ContractError("invalid", f"unrepresentable value: {exc}") from None
    probe_id = getattr(msg, "probe_id", None)
    if topic_probe_id is not None and probe_id != topic_probe_id:
        raise ContractError("probe_mismatch",
                            f"payload probe_id {probe_id!r} != topic probe {topic_probe_id!r}")
    return msg


def parse_result(payload: bytes, topic_probe_id: str | None = None) -> ResultMessage:
    """Validate raw MQTT bytes as a result message.

    ``topic_probe_id`` (from the topic) must equal the payload's ``probe_id``: a probe can
    only speak for itself.
    """
    return _parse(ResultMessage, payload, topic_probe_id)


def parse_status(payload: bytes, topic_probe_id: str | None = None) -> StatusMessage:
    """Validate raw MQTT bytes as a status message (see :func:`parse_result`)."""
    return _parse(StatusMessage, payload, topic_probe_id)


def parse_receipt(payload: bytes, topic_probe_id: str | None = None) -> ReceiptMessage:
    """Validate raw MQTT bytes as a receipt (see :func:`parse_result`)."""
    return _parse(ReceiptMessage, payload, topic_probe_id)
