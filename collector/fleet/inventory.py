"""The probe inventory for ``probes list``: the site registry joined with what InfluxDB
knows from the probes' status messages (``probe_status``, ``link_usage``) and results."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from collector.core.influx import InfluxClient, Series
from collector.core.schema import LINK_USAGE, PROBE_STATUS, RESULTS, Site
from netmon.contract import format_time


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
    board_model: str | None = None
    clock_synced: bool | None = None
    #: The last agent update event, failed versions, and a version on trial (issue 18).
    update_event: str | None = None
    update_failed: str | None = None
    update_trial: str | None = None
    oldest_waiting_at: datetime | None = None
    #: Results the probe could not keep since its start, and the bound on what its
    #: previous run may have lost by not stopping cleanly (write-behind).
    spool_lost: int | None = None
    results_maybe_lost: int | None = None
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
            "board_model": self.board_model,
            "clock_synced": self.clock_synced,
            "update_event": self.update_event,
            "update_failed": self.update_failed,
            "update_trial": self.update_trial,
            "oldest_waiting_at": format_time(self.oldest_waiting_at)
            if self.oldest_waiting_at else None,
            "spool_lost": self.spool_lost,
            "results_maybe_lost": self.results_maybe_lost,
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
                 f'last("board_model") AS board_model, '
                 f'last("clock_synced") AS clock_synced, '
                 f'last("update_event") AS update_event, '
                 f'last("update_failed") AS update_failed, '
                 f'last("update_trial") AS update_trial, '
                 f'last("oldest_waiting_ms") AS oldest_waiting_ms, '
                 f'last("spool_lost") AS spool_lost, '
                 f'last("results_maybe_lost") AS results_maybe_lost, '
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
        r.board_model = rec.get("board_model") or None
        synced = rec.get("clock_synced")
        r.clock_synced = None if synced is None else bool(synced)
        r.update_event = rec.get("update_event") or None
        r.update_failed = rec.get("update_failed") or None
        r.update_trial = rec.get("update_trial") or None
        r.oldest_waiting_at = _ms(rec.get("oldest_waiting_ms") or None)
        r.spool_lost = _int(rec.get("spool_lost"))
        r.results_maybe_lost = _int(rec.get("results_maybe_lost"))
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
