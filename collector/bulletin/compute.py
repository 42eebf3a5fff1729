"""Turn a month's raw tests into the bulletin's figures (the report model).

All speed figures come from :mod:`collector.bulletin.stats` applied to the individual
tests of each group. Exclusions, applied the same way everywhere:

- failed tests (``status=error``) are counted per group, never averaged in;
- tests flagged ``cross_traffic`` (the line was busy with other traffic) are counted and
  excluded, so a busy office line is not mistaken for a slow network;
- valid tests flagged ``device_limited`` (the probe's port, modem or CPU set the speed)
  stay in the figures but are counted: they cannot verify a plan above the probe's
  ceiling, and the methodology says how many there were;
- a group with fewer valid tests than ``bulletin.min_tests``, or fewer probe-days
  (distinct probe x local day with a valid test) than ``bulletin.min_probe_days``, is
  "insufficient data": its figures are shown in the CSV but it is not rated.

Units are those of the current map (:class:`collector.core.units.UnitMap`): every unit is
listed, with or without probes. Months before the map took effect also get the legacy view
by old district and old commune.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from collector.bulletin import stats
from collector.bulletin.data import (
    CommuneCount,
    LineActivity,
    Lines,
    Month,
    Tests,
    TrendPoint,
    UnitTrendPoint,
)
from collector.bulletin.i18n import sort_key
from collector.bulletin.reference import ReferenceMedian
from collector.config import BulletinSettings, Targets
from collector.core.units import UnitMap
from netmon.contract import Access

#: ``no_target``: enough tests but nothing to rate against (upload: the plan sets no target).
#: ``no_probe``: a unit of the map with no measurement point (no probe in the registry and
#: no result).
Rating = Literal["meets", "below", "insufficient", "no_data", "no_target", "no_probe"]
#: Worst first: how rows of one access type are ordered in the unit and ISP tables.
RATING_RANK: dict[str, int] = {"below": 0, "meets": 1, "no_target": 1, "insufficient": 2,
                               "no_data": 3, "no_probe": 4}
ACCESS_ORDER: tuple[Access, ...] = ("fixed", "mobile")


@dataclass
class SpeedStat:
    """One direction's statistics for one group, and how it rates against the target."""

    summary: stats.Summary
    probes: int
    target: float | None
    rating: Rating
    #: Distinct (probe, local day) pairs with a valid test in this direction.
    probe_days: int = 0


@dataclass
class GroupRow:
    """Speed figures of one group (a district, commune, ISP, period... per access type)."""

    section: str
    access: str
    district: str = ""
    commune: str = ""
    commune_code: str = ""
    isp: str = ""
    period: str = ""
    failed: int = 0
    cross_traffic: int = 0
    download: SpeedStat | None = None
    upload: SpeedStat | None = None


@dataclass
class LatencyRow:
    """Latency figures for one access type (and district)."""

    access: str
    district: str
    tests: int
    failed: int
    rtt_median: float | None
    rtt_p90: float | None
    jitter_median: float | None
    loss_mean: float | None
    idle_rtt_median: float | None
    loaded_rtt_median: float | None
    loaded_tests: int


@dataclass
class AvailabilityRow:
    """Share of expected tests that arrived, for a unit, an old district or the province
    (all keys empty)."""

    district: str
    lines: int
    probes: int
    arrived: int
    expected: float
    share: float | None
    commune_code: str = ""
    commune: str = ""
    #: Lines whose expectation comes from their agent's reported plan (the rest: config).
    reported_lines: int = 0


@dataclass
class CommuneReach:
    """IPv6 readiness and TSLCD reachability of one unit."""

    commune_code: str
    commune: str
    ipv6_ok: int = 0
    ipv6_failed: int = 0
    reach_ok: int = 0
    reach_failed: int = 0
    reach_rtt_ms: float | None = None

    @property
    def ipv6_share(self) -> float | None:
        """Share of IPv6 tests that succeeded."""
        n = self.ipv6_ok + self.ipv6_failed
        return self.ipv6_ok / n if n else None

    @property
    def reach_share(self) -> float | None:
        """Share of reachability tests that succeeded."""
        n = self.reach_ok + self.reach_failed
        return self.reach_ok / n if n else None


@dataclass
class Headline:
    """Province figures for one access type, with the previous month."""

    access: str
    row: GroupRow
    prev_download: float | None
    prev_upload: float | None
    download_change_pct: float | None
    upload_change_pct: float | None


@dataclass
class Totals:
    """Counts over the whole month."""

    results: int = 0
    valid: int = 0
    failed: int = 0
    cross_traffic: int = 0
    device_limited: int = 0
    probes: int = 0
    lines: int = 0
    communes: int = 0
    districts: int = 0
    latency_results: int = 0


@dataclass
class Report:
    """Everything the bulletin shows."""

    month: Month
    province: str
    generated_at: datetime
    min_tests: int
    peak: tuple[int, int]
    targets: Targets
    totals: Totals
    min_probe_days: int = 1
    #: The month starts before the reference map took effect: the legacy view is shown.
    legacy: bool = False
    #: The day the current map took effect (for the labels).
    effective: str = ""
    headline: list[Headline] = field(default_factory=list)
    #: Legacy view (months before ``effective``): by old district and old commune.
    districts: list[GroupRow] = field(default_factory=list)
    legacy_communes: list[GroupRow] = field(default_factory=list)
    #: Every unit of the current map per access type, worst first.
    communes: list[GroupRow] = field(default_factory=list)
    isps: list[GroupRow] = field(default_factory=list)
    periods: list[GroupRow] = field(default_factory=list)
    latency: list[LatencyRow] = field(default_factory=list)
    availability: list[AvailabilityRow] = field(default_factory=list)
    reach: list[CommuneReach] = field(default_factory=list)
    trend: list[TrendPoint] = field(default_factory=list)
    #: Each unit's monthly median download, this month and the 11 before it.
    unit_trend: list[UnitTrendPoint] = field(default_factory=list)
    #: i-Speed medians the NOC entered for this month (absent when none).
    reference: list[ReferenceMedian] = field(default_factory=list)
    #: Per access type, every valid download value (for the distribution chart).
    distributions: dict[str, NDArray[np.float64]] = field(default_factory=dict)

    @property
    def has_data(self) -> bool:
        """False when the month holds no throughput result at all."""
        return self.totals.results > 0

    @property
    def below_target(self) -> list[GroupRow]:
        """Rated communes whose median download is under the target."""
        return [r for r in self.communes if r.download and r.download.rating == "below"]

    @property
    def insufficient(self) -> list[GroupRow]:
        """Communes with too few tests to be rated."""
        return [r for r in self.communes
                if r.download and r.download.rating in ("insufficient", "no_data")]

    def rows(self) -> list[GroupRow]:
        """Every speed row, in CSV order."""
        return ([h.row for h in self.headline] + self.districts + self.legacy_communes
                + self.communes + self.isps + self.periods)


def _rating(s: stats.Summary, target: float | None, min_tests: int, probe_days: int = 0,
            min_probe_days: int = 1) -> Rating:
    if s.tests == 0:
        return "no_data"
    if not (stats.has_enough(s.tests, min_tests) and probe_days >= min_probe_days):
        return "insufficient"
    if target is None or s.median is None:
        return "no_target"
    return "meets" if s.median >= target else "below"


class _Ctx:
    """Per-line attributes as arrays, for fast grouping of the test arrays."""

    def __init__(self, lines: Lines, tests: Tests, month: Month, min_probe_days: int = 1
                 ) -> None:
        self.lines = lines
        self.tests = tests
        self.min_probe_days = min_probe_days
        self.attr = {t: lines.column(t) for t in ("probe", "link", "access", "isp",
                                                   "commune_code", "commune", "district",
                                                   "old_commune")}
        # Local day of the month of each test, for probe-days.
        start_ms, _ = month.bounds_ms()
        self.day = ((tests.time_ms - start_ms) // 86_400_000).astype(np.int64)
        self._line_p20: dict[str, NDArray[np.float64]] = {}
        probe_codes: dict[str, int] = {}
        self.line_probe = np.array([probe_codes.setdefault(p, len(probe_codes))
                                    for p in self.attr["probe"]], dtype=np.int64)

    def line_p20(self, field_name: str) -> NDArray[np.float64]:
        """Each line's 20th percentile over its valid tests (NaN without any), cached."""
        if field_name not in self._line_p20:
            t = self.tests
            valid = t.ok & ~t.cross
            ids, p20 = stats.grouped_percentile(t.values[field_name][valid], t.line[valid], 20)
            full = np.full(len(self.lines), np.nan)
            full[ids] = p20
            self._line_p20[field_name] = full
        return self._line_p20[field_name]


def _group_rows(ctx: _Ctx, section: str, key: Callable[[int], tuple[str, ...]],
                fields: tuple[str, ...], targets: Targets, min_tests: int,
                mask: NDArray[np.bool_] | None = None,
                period: str = "") -> list[GroupRow]:
    """Rows for the groups ``key(line_id)`` defines (``fields`` name the key's parts)."""
    t = ctx.tests
    keys: dict[tuple[str, ...], int] = {}
    line_gid = np.array([keys.setdefault(key(i), len(keys)) for i in range(len(ctx.lines))],
                        dtype=np.int64)
    if not keys or not t.size:
        return []
    gid = line_gid[t.line]
    idx_all = np.arange(t.size) if mask is None else np.flatnonzero(mask)
    order = idx_all[stats.stable_order(gid[idx_all])]
    sorted_gid = gid[order]
    bounds = np.flatnonzero(np.diff(sorted_gid)) + 1
    starts = np.concatenate([[0], bounds]) if order.size else np.zeros(0, np.int64)
    ends = np.concatenate([bounds, [order.size]]) if order.size else np.zeros(0, np.int64)
    inv = {v: k for k, v in keys.items()}
    out: list[GroupRow] = []
    dl_all, ul_all = t.values["download_mbps"], t.values["upload_mbps"]
    for s, e in zip(starts, ends, strict=True):
        idx = order[s:e]
        k = inv[int(sorted_gid[s])]
        parts = dict(zip(fields, k, strict=True))
        access = parts.get("access", "")
        ok = t.ok[idx]
        valid = ok & ~t.cross[idx]
        row = GroupRow(section=section, access=access, district=parts.get("district", ""),
                       commune=parts.get("commune", ""),
                       commune_code=parts.get("commune_code", ""), isp=parts.get("isp", ""),
                       period=period, failed=int(np.count_nonzero(~ok)),
                       cross_traffic=int(np.count_nonzero(ok & t.cross[idx])))
        line_ids = t.line[idx][valid]
        for direction, arr, target in (
                ("download", dl_all, targets.for_access(access)
                 if access in ACCESS_ORDER else None),
                ("upload", ul_all, None)):
            v = arr[idx][valid]
            has = ~np.isnan(v)
            # Without a mask every group holds whole lines: per-line 20th percentiles are
            # the same in every grouping, so compute them once.
            lp = ctx.line_p20(f"{direction}_mbps") if mask is None else None
            summ = stats.summarize(v, line_ids, target, lp)
            probes = int(stats.distinct(ctx.line_probe[line_ids[has]]).size)
            days = ctx.day[idx][valid][has]
            pdays = int(stats.distinct(ctx.line_probe[line_ids[has]] * 64 + days).size)
            setattr(row, direction, SpeedStat(
                summ, probes, target,
                _rating(summ, target, min_tests, pdays, ctx.min_probe_days), pdays))
        out.append(row)
    return out


def _sort_rows(rows: list[GroupRow]) -> list[GroupRow]:
    def k(r: GroupRow) -> tuple[object, ...]:
        acc = ACCESS_ORDER.index(r.access) if r.access in ACCESS_ORDER else 9
        return (sort_key(r.district), sort_key(r.commune), sort_key(r.isp), acc, r.period)
    return sorted(rows, key=k)


def local_hours(time_ms: NDArray[np.int64], month: Month) -> NDArray[np.int64]:
    """Local hour of day (0-23) of each timestamp in the bulletin's time zone."""
    start, end = month.start(), month.end()
    off_a, off_b = start.utcoffset(), end.utcoffset()
    if off_a == off_b and off_a is not None:
        # Fixed offset over the month (always so for Asia/Ho_Chi_Minh): vectorised.
        off_s = int(off_a.total_seconds())
        return ((time_ms // 1000 + off_s) // 3600) % 24
    tz = start.tzinfo
    return np.array([datetime.fromtimestamp(ms / 1000, tz).hour for ms in time_ms.tolist()],
                    dtype=np.int64)


def _worst_first(rows: list[GroupRow], name: Callable[[GroupRow], str]) -> list[GroupRow]:
    """Per access type: below target (slowest first), meets, insufficient, no data, no
    measurement point; ties by name."""
    def k(r: GroupRow) -> tuple[object, ...]:
        acc = ACCESS_ORDER.index(r.access) if r.access in ACCESS_ORDER else 9
        d = r.download
        rating = d.rating if d else "no_data"
        med = d.summary.median if d and d.summary.median is not None else float("inf")
        return (acc, RATING_RANK.get(rating, 5), med, sort_key(name(r)))
    return sorted(rows, key=k)


def _empty_stat(target: float | None, rating: Rating) -> SpeedStat:
    return SpeedStat(stats.Summary(0, None, None, None, None, None, None), 0, target, rating)


def _unit_rows(ctx: _Ctx, units: UnitMap, registered: dict[str, set[str]],
               targets: Targets, min_tests: int) -> list[GroupRow]:
    """Every unit of the map x access type; units without results get a placeholder."""
    a = ctx.attr
    got = {(r.commune_code, r.access): r for r in _group_rows(
        ctx, "commune", lambda i: (a["commune_code"][i], a["commune"][i], a["access"][i]),
        ("commune_code", "commune", "access"), targets, min_tests)}
    rows: list[GroupRow] = []
    for acc in ACCESS_ORDER:
        target = targets.for_access(acc)
        for unit in units.sorted_units():
            row = got.pop((unit.code, acc), None)
            if row is None:
                has_probe = bool(registered.get(unit.code)) or any(
                    c == unit.code for c, _ in got)
                rating: Rating = "no_data" if has_probe else "no_probe"
                row = GroupRow(section="commune", access=acc, commune=unit.name,
                               commune_code=unit.code, download=_empty_stat(target, rating),
                               upload=_empty_stat(None, rating))
            rows.append(row)
    # Results no unit of the map holds (a probe unknown to the registry): shown, unrated.
    rows += got.values()
    return _worst_first(rows, lambda r: r.commune)


def device_limited_count(tput: Tests, valid: NDArray[np.bool_]) -> int:
    """Valid tests whose speed the probe set (``device_limited`` field 1; older points
    without the field count as not limited)."""
    flag = tput.values.get("device_limited")
    if flag is None:
        return 0
    return int(np.count_nonzero(valid & (np.nan_to_num(flag, nan=0.0) > 0)))


def build_report(month: Month, lines: Lines, tput: Tests, lat: Tests, lat_lines: Lines,
                 ipv6: list[CommuneCount], reach: list[CommuneCount],
                 trend: list[TrendPoint], settings: BulletinSettings, targets: Targets,
                 now: datetime | None = None, *, units: UnitMap,
                 registered: dict[str, set[str]] | None = None,
                 unit_trend: list[UnitTrendPoint] | None = None,
                 activity: dict[tuple[str, str], LineActivity] | None = None,
                 reference: list[ReferenceMedian] | None = None) -> Report:
    """Compute every figure of the bulletin.

    ``registered``: unit code -> probes the registry places there (units without any are
    "no measurement point"); ``activity``: every line's results of all methods and its
    reported plan (availability); ``reference``: this month's i-Speed rows.
    """
    now = now or datetime.now(UTC)
    mt, mpd = settings.min_tests, settings.min_probe_days
    registered = registered or {}
    ctx = _Ctx(lines, tput, month, mpd)
    a = ctx.attr
    valid_all = tput.ok & ~tput.cross
    legacy = month.start().date() < units.effective
    totals = Totals(
        results=tput.size, valid=int(np.count_nonzero(valid_all)),
        failed=int(np.count_nonzero(~tput.ok)),
        cross_traffic=int(np.count_nonzero(tput.ok & tput.cross)),
        probes=len(set(a["probe"])), lines=len(lines),
        communes=len({c for c, n in zip(a["commune_code"], a["commune"], strict=True)
                      if c or n}),
        districts=len(set(a["district"])), latency_results=lat.size,
        device_limited=device_limited_count(tput, valid_all))
    rep = Report(month=month, province=settings.province, generated_at=now, min_tests=mt,
                 peak=(settings.peak_start_hour, settings.peak_end_hour), targets=targets,
                 totals=totals, trend=trend, min_probe_days=mpd, legacy=legacy,
                 effective=units.effective.isoformat(), reference=list(reference or []))

    province = {r.access: r for r in _group_rows(ctx, "province", lambda i: (a["access"][i],),
                                                 ("access",), targets, mt)}
    # This month's trend point is the bulletin's own figure, not a second InfluxDB scan.
    rep.trend = [p for p in trend if p.month != month.label]
    for acc, row in province.items():
        d, u = row.download, row.upload
        rep.trend.append(TrendPoint(month.label, acc, d.summary.median if d else None,
                                    d.summary.tests if d else 0,
                                    u.summary.median if u else None,
                                    u.summary.tests if u else 0))
    prev = month.prev().label
    prev_pts = {p.access: p for p in trend if p.month == prev}
    for acc in ACCESS_ORDER:
        if acc not in province:
            continue
        row = province[acc]
        pp = prev_pts.get(acc)
        pdl = pp.download_median if pp and stats.has_enough(pp.download_tests, mt) else None
        pul = pp.upload_median if pp and stats.has_enough(pp.upload_tests, mt) else None
        cur_dl = row.download.summary.median if row.download else None
        cur_ul = row.upload.summary.median if row.upload else None
        rep.headline.append(Headline(acc, row, pdl, pul, stats.change_pct(cur_dl, pdl),
                                     stats.change_pct(cur_ul, pul)))
    if legacy:
        rep.districts = _sort_rows(_group_rows(
            ctx, "legacy_district", lambda i: (a["district"][i], a["access"][i]),
            ("district", "access"), targets, mt))
        rep.legacy_communes = _sort_rows(_group_rows(
            ctx, "legacy_commune",
            lambda i: (a["district"][i], a["old_commune"][i], a["access"][i]),
            ("district", "commune", "access"), targets, mt))
    # A month without any result says so; it does not list 69 empty units.
    rep.communes = _unit_rows(ctx, units, registered, targets, mt) if tput.size else []
    rep.unit_trend = [p for p in (unit_trend or []) if p.month != month.label]
    for r in rep.communes:
        if r.commune_code and r.download and r.download.summary.tests:
            rep.unit_trend.append(UnitTrendPoint(month.label, r.commune_code, r.access,
                                                 r.download.summary.median,
                                                 r.download.summary.tests))
    rep.isps = _worst_first(_group_rows(
        ctx, "isp", lambda i: (a["isp"][i], a["access"][i]), ("isp", "access"), targets, mt),
        lambda r: r.isp)
    if tput.size:
        hours = local_hours(tput.time_ms, month)
        peak = (hours >= settings.peak_start_hour) & (hours < settings.peak_end_hour)
        for name, m in (("peak", peak), ("off_peak", ~peak)):
            rep.periods += _group_rows(ctx, "period", lambda i: (a["access"][i],), ("access",),
                                       targets, mt, mask=m, period=name)
        rep.periods = _sort_rows(rep.periods)
    for acc in ACCESS_ORDER:
        sel = valid_all & (np.array([x == acc for x in a["access"]], dtype=bool)[tput.line]
                           if len(lines) else np.zeros(0, bool))
        v = tput.values["download_mbps"][sel]
        rep.distributions[acc] = v[~np.isnan(v)]
    rep.latency = _latency(lat_lines, lat, tput, ctx, legacy)
    rep.availability = _availability(ctx, month, settings, now, activity or {}, units,
                                     registered, legacy)
    rep.reach = _reach(ipv6, reach)
    return rep


def _latency(lat_lines: Lines, lat: Tests, tput: Tests, ctx: _Ctx, legacy: bool
             ) -> list[LatencyRow]:
    """Province rows per access type; old-district rows too in the legacy view."""
    out: list[LatencyRow] = []
    lat_access = np.array(lat_lines.column("access") or [""], dtype=object)
    lat_district = np.array(lat_lines.column("district") or [""], dtype=object)
    t_access = np.array(ctx.attr["access"] or [""], dtype=object)
    t_district = np.array(ctx.attr["district"] or [""], dtype=object)
    districts = (set(lat_lines.column("district")) | set(ctx.attr["district"])) if legacy \
        else set()
    # "" is the province row; lines without a district tag count only towards it.
    for district in ["", *sorted((d for d in districts if d), key=sort_key)]:
        for acc in ACCESS_ORDER:
            lm = (lat_access == acc) & ((lat_district == district) if district else True)
            tm = (t_access == acc) & ((t_district == district) if district else True)
            lsel = lm[lat.line] if lat.size else np.zeros(0, bool)
            tsel = tm[tput.line] if tput.size else np.zeros(0, bool)
            ok = lsel & lat.ok & ~lat.cross
            failed = int(np.count_nonzero(lsel & ~lat.ok))
            tvalid = tsel & tput.ok & ~tput.cross
            loaded = tput.values["loaded_rtt_ms"][tvalid]
            idle = tput.values["idle_rtt_ms"][tvalid]
            rtt = lat.values["rtt_ms"][ok]
            if not (rtt.size or failed or np.count_nonzero(~np.isnan(loaded))):
                continue
            out.append(LatencyRow(
                access=acc, district=district or "", tests=int(np.count_nonzero(ok)),
                failed=failed, rtt_median=stats.median(rtt),
                rtt_p90=stats.percentile(rtt, 90),
                jitter_median=stats.median(lat.values["jitter_ms"][ok]),
                loss_mean=stats.mean(lat.values["loss_pct"][ok]),
                idle_rtt_median=stats.median(idle), loaded_rtt_median=stats.median(loaded),
                loaded_tests=int(np.count_nonzero(~np.isnan(loaded)))))
    return out


def _availability(ctx: _Ctx, month: Month, settings: BulletinSettings, now: datetime,
                  activity: dict[tuple[str, str], LineActivity], units: UnitMap,
                  registered: dict[str, set[str]], legacy: bool) -> list[AvailabilityRow]:
    """Arrived / expected tests per line, summed per unit (or old district) and province.

    A line's expectation is what its agent reported (``expected_runs_per_day`` in the
    status, all methods, per local day), compared with its results of every method; a
    line whose agent never reported one is expected ``bulletin.expected_tests_per_day``
    throughput tests a day, compared with its throughput results. A line is expected from
    the local midnight before its first result of the month (a probe installed mid-month
    is not blamed for the days before) until the end of the month, or now; a line of a
    registered probe that reported a plan but sent nothing is expected all month.
    """
    start_ms, end_ms = month.bounds_ms()
    end_ms = min(end_ms, int(now.timestamp() * 1000))
    day = 86_400_000
    n_days = month.days()
    t = ctx.tests
    # Throughput results per (probe, link), and where each line stands.
    tput_n: dict[tuple[str, str], int] = {}
    first_t: dict[tuple[str, str], int] = {}
    place: dict[tuple[str, str], tuple[str, str]] = {}
    if t.size:
        counts = np.bincount(t.line, minlength=len(ctx.lines))
        first = np.full(len(ctx.lines), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, t.line, t.time_ms)
        for i in range(len(ctx.lines)):
            k = (ctx.attr["probe"][i], ctx.attr["link"][i])
            tput_n[k] = tput_n.get(k, 0) + int(counts[i])
            first_t[k] = min(first_t.get(k, first[i]), int(first[i]))
            place[k] = (ctx.attr["commune_code"][i], ctx.attr["district"][i])
    in_registry = {p for probes in registered.values() for p in probes}
    keys = set(tput_n) | {k for k, act in activity.items()
                          if act.results or (act.expected_per_day is not None
                                             and k[0] in in_registry)}
    rows_in: list[tuple[str, str, str, float, float, bool]] = []
    for k in sorted(keys):
        act = activity.get(k)
        code, district = place.get(k, ("", ""))
        if act is not None and not code:
            code, district = act.commune_code, act.district
        firsts = [x for x in (first_t.get(k), act.first_ms if act else None) if x is not None]
        first_ms = min(firsts) if firsts else start_ms
        first_day = max(0, (first_ms - start_ms) // day)
        # Covered share of each day of the month (the current month ends now).
        d0 = start_ms + np.arange(n_days) * day
        cover = np.clip((end_ms - d0) / day, 0.0, 1.0)
        cover[:first_day] = 0.0
        if act is not None and act.expected_per_day is not None:
            rate = np.nan_to_num(act.expected_per_day, nan=0.0)
            arrived = float(act.results)
            reported = True
        else:
            rate = np.full(n_days, settings.expected_tests_per_day)
            arrived = float(tput_n.get(k, 0))
            reported = False
        expected = float((rate * cover).sum())
        rows_in.append((k[0], code, district, arrived, expected, reported))
    if not rows_in:
        return []
    out: list[AvailabilityRow] = []

    def row(sel: list[tuple[str, str, str, float, float, bool]], **names: str
            ) -> AvailabilityRow:
        exp = sum(r[4] for r in sel)
        got = sum(min(r[3], r[4]) for r in sel)
        return AvailabilityRow(
            district=names.get("district", ""), lines=len(sel),
            probes=len({r[0] for r in sel}), arrived=int(sum(r[3] for r in sel)),
            expected=exp, share=got / exp if exp > 0 else None,
            commune_code=names.get("commune_code", ""), commune=names.get("commune", ""),
            reported_lines=sum(1 for r in sel if r[5]))

    out.append(row(rows_in))
    if legacy:
        for d in sorted({r[2] for r in rows_in if r[2]}, key=sort_key):
            out.append(row([r for r in rows_in if r[2] == d], district=d))
    else:
        for code in sorted({r[1] for r in rows_in if r[1]}):
            unit = units.get(code)
            out.append(row([r for r in rows_in if r[1] == code], commune_code=code,
                           commune=unit.name if unit else code))
    return out


def _reach(ipv6: list[CommuneCount], reach: list[CommuneCount]) -> list[CommuneReach]:
    out: dict[tuple[str, str], CommuneReach] = {}
    for c in ipv6:
        r = out.setdefault((c.commune_code, c.commune), CommuneReach(c.commune_code, c.commune))
        r.ipv6_ok, r.ipv6_failed = r.ipv6_ok + c.ok, r.ipv6_failed + c.failed
    for c in reach:
        r = out.setdefault((c.commune_code, c.commune), CommuneReach(c.commune_code, c.commune))
        r.reach_ok, r.reach_failed = r.reach_ok + c.ok, r.reach_failed + c.failed
        if c.rtt_median_ms is not None:
            r.reach_rtt_ms = max(r.reach_rtt_ms or 0.0, c.rtt_median_ms)
    return [out[k] for k in sorted(out, key=lambda k: (sort_key(k[1]), k[0]))]
