"""The InfluxDB schema: how contract messages become line-protocol points.

One place defines measurement, tag and field names; the writer, the dashboards and
the bulletin all read them from here. Documented in ``docs/schema.md``.

Rules that keep the data sound:
- tags are low-cardinality only (never result ids);
- every metric is written as a float, every counter in ``probe_status`` as an integer,
  so one field never mixes types across points;
- the timestamp is the test's ``started_at`` in milliseconds, so a redelivered message
  lands on the same series and time and overwrites instead of adding a point.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from netmon.contract import ResultMessage, StatusMessage

PRECISION = "ms"

RESULTS = "results"
PROBE_STATUS = "probe_status"
LINK_USAGE = "link_usage"
COLLECTOR_STATS = "collector_stats"

#: Tags of ``results`` in a stable order (line protocol prefers sorted keys).
RESULT_TAGS = ("access", "commune", "district", "error_code", "isp", "link", "method",
               "probe", "site_type", "status", "target")


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


def nfc(text: str) -> str:
    """Vietnamese names compare and group correctly only in one normal form."""
    return unicodedata.normalize("NFC", text)


def escape_measurement(name: str) -> str:
    """Escape a measurement name for line protocol."""
    return name.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ")


def escape_key(text: str) -> str:
    """Escape a tag key, tag value or field key for line protocol."""
    text = nfc(text)
    # Newlines cannot be escaped in line protocol at all; they never belong in a tag.
    text = text.replace("\n", " ").replace("\r", " ")
    return (text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
            .replace(" ", "\\ "))


def escape_string_field(text: str) -> str:
    """A quoted string field value."""
    text = nfc(text)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _format_float(value: float) -> str:
    return repr(float(value))


def line(measurement: str, tags: dict[str, str], fields: dict[str, float | int | bool | str],
         ts_ms: int) -> str:
    """One line-protocol point; empty tag values are dropped (InfluxDB rejects them)."""
    tag_part = "".join(f",{escape_key(k)}={escape_key(v)}"
                       for k, v in sorted(tags.items()) if v != "")
    parts = []
    for key, value in fields.items():
        if isinstance(value, bool):
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
    return f"{escape_measurement(measurement)}{tag_part} {','.join(parts)} {ts_ms}"


def to_ms(msg_time: object) -> int:
    """Milliseconds since the epoch for an aware datetime."""
    from datetime import datetime

    assert isinstance(msg_time, datetime)
    return int(msg_time.timestamp() * 1000)


def result_line(msg: ResultMessage, site: Site) -> str:
    """The ``results`` point for one result, enriched with its site."""
    tags = {
        "probe": msg.probe_id,
        "link": msg.link,
        "access": msg.access,
        "isp": msg.isp,
        "method": msg.method,
        "target": msg.target,
        "status": "ok" if msg.error is None else "error",
        "error_code": msg.error.code if msg.error else "",
        "district": site.district,
        "commune": site.commune,
        "site_type": site.site_type,
    }
    fields: dict[str, float | int | bool | str] = {}
    for key, value in msg.metrics.values().items():
        fields[key] = float(value)  # bools become 0.0/1.0: one type per field, always
    fields["duration_s"] = float(msg.duration_s)
    fields["latitude"] = float(site.latitude)
    fields["longitude"] = float(site.longitude)
    fields["result_id"] = str(msg.id)
    fields["site_name"] = site.name
    fields["cross_traffic"] = 1.0 if "cross_traffic" in msg.flags else 0.0
    if msg.flags:
        fields["flags"] = ",".join(msg.flags)
    if msg.error:
        fields["error_message"] = msg.error.message
    fields["agent_version"] = msg.agent_version
    return line(RESULTS, tags, fields, to_ms(msg.started_at))


def status_lines(msg: StatusMessage, site: Site | None, received_ms: int) -> list[str]:
    """``probe_status`` (one point) and ``link_usage`` (one per link) for a status message.

    Timestamped when the collector received it: a retained status replayed on reconnect
    must not pretend the probe was seen now, so ``at`` is kept as a field too.
    """
    base_tags = {"probe": msg.probe_id}
    if site:
        base_tags |= {"district": site.district, "commune": site.commune,
                      "site_type": site.site_type}
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
    if site:
        fields["latitude"] = float(site.latitude)
        fields["longitude"] = float(site.longitude)
        fields["site_name"] = site.name
    out = [line(PROBE_STATUS, base_tags, fields, ts)]
    for link in msg.links:
        link_fields: dict[str, float | int | bool | str] = {"used_bytes": link.data_used_bytes}
        if link.data_budget_bytes is not None:
            link_fields["budget_bytes"] = link.data_budget_bytes
            link_fields["used_pct"] = (100.0 * link.data_used_bytes / link.data_budget_bytes
                                       if link.data_budget_bytes else 0.0)
        out.append(line(LINK_USAGE, base_tags | {"link": link.name, "access": link.access,
                                                  "isp": link.isp}, link_fields, ts))
    return out
