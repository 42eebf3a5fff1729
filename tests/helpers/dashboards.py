"""Dashboard tests: a known data set, a fake of Grafana's query interpolation, and the
expected numbers computed in Python straight from the messages (not from InfluxDB).
"""

from __future__ import annotations

import math
import random
import re
import statistics
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from collector.core.influx import InfluxClient
from collector.core.registry import sites_from_rows
from collector.core.schema import Site
from netmon import __version__
from netmon.contract import (
    ErrorInfo,
    LinkStatus,
    Metrics,
    ResultMessage,
    StatusMessage,
    UpdateStatus,
)

VN = ZoneInfo("Asia/Ho_Chi_Minh")
THROUGHPUT = ("iperf3", "speedtest", "http")
LATENCY = ("icmp", "tcp", "dns", "http_latency")


def _sites(rows: list[dict[str, object]]) -> list[Site]:
    """Sites through the real registry: names and old districts from the reference data."""
    table = sites_from_rows([(f"site[{i}]", r) for i, r in enumerate(rows)])
    return [table[str(r["probe_id"])] for r in rows]


def _row(probe: str, name: str, code: str, legacy: str, lat: float, lon: float,
         kind: str) -> dict[str, object]:
    return {"probe_id": probe, "name": name, "commune_code": code,
            "legacy_commune_code": legacy, "latitude": lat, "longitude": lon,
            "site_type": kind}


#: On the map of 1 July 2025: two probes of Xã Kỳ Hoa (18814) came from two old units in
#: two old districts (Xã Kỳ Hoa, Thị xã Kỳ Anh; Xã Kỳ Tân, Huyện Kỳ Anh).
SITES = _sites([
    _row("ka-ubnd-01", "UBND xã Kỳ Hoa", "18814", "18829", 18.07, 106.29, "commune_office"),
    _row("ka-school-02", "Trường TH Kỳ Tân", "18814", "18814", 18.08, 106.30, "school"),
    _row("ka-ubnd-03", "UBND xã Kỳ Khang (Kỳ Thư cũ)", "18790", "18805", 18.10, 106.25,
         "commune_office"),
    _row("hk-ubnd-01", "UBND xã Phúc Trạch (Hương Trạch cũ)", "18547", "18553", 18.18, 105.70,
         "commune_office"),
    _row("hk-health-02", "Trạm y tế Phúc Trạch", "18547", "18547", 18.19, 105.71,
         "health_station"),
    #: Stops reporting two hours before "now": the silent probe.
    _row("hk-silent-03", "UBND xã Hương Bình (Phúc Đồng cũ)", "18523", "18514", 18.22, 105.66,
         "commune_office"),
    #: Sent its last result and status 10 days ago; still in the registry.
    _row("hk-dead-04", "UBND xã Hương Khê", "18496", "18496", 18.17, 105.71, "commune_office"),
    #: Silent for an hour, then removed from the registry: must stop alerting.
    _row("ht-removed-05", "Trường THCS Thành Sen", "18073", "18073", 18.34, 105.90, "school"),
])
SILENT_PROBE = "hk-silent-03"
DEAD_PROBE = "hk-dead-04"
REMOVED_PROBE = "ht-removed-05"
OFFLINE_PROBE = "hk-health-02"      # last status: offline (the retained last will)
UNSYNCED_PROBE = "ka-school-02"     # last status: clock not synced
LOSSY_PROBE = "ka-ubnd-03"          # 5 % loss in the last 40 minutes
SPOOL_PROBE = "hk-ubnd-01"          # spool growing in the last hour
OLD_AGENT_PROBE = "ka-ubnd-01"      # runs an older agent, rolled 0.2.0 back (issue 18)
UNREACHABLE_COMMUNE = "Xã Kỳ Khang"  # every third TSLCD test fails
#: Probes with data in the 48-hour window (the dead one's is 10 days old).
ACTIVE = [s for s in SITES if s.probe_id != DEAD_PROBE]
#: Pre-reform data: June 2025, for the old-district view.
LEGACY_START = datetime(2025, 6, 10, tzinfo=UTC)
LEGACY_END = datetime(2025, 6, 13, tzinfo=UTC)
#: (link, access, isp, base download Mb/s) per probe; speeds spread around the base.
LINKS = {
    "ka-ubnd-01": [("fibre", "fixed", "VNPT", 180.0), ("mobile", "mobile", "Viettel", 80.0)],
    "ka-school-02": [("fibre", "fixed", "Viettel", 140.0)],
    "ka-ubnd-03": [("fibre", "fixed", "FPT", 120.0), ("mobile", "mobile", "VinaPhone", 60.0)],
    "hk-ubnd-01": [("fibre", "fixed", "VNPT", 160.0), ("mobile", "mobile", "Viettel", 72.0)],
    "hk-health-02": [("mobile", "mobile", "MobiFone", 50.0)],
    "hk-silent-03": [("fibre", "fixed", "VNPT", 1100.0)],
    "hk-dead-04": [("fibre", "fixed", "VNPT", 90.0)],
    "ht-removed-05": [("fibre", "fixed", "FPT", 200.0)],
}
STEP = timedelta(minutes=20)
HOURS = 48


@dataclass
class DataSet:
    """The messages, and the data's time span (ms)."""

    now: datetime
    results: list[ResultMessage] = field(default_factory=list)
    statuses: list[StatusMessage] = field(default_factory=list)
    #: Outside the 48-hour window: the dead probe's last messages (10 days ago) and
    #: June 2025 throughput tests (before the reorganisation).
    old: list[ResultMessage | StatusMessage] = field(default_factory=list)
    legacy: list[ResultMessage] = field(default_factory=list)

    @property
    def start(self) -> datetime:
        """Earliest test start."""
        return min(r.started_at for r in self.results)

    def site(self, probe: str) -> Site:
        """The site of a probe."""
        return next(s for s in SITES if s.probe_id == probe)


def _limits_and_radio(access: str, i: int, busy: bool
                      ) -> tuple[dict[str, float], tuple[str, ...]]:
    """Issue 19's extras on a throughput result: radio levels on mobile links, and every
    13th test at the probe's own ceiling (flagged, its speed unchanged)."""
    extra: dict[str, float] = {}
    flags: tuple[str, ...] = ("cross_traffic",) if busy else ()
    if access == "mobile":
        # from i, not the data set's generator: the other figures stay as they were
        extra = {"radio_rsrp_dbm": float(-120 + i * 7 % 45),
                 "radio_sinr_db": float(-3 + i * 5 % 28), "radio_generation": 4.0}
    if i % 13 == 7:
        flags += ("at_device_ceiling", "device_limited")
    return extra, flags


def make_dataset(now: datetime | None = None, seed: int = 6) -> DataSet:
    """48 hours of results every 20 minutes per link, statuses every 20 minutes; the
    dead probe's last hour 10 days ago; three days of June 2025."""
    rng = random.Random(seed)
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    ds = DataSet(now)
    start = now - timedelta(hours=HOURS)
    t = start
    i = 0
    while t <= now - timedelta(minutes=1):
        for site in ACTIVE:
            probe = site.probe_id
            if probe == SILENT_PROBE and t > now - timedelta(hours=2):
                continue
            if probe == REMOVED_PROBE and t > now - timedelta(hours=1):
                continue
            for link, access, isp, base in LINKS[probe]:
                common = {"probe_id": probe, "link": link, "access": access, "isp": isp,
                          "agent_version": "0.1.0", "duration_s": 10.0}
                method = THROUGHPUT[i % 3]
                down = round(max(0.5, rng.gauss(base, base * 0.2)), 3)
                # Every 11th test shares the line with office traffic: slow, and flagged.
                busy = i % 11 == 5
                if busy:
                    down = round(down * 0.3, 3)
                up = round(down / 3, 3)
                extra, flags = _limits_and_radio(access, i, busy)
                ds.results.append(ResultMessage(
                    method=method, target="mlab-hn", started_at=t,
                    metrics=Metrics(download_mbps=down, upload_mbps=up,
                                    loaded_rtt_ms=round(rng.uniform(40, 90), 2),
                                    idle_rtt_ms=round(rng.uniform(8, 20), 2),
                                    **({"cross_traffic_mbps": 80.0} if busy else {}),
                                    **extra),
                    flags=flags, **common))
                recent = t > now - timedelta(minutes=40)
                loss = 5.0 if (probe == LOSSY_PROBE and recent) else rng.choice((0.0, 0.0, 1.0))
                ds.results.append(ResultMessage(
                    method=LATENCY[i % 4], target="8.8.8.8", started_at=t + timedelta(seconds=20),
                    metrics=Metrics(rtt_ms=round(rng.uniform(10, 60), 2),
                                    jitter_ms=round(rng.uniform(1, 8), 2), loss_pct=loss),
                    **common))
            first = LINKS[probe][0]
            link_common = {"probe_id": probe, "link": first[0], "access": first[1],
                           "isp": first[2], "agent_version": "0.1.0", "duration_s": 1.0}
            fail_tslcd = site.commune == UNREACHABLE_COMMUNE and i % 3 == 0
            ds.results.append(ResultMessage(
                method="reachability", target="tslcd-gw", started_at=t + timedelta(seconds=40),
                metrics=Metrics(loss_pct=100.0, reachable=0.0) if fail_tslcd
                else Metrics(rtt_ms=12.0, loss_pct=0.0, reachable=1.0),
                error=ErrorInfo(code="unreachable", message="no route to TSLCD gateway")
                if fail_tslcd else None, **link_common))
            # Like agent/methods/ipv6.py: not ready = an error result still carrying
            # ipv6_reachable=0; a broken test (tool missing) carries no metric at all.
            fail_v6 = probe in ("hk-ubnd-01", "ka-school-02") and i % 2 == 0
            broken = probe == "ka-ubnd-01" and i % 7 == 0
            ds.results.append(ResultMessage(
                method="ipv6", target="ipv6-test", started_at=t + timedelta(seconds=50),
                metrics=Metrics() if broken else Metrics(ipv6_reachable=0.0, loss_pct=100.0)
                if fail_v6 else Metrics(rtt_ms=30.0, ipv6_reachable=1.0),
                error=ErrorInfo(code="tool_missing", message="ping not found") if broken
                else ErrorInfo(code="unreachable", message="no IPv6 route") if fail_v6
                else None, **link_common))
            in_last_hour = t > now - timedelta(hours=1)
            spool = (10 + int((t - (now - timedelta(hours=1))).total_seconds() // 60)
                     if probe == SPOOL_PROBE and in_last_hour else 0)
            last_status = t + STEP > now - timedelta(minutes=1)
            old_agent = probe == OLD_AGENT_PROBE
            ds.statuses.append(StatusMessage(
                probe_id=probe, at=t + timedelta(seconds=55),
                agent_version="0.0.9" if old_agent else __version__,
                board_model="Raspberry Pi 4 Model B Rev 1.5",
                oldest_waiting_at=t - timedelta(minutes=5) if spool else None,
                update=UpdateStatus(failed={"0.2.0": "hash_mismatch"},
                                    last_event="release 0.2.0 not installed: hash_mismatch")
                if old_agent else None,
                state="offline" if (probe == OFFLINE_PROBE and last_status) else "online",
                spool_depth=spool, clock_synced=not (probe == UNSYNCED_PROBE and last_status),
                last_result_at=t, config_version=3,
                links=tuple(LinkStatus(name=ln, access=a, isp=isp,
                                       data_used_bytes=(i + 1) * 10_000_000,
                                       data_budget_bytes=5_000_000_000 if a == "mobile" else None)
                            for ln, a, isp, _b in LINKS[probe])))
        t += STEP
        i += 1
    dead_at = now - timedelta(days=10)
    for k in range(3):
        at = dead_at - timedelta(minutes=20 * k)
        ds.old.append(ResultMessage(
            method="iperf3", target="mlab-hn", started_at=at, probe_id=DEAD_PROBE,
            link="fibre", access="fixed", isp="VNPT", agent_version="0.1.0", duration_s=10.0,
            metrics=Metrics(download_mbps=90.0, upload_mbps=30.0)))
        ds.old.append(StatusMessage(probe_id=DEAD_PROBE, at=at, agent_version="0.1.0",
                                    state="online", spool_depth=0, clock_synced=True))
    t, n = LEGACY_START, 0
    while t < LEGACY_END:
        for site in ACTIVE:
            for link, access, isp, base in LINKS[site.probe_id]:
                down = round(max(0.5, rng.gauss(base * 0.8, base * 0.2)), 3)
                ds.legacy.append(ResultMessage(
                    method=THROUGHPUT[n % 3], target="mlab-hn", started_at=t,
                    probe_id=site.probe_id, link=link, access=access, isp=isp,
                    agent_version="0.1.0", duration_s=10.0,
                    metrics=Metrics(download_mbps=down, upload_mbps=round(down / 3, 3))))
        t += timedelta(hours=2)
        n += 1
    return ds


def local_hour(msg: ResultMessage) -> float:
    """The test's start hour in Vietnam time (what ``local_hour`` should hold)."""
    return float(msg.started_at.astimezone(VN).hour)


# --------------------------------------------------------------------------- fake Grafana


def _regex_escape(value: str) -> str:
    # Grafana's InfluxDB data source escapes these in regex-formatted variable values.
    return re.sub(r"[\\^$*+?.()|\[\]{}/]", lambda m: "\\" + m.group(0), value)


def fake_grafana_interpolate(query: str, start_ms: int, end_ms: int, interval: str = "1h",
                             variables: dict[str, list[str] | None] | None = None,
                             resolution: str | None = None) -> str:
    """FAKE of Grafana's InfluxDB data source interpolation (Grafana cannot run here).

    ``$timeFilter`` -> ``time >= Xms and time <= Yms``; ``$__interval``; each template
    variable -> ``.*`` for All (None / missing), the escaped value, or ``(a|b)`` (with
    ``:percentencode``: ``.*`` or the value percent-encoded, ``{a,b}`` for several); the
    hidden single-value ``$resolution`` -> ``resolution`` as is (Grafana does not escape
    a variable that is neither multi-value nor "All"; versions that regex-escape every
    variable of a query holding a regex leave ``raw``/``1h``/``1d`` unchanged too), which
    :func:`fake_grafana_resolution` gets from influxd as Grafana would.
    """
    variables = variables or {}
    out = query.replace("$timeFilter", f"time >= {start_ms}ms and time <= {end_ms}ms")
    out = out.replace("$__interval", interval)
    for name, value in (("__from", start_ms), ("__to", end_ms)):
        out = out.replace("${" + name + "}", str(value)).replace("$" + name, str(value))
    if resolution is not None:
        out = out.replace("${resolution}", resolution).replace("$resolution", resolution)
    for name in ("commune", "isp", "access", "probe"):
        values = variables.get(name)
        # ${name:percentencode}: Grafana's encodeURIComponentStrict of the value (of
        # "{a,b}" for several); a custom all value (.*) is inserted unformatted
        encoded = ".*" if not values else urllib.parse.quote(
            values[0] if len(values) == 1 else "{" + ",".join(values) + "}", safe="")
        out = out.replace("${" + name + ":percentencode}", encoded)
        if not values:
            rendered = ".*"
        elif len(values) == 1:
            rendered = _regex_escape(values[0])
        else:
            rendered = "(" + "|".join(_regex_escape(v) for v in values) + ")"
        out = out.replace(f"${name}", rendered)
    leftover = re.findall(r"\$\w+", out)
    assert not leftover, f"uninterpolated macros {leftover} in {out}"
    return out


def fake_grafana_resolution(client: InfluxClient, query: str, start_ms: int,
                            end_ms: int) -> str:
    """FAKE of Grafana refreshing a hidden query variable on a time range change: the
    variable's query with ``${__from}``/``${__to}`` substituted, run on influxd; the
    value is the first row's second column (its first is the time), as Grafana's InfluxDB
    data source takes it from a ``SELECT``."""
    series = client.query(fake_grafana_interpolate(query, start_ms, end_ms))[0]
    values = [str(row[1]) for s in series for row in s.values]
    assert values, f"variable query returned nothing: {query}"
    return values[0]


def fake_grafana_variable_options(values: list[str], regex: str) -> list[tuple[str, str]]:
    """FAKE of Grafana's variable regex: ``(text, value)`` per option; named groups
    ``text``/``value`` (JavaScript ``(?<name>``) split a string, else it is both."""
    if not regex:
        return [(v, v) for v in values]
    pattern = re.compile(regex.strip("/").replace("(?<", "(?P<"))
    out = []
    for v in values:
        m = pattern.search(v)
        if m:
            groups = m.groupdict()
            value = groups.get("value") or groups.get("text") or v
            out.append((groups.get("text") or value, value))
    return out


# --------------------------------------------------------------------------- expectations


def influx_percentile(values: list[float], pct: float) -> float:
    """InfluxQL's nearest-rank percentile."""
    ordered = sorted(values)
    i = math.floor(len(ordered) * pct / 100.0 + 0.5) - 1
    return ordered[min(max(i, 0), len(ordered) - 1)]


def influx_percentile_or_none(values: list[float], pct: float) -> float | None:
    """:func:`influx_percentile`, or None where InfluxQL returns no value: the rank is
    below 1 (fewer than 5 values for the 10th percentile)."""
    if math.floor(len(values) * pct / 100.0 + 0.5) < 1:
        return None
    return influx_percentile(values, pct)


def throughput(ds: DataSet, access: str | None, start: datetime, end: datetime,
               **tags: str) -> list[tuple[ResultMessage, Site]]:
    """Successful throughput results in [start, end] matching access and site tags, without
    the cross-traffic-flagged ones (dashboards and bulletin exclude them)."""
    out = []
    for r in ds.results:
        site = ds.site(r.probe_id)
        if (r.method in THROUGHPUT and r.ok and "cross_traffic" not in r.flags
                and (access is None or r.access == access)
                and start <= r.started_at <= end
                and all(getattr(site, k, None) == v or getattr(r, k, None) == v
                        for k, v in tags.items())):
            out.append((r, site))
    return out


def downloads(rows: list[tuple[ResultMessage, Site]]) -> list[float]:
    """The download values of those results."""
    return [r.metrics.download_mbps for r, _s in rows if r.metrics.download_mbps is not None]


def median(values: list[float]) -> float:
    """Median as InfluxQL computes it (mean of the middle two for an even count)."""
    return float(statistics.median(values))


def share_at_least(values: list[float], target: float) -> float:
    """Percent of values >= target."""
    return 100.0 * sum(v >= target for v in values) / len(values)


def bucket_start(when: datetime, resolution: str) -> datetime:
    """The start of the UTC hour (``1h``) or Vietnam day (``1d``) holding ``when``: a
    rollup point's time."""
    local = when.astimezone(UTC if resolution == "1h" else VN)
    return (local.replace(minute=0, second=0, microsecond=0) if resolution == "1h"
            else local.replace(hour=0, minute=0, second=0, microsecond=0))


def bucket_values(results: list[ResultMessage], ds: DataSet, resolution: str,
                  start: datetime, end: datetime, access: str | None = None,
                  metric: str = "download_mbps", **tags: str
                  ) -> dict[tuple[str, str, datetime], list[float]]:
    """What the rollups should hold, computed here from the messages: the values of
    successful idle-line throughput tests per line (probe, link) and UTC hour (``1h``)
    or Vietnam day (``1d``), for the buckets whose start (a rollup point's time) lies in
    [start, end]."""
    out: dict[tuple[str, str, datetime], list[float]] = {}
    for r in results:
        site = ds.site(r.probe_id)
        value = getattr(r.metrics, metric)
        if (r.method not in THROUGHPUT or not r.ok or "cross_traffic" in r.flags
                or value is None or (access is not None and r.access != access)
                or not all(getattr(site, k, None) == v or getattr(r, k, None) == v
                           for k, v in tags.items())):
            continue
        bucket = bucket_start(r.started_at, resolution)
        if start <= bucket <= end:
            out.setdefault((r.probe_id, r.link, bucket), []).append(value)
    return out


def medians_of(buckets: dict[tuple[str, str, datetime], list[float]]) -> list[float]:
    """Each bucket's median (what a rollup point's ``median_mbps`` holds)."""
    return [median(v) for v in buckets.values()]
