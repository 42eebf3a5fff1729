"""The ``registry`` measurement: which probes should be reporting, and whether they are.

Alert rules and dashboards can only see what InfluxDB holds, and a dead probe writes
nothing: a rule that counts a probe's results sees no series for it once its last
result has left the query window, and "no data" reads as OK. So every
``interval_s`` (default 5 minutes) the collector writes one point per probe in the site
registry, independent of the probe sending anything::

    registry,probe=ky-anh-01,commune_code=18754,commune=Phường\\ Sông\\ Trí,
             district=...,site_type=commune_office,unit=18754\\ Phường\\ Sông\\ Trí
             registered=1i,results_30m=12i,offline=0i,latitude=18.07,longitude=106.29,
             site_name="UBND phường Sông Trí"

- ``results_30m``: results of the probe measured (``started_at``) in the last 30 minutes
  (the deployed plan runs icmp every 5 minutes, so a live probe has several);
- ``offline``: 1 when the probe's last status of the last 24 hours says
  ``state = "offline"`` (the retained last will the broker publishes when the probe's
  connection dies, or its own clean "going offline"), else 0;
- ``unit`` tag: ``"<code> <name>"`` of the current unit, for the dashboards' commune
  variable (value = code, text = name, split by the variable's regex).

A probe is *reporting* when ``results_30m * (1 - offline) > 0``; the "probe offline"
alert fires for every registered probe that is not, for as long as it stays in the
registry (a probe silent for weeks keeps alerting), and stops once it is removed (its
points stop; the rule looks at the last 15 minutes). Points are stamped at the start of
their interval, so several collector workers writing at once overwrite one another's
points instead of multiplying them. Documented in docs/schema.md and docs/dashboards.md.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from collector.config import InfluxSettings
from collector.core.influx import InfluxClient
from collector.core.registry import Registry
from collector.core.schema import NS_PER_MS, PROBE_STATUS, RESULTS, Site, line, to_ms

log = logging.getLogger(__name__)

REGISTRY = "registry"
#: How often the points are written (seconds).
DEFAULT_INTERVAL_S = 300.0
#: A probe with no result measured in this window is silent.
SILENT_WINDOW = timedelta(minutes=30)
#: The last status within this window decides ``offline``; older silence is caught by
#: ``results_30m`` alone.
STATUS_WINDOW = timedelta(hours=24)


def unit_label(site: Site) -> str:
    """``"<code> <name>"`` (the ``unit`` tag), or "" without a code."""
    return f"{site.commune_code} {site.commune}" if site.commune_code else ""


def _time_range(start: datetime, end: datetime) -> str:
    return f"time > {to_ms(start) * NS_PER_MS} AND time <= {to_ms(end) * NS_PER_MS}"


def probe_activity(client: InfluxClient, now: datetime) -> tuple[dict[str, int], set[str]]:
    """(results measured in the last 30 minutes per probe, probes whose last status of
    the last 24 hours is offline), as of ``now``."""
    counts_sql = (f'SELECT count("duration_s") AS "n" FROM "{RESULTS}" '
                  f'WHERE {_time_range(now - SILENT_WINDOW, now)} GROUP BY "probe"')
    state_sql = (f'SELECT last("state") AS "state" FROM "{PROBE_STATUS}" '
                 f'WHERE {_time_range(now - STATUS_WINDOW, now)} GROUP BY "probe"')
    counts, states = client.query(f"{counts_sql}; {state_sql}")
    recent = {s.tags["probe"]: int(s.values[0][1]) for s in counts if s.values}
    offline = {s.tags["probe"] for s in states if s.values and s.values[0][1] == "offline"}
    return recent, offline


def registry_lines(sites: list[Site], recent: dict[str, int], offline: set[str],
                   at: datetime) -> list[str]:
    """One ``registry`` point per site, stamped ``at``."""
    out = []
    for site in sites:
        tags = {"probe": site.probe_id, "commune_code": site.commune_code,
                "commune": site.commune, "district": site.district,
                "site_type": site.site_type, "unit": unit_label(site)}
        fields: dict[str, float | int | bool | str] = {
            "registered": 1, "results_30m": recent.get(site.probe_id, 0),
            "offline": 1 if site.probe_id in offline else 0,
            "latitude": float(site.latitude), "longitude": float(site.longitude),
            "site_name": site.name}
        out.append(line(REGISTRY, tags, fields, to_ms(at)))
    return out


class RegistryMetrics:
    """Writes the ``registry`` points every ``interval_s`` on a daemon thread."""

    def __init__(self, registry: Registry, influx: InfluxSettings,
                 interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.registry = registry
        self.influx = influx
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def slot(self, now: datetime) -> datetime:
        """The start of the interval ``now`` falls in (the points' timestamp)."""
        step = int(self.interval_s * 1000)
        return datetime.fromtimestamp(to_ms(now) // step * step / 1000, UTC)

    def write_once(self, now: datetime | None = None) -> int:
        """Query the activity as of ``now``, write one point per registered probe;
        returns the number written. Raises InfluxError."""
        now = now or datetime.now(UTC)
        sites = self.registry.sites()
        if not sites:
            return 0
        with InfluxClient(self.influx) as client:
            recent, offline = probe_activity(client, now)
            lines = registry_lines(sites, recent, offline, self.slot(now))
            client.write_lines(lines)
        return len(lines)

    def _loop(self) -> None:
        while True:
            try:
                self.write_once()
            except Exception as exc:
                # Not fatal: results still flow. After 15 minutes without these points the
                # "probe offline" rule has no data, which it treats as alerting.
                log.warning("registry points not written (%s); the probe-offline alert "
                            "needs them: check InfluxDB; next try in %.0f s",
                            exc, self.interval_s)
            if self._stop.wait(self.interval_s):
                return

    def start(self) -> None:
        """Write now, then every ``interval_s``."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="registry-metrics",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (a write in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
