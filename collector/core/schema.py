"""The InfluxDB schema: how contract messages become line-protocol points.

One place defines measurement, tag and field names; the writer, the dashboards and
the bulletin all read them from here. Documented in ``docs/schema.md``.

Rules that keep the data sound:
- tags are low-cardinality only (never result ids);
- every metric is written as a float, every counter in ``probe_status`` as an integer,
  so one field never mixes types across points;
- a result's identity holds: its timestamp is ``started_at`` (ms) plus a sub-millisecond
  offset derived from the result id, and its tags come from the registry entry in force
  at ``started_at``, so a redelivered message overwrites its own point (whenever it
  arrives), and two results of one series in the same millisecond stay two points
  (unless their ids' offsets collide: 1 in 10^6 for such a pair);
- no metric may be named like a tag key or another field (``RESERVED_METRIC_NAMES``):
  a float field ``status`` would make every ``WHERE "status" = 'ok'`` match nothing.
"""

from __future__ import annotations

import functools
import hashlib
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from netmon.contract import Metrics, ResultMessage, StatusMessage

#: Line-protocol timestamps are nanoseconds (the sub-millisecond part is the identity).
PRECISION = "ns"
NS_PER_MS = 1_000_000

RESULTS = "results"
PROBE_STATUS = "probe_status"
LINK_USAGE = "link_usage"
COLLECTOR_STATS = "collector_stats"
#: One point per scheduled bulletin run (collector/bulletin/editions.py): ok, attempts.
BULLETIN_RUNS = "bulletin_runs"

#: Tags of ``results`` in a stable order (line protocol prefers sorted keys).
RESULT_TAGS = ("access", "commune", "commune_code", "district", "error_code", "isp", "link",
               "method", "probe", "site_type", "status", "target")
#: Non-metric fields of ``results``; a metric may not use these names.
RESERVED_RESULT_FIELDS = frozenset({"duration_s", "latitude", "longitude", "result_id",
                                    "site_name", "cross_traffic", "device_limited",
                                    "local_hour", "flags",
                                    "error_message", "agent_version"})
#: Names a metric may not take: every tag key and non-metric field of ``results``.
RESERVED_METRIC_NAMES = frozenset(RESULT_TAGS) | RESERVED_RESULT_FIELDS
#: Asia/Ho_Chi_Minh: UTC+7 all year (no daylight saving since 1975), for ``local_hour``.
VIETNAM = timezone(timedelta(hours=7))


@dataclass(frozen=True)
class Site:
    """Where a probe stands, from the site registry (not from the probe)."""

    probe_id: str
    name: str
    commune: str
    district: str
    latitude: float
    longitude: float
    site_type: str
    #: Official code of the commune-level unit (reference data); "" only in old tests.
    commune_code: str = ""
    #: Code of the unit before the reorganisation, when known ("" otherwise).
    legacy_commune_code: str = ""


def nfc(text: str) -> str:
    """Vietnamese names compare and group correctly only in one normal form."""
    return unicodedata.normalize("NFC", text)


def escape_measurement(name: str) -> str:
    """Escape a measurement name for line protocol."""
    return name.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ")


def tag_value_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored as a tag value byte-for-byte, or None if it can.

    Measured on InfluxDB 1.6: a tag value unescapes only ``\\,``, ``\\ `` and ``\\=``; any
    other backslash is literal (``\\\\`` stays two backslashes, unlike string fields), and
    a backslash before a space, comma, ``=``, another backslash or the end of the value
    cannot be written at all (or reads back differently on 2.x). Control characters
    (newlines above all) cannot be escaped.
    """
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        return "contains a control character (newline, tab ...)"
    if text.endswith("\\"):
        return "ends with a backslash"
    for bad in ("\\ ", "\\,", "\\=", "\\\\"):
        if bad in text:
            return f"contains {bad!r}: a backslash before a space, comma, '=' or backslash"
    return None


@functools.lru_cache(maxsize=65536)  # tags are low-cardinality: escape each value once
def escape_key(text: str) -> str:
    """Escape a tag key, tag value or field key for line protocol.

    Only commas, ``=`` and spaces are escaped: backslashes are literal in tag values
    (see :func:`tag_value_problem`); raises ValueError for a value that cannot round-trip.
    """
    text = nfc(text)
    problem = tag_value_problem(text)
    if problem:
        raise ValueError(f"tag value {text!r} cannot be stored: {problem}")
    return text.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def escape_string_field(text: str) -> str:
    """A quoted string field value."""
    if not text.isascii():
        text = nfc(text)
    if "\\" in text or '"' in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def influxql_string(value: str) -> str:
    """A single-quoted InfluxQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _format_float(value: float) -> str:
    return repr(float(value))


@functools.lru_cache(maxsize=65536)
def _series_key(measurement: str, tags: tuple[tuple[str, str], ...]) -> str:
    # Series repeat endlessly (same probe, link, target ...): build each key once.
    return escape_measurement(measurement) + "".join(
        f",{escape_key(k)}={escape_key(v)}" for k, v in sorted(tags) if v != "")


def identity_offset_ns(result_id: uuid.UUID) -> int:
    """The sub-millisecond part of a result's timestamp, fixed by its id (0..999999 ns)."""
    digest = hashlib.blake2b(result_id.bytes, digest_size=8).digest()
    return int.from_bytes(digest, "big") % NS_PER_MS


def line(measurement: str, tags: dict[str, str], fields: dict[str, float | int | bool | str],
         ts_ms: int, offset_ns: int = 0) -> str:
    """One line-protocol point at ``ts_ms`` (+ ``offset_ns``), written in nanoseconds;
    empty tag values are dropped (InfluxDB rejects them)."""
    parts = []
    for key, value in fields.items():
        if value.__class__ is float:
            rendered = repr(value)
        elif isinstance(value, bool):
            rendered = "true" if value else "false"
        elif isinstance(value, int):
            rendered = f"{value}i"
        elif isinstance(value, float):
            rendered = _format_float(value)
        else:
            rendered = escape_string_field(value)
        parts.append(f"{escape_key(key)}={rendered}")
    if not parts:
        raise ValueError("a point needs at least one field")
    ts = ts_ms * NS_PER_MS + offset_ns
    return f"{_series_key(measurement, tuple(tags.items()))} {','.join(parts)} {ts}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_MS_PER_HOUR = 3_600_000
#: VIETNAM's offset in whole hours, for ``local_hour`` without a timezone conversion per
#: point.
_VIETNAM_HOURS = VIETNAM.utcoffset(None) // timedelta(hours=1)


def to_ms(msg_time: object) -> int:
    """Milliseconds since the epoch for an aware datetime."""
    assert isinstance(msg_time, datetime)
    # Integer arithmetic: float seconds * 1000 can land one millisecond low.
    return (msg_time - _EPOCH) // _ONE_MS


@functools.lru_cache(maxsize=65536)
def _result_series(probe: str, link: str, access: str, isp: str, method: str, target: str,
                   error_code: str, district: str, commune: str, commune_code: str,
                   site_type: str) -> str:
    # The series key of a result's tags, built by _series_key from the same dict as
    # always; cached on the plain strings, which is cheaper than the dict and its items.
    tags = {
        "probe": probe,
        "link": link,
        "access": access,
        "isp": isp,
        "method": method,
        "target": target,
        "status": "error" if error_code else "ok",
        "error_code": error_code,
        "district": district,
        "commune": commune,
        "commune_code": commune_code,
        "site_type": site_type,
    }
    return _series_key(RESULTS, tuple(tags.items()))


@functools.lru_cache(maxsize=4096)
def _field_prefix(key: str) -> str:
    return f"{escape_key(key)}="


@functools.lru_cache(maxsize=4096)
def _site_fields(latitude: float, longitude: float, name: str) -> tuple[str, str]:
    # (the latitude and longitude fields, the site_name field): the same for every point
    # of a site.
    return (f"latitude={float(latitude)!r},longitude={float(longitude)!r}",
            f"site_name={escape_string_field(name)}")


@functools.lru_cache(maxsize=1024)
def _set_fields(fields_set: frozenset[str]) -> tuple[str, ...]:
    # The declared metrics among those set (extras are listed apart), in field order.
    return tuple(k for k in Metrics.model_fields if k in fields_set)


def _reserved(key: str) -> ValueError:
    # A metric "flags" would be a float where other points hold a string (InfluxDB then
    # rejects whole batches); one named like a tag ("status", "probe") shadows the tag in
    # every WHERE clause, blanking dashboards and the bulletin.
    kind = "tag key" if key in RESULT_TAGS else "field"
    return ValueError(f"metric name {key!r} is reserved: it is a {kind} of '{RESULTS}' "
                      "(see docs/schema.md)")


def result_line(msg: ResultMessage, site: Site, result_id: str | None = None) -> str:
    """The ``results`` point for one result, enriched with its site (``result_id``:
    ``str(msg.id)`` when the caller has it already).

    The same point as :func:`line` makes of the tags and fields listed in
    docs/schema.md (tests/collector/test_validate.py compares them), rendered directly:
    this runs for every result the collector receives."""
    error = msg.error
    series = _result_series(msg.probe_id, msg.link, msg.access, msg.isp, msg.method,
                            msg.target, error.code if error else "", site.district,
                            site.commune, site.commune_code, site.site_type)
    parts = []
    metrics = msg.metrics
    # __dict__ + extras is what Metrics.values() returns, without a pydantic dump per
    # point; every metric is a float (bools 0.0/1.0): one type per field, always. Only
    # the declared fields that were set, in __dict__'s order (a result sets a few of
    # twenty).
    values = metrics.__dict__
    for key in _set_fields(frozenset(metrics.__pydantic_fields_set__)):
        value = values[key]
        if value is not None:
            if key in RESERVED_METRIC_NAMES:
                raise _reserved(key)
            parts.append(f"{_field_prefix(key)}{float(value)!r}")
    extra = metrics.__pydantic_extra__
    if extra:
        for key, value in extra.items():
            if value is not None:
                if key in RESERVED_METRIC_NAMES:
                    raise _reserved(key)
                parts.append(f"{_field_prefix(key)}{float(value)!r}")
    coordinates, site_name = _site_fields(site.latitude, site.longitude, site.name)
    flags = msg.flags
    # InfluxQL 1.x has no hour-of-day function: peak-hour panels filter on local_hour,
    # the hour of started_at in VIETNAM (UTC+7 all year), from the epoch milliseconds.
    started_ms = to_ms(msg.started_at)
    parts += (
        f"duration_s={float(msg.duration_s)!r}",
        coordinates,
        f'result_id="{result_id or msg.id}"',
        site_name,
        "cross_traffic=1.0" if "cross_traffic" in flags else "cross_traffic=0.0",
        # The probe (its port, modem or CPU), not the line, set this speed: the bulletin
        # counts these apart (a number, like cross_traffic: the flags string cannot be
        # summed).
        "device_limited=1.0" if "device_limited" in flags else "device_limited=0.0",
        f"local_hour={float((started_ms // _MS_PER_HOUR + _VIETNAM_HOURS) % 24)!r}",
    )
    if flags:
        parts.append(f"flags={escape_string_field(','.join(flags))}")
    if error:
        parts.append(f"error_message={escape_string_field(error.message)}")
    parts.append(f"agent_version={escape_string_field(msg.agent_version)}")
    ts = started_ms * NS_PER_MS + identity_offset_ns(msg.id)
    return f"{series} {','.join(parts)} {ts}"


def status_lines(msg: StatusMessage, site: Site | None, received_ms: int) -> list[str]:
    """``probe_status`` (one point) and ``link_usage`` (one per link) for a status message.

    Timestamped with the status's own ``at`` (so a retained status replayed on reconnect
    overwrites the same point instead of pretending the probe was seen now), or with the
    time the collector received it when ``at`` is absent (e.g. a last-will message).
    """
    base_tags = {"probe": msg.probe_id}
    if site:
        base_tags |= {"district": site.district, "commune": site.commune,
                      "commune_code": site.commune_code, "site_type": site.site_type}
    ts = to_ms(msg.at) if msg.at else received_ms
    fields: dict[str, float | int | bool | str] = {
        "online": 1 if msg.state == "online" else 0,
        "state": msg.state,
        "spool_depth": msg.spool_depth,
        "spool_evicted": msg.spool_evicted,
        "clock_synced": 1 if msg.clock_synced else 0,
        "agent_version": msg.agent_version,
    }
    if msg.uptime_s is not None:
        fields["uptime_s"] = float(msg.uptime_s)
    if msg.last_result_at is not None:
        fields["last_result_ms"] = to_ms(msg.last_result_at)
    if msg.config_version is not None:
        fields["config_version"] = msg.config_version
    if msg.state == "online":
        # Remote config (docs/fleet.md): always written, "" when none, so that last()
        # never shows an error that a later config cleared.
        fields["config_error"] = msg.config_error or ""
        # Fleet health (issue 18), the same way: "" / 0 when none.
        up = msg.update
        fields["update_event"] = (up.last_event or "") if up else ""
        fields["update_failed"] = "; ".join(f"{v}: {why}" for v, why in up.failed.items()
                                            )[:2000] if up else ""
        fields["update_trial"] = (up.trial or "") if up else ""
        fields["oldest_waiting_ms"] = to_ms(msg.oldest_waiting_at) \
            if msg.oldest_waiting_at else 0
        # Losses the probe knows of since its start (0 when none, like the fields above).
        fields["spool_lost"] = msg.spool_lost or 0
        fields["results_maybe_lost"] = msg.results_maybe_lost or 0
        if msg.board_model:
            fields["board_model"] = msg.board_model
    if site:
        fields["latitude"] = float(site.latitude)
        fields["longitude"] = float(site.longitude)
        fields["site_name"] = site.name
    out = [line(PROBE_STATUS, base_tags, fields, ts)]
    # The bulletin's availability divides the results that arrived by these (per link).
    expected = dict(msg.expected_runs_per_day or {})
    for link in msg.links:
        link_fields: dict[str, float | int | bool | str] = {"used_bytes": link.data_used_bytes}
        if link.data_budget_bytes is not None:
            link_fields["budget_bytes"] = link.data_budget_bytes
            link_fields["used_pct"] = (100.0 * link.data_used_bytes / link.data_budget_bytes
                                       if link.data_budget_bytes else 0.0)
        if link.name in expected:
            link_fields["expected_runs_per_day"] = float(expected.pop(link.name))
        out.append(line(LINK_USAGE, base_tags | {"link": link.name, "access": link.access,
                                                  "isp": link.isp}, link_fields, ts))
    for name, runs in sorted(expected.items()):  # a planned link the status does not list
        out.append(line(LINK_USAGE, base_tags | {"link": name},
                        {"expected_runs_per_day": float(runs)}, ts))
    return out
