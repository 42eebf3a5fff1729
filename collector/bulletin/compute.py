"""Turn a month's raw tests into the bulletin's figures (the report model).

All speed figures come from :mod:`collector.bulletin.stats` applied to the individual
tests of each group. Exclusions, applied the same way everywhere:

- failed tests (``status=error``) are counted per group, never averaged in;
- tests flagged ``cross_traffic`` (the line was busy with other traffic) are counted and
  excluded, so a busy office line is not mistaken for a slow network;
- a group with fewer valid tests than ``bulletin.min_tests`` is "insufficient data":
  its figures are shown in the CSV but it is not rated against the target.
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
    Lines,
    Month,
    Tests,
    TrendPoint,
)
from collector.bulletin.i18n import sort_key
from collector.config import BulletinSettings, Targets
from netmon.contract import Access

#: ``no_target``: enough tests but nothing to rate against (upload: the plan sets no target).
Rating = Literal["meets", "below", "insufficient", "no_data", "no_target"]
ACCESS_ORDER: tuple[Access, ...] = ("fixed", "mobile")


@dataclass
class SpeedStat:
    """One direction's statistics for one group, and how it rates against the target."""

    summary: stats.Summary
    probes: int
    target: float | None
    rating: Rating


@dataclass
class GroupRow:
    """Speed figures of one group (a district, commune, ISP, period... per access type)."""

    section: str
    access: str
    district: str = ""
    commune: str = ""
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
    """Share of expected throughput tests that arrived, for a district (or the province)."""

    district: str
    lines: int
    probes: int
    arrived: int
    expected: float
    share: float | None


@dataclass
class CommuneReach:
    """IPv6 readiness and TSLCD reachability of one commune."""

    district: str
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
    headline: list[Headline] = field(default_factory=list)
    districts: list[GroupRow] = field(default_factory=list)
    communes: list[GroupRow] = field(default_factory=list)
    isps: list[GroupRow] = field(default_factory=list)
    periods: list[GroupRow] = field(default_factory=list)
    latency: list[LatencyRow] = field(default_factory=list)
    availability: list[AvailabilityRow] = field(default_factory=list)
    reach: list[CommuneReach] = field(default_factory=list)
    trend: list[TrendPoint] = field(default_factory=list)
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
        return ([h.row for h in self.headline] + self.districts + self.communes + self.isps
                + self.periods)


def _rating(s: stats.Summary, target: float | None, min_tests: int) -> Rating:
    if s.tests == 0:
        return "no_data"
    if not stats.has_enough(s.tests, min_tests):
        return "insufficient"
    if target is None or s.median is None:
        return "no_target"
    return "meets" if s.median >= target else "below"


class _Ctx:
    """Per-line attributes as arrays, for fast grouping of the test arrays."""

    def __init__(self, lines: Lines, tests: Tests) -> None:
        self.lines = lines
        self.tests = tests
        self.attr = {t: lines.column(t) for t in ("probe", "access", "isp", "commune",
                                                   "district")}
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
    order = idx_all[np.argsort(gid[idx_all], kind="stable")]
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
                       commune=parts.get("commune", ""), isp=parts.get("isp", ""),
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
            probes = int(np.unique(ctx.line_probe[line_ids[has]]).size)
            setattr(row, direction, SpeedStat(summ, probes, target,
                                              _rating(summ, target, min_tests)))
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


def build_report(month: Month, lines: Lines, tput: Tests, lat: Tests, lat_lines: Lines,
                 ipv6: list[CommuneCount], reach: list[CommuneCount],
                 trend: list[TrendPoint], settings: BulletinSettings, targets: Targets,
                 now: datetime | None = None) -> Report:
    """Compute every figure of the bulletin."""
    now = now or datetime.now(UTC)
    mt = settings.min_tests
    ctx = _Ctx(lines, tput)
    a = ctx.attr
    valid_all = tput.ok & ~tput.cross
    totals = Totals(
        results=tput.size, valid=int(np.count_nonzero(valid_all)),
        failed=int(np.count_nonzero(~tput.ok)),
        cross_traffic=int(np.count_nonzero(tput.ok & tput.cross)),
        probes=len(set(a["probe"])), lines=len(lines),
        communes=len({(d, c) for d, c in zip(a["district"], a["commune"], strict=True)}),
        districts=len(set(a["district"])), latency_results=lat.size)
    rep = Report(month=month, province=settings.province, generated_at=now, min_tests=mt,
                 peak=(settings.peak_start_hour, settings.peak_end_hour), targets=targets,
                 totals=totals, trend=trend)

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
    rep.districts = _sort_rows(_group_rows(
        ctx, "district", lambda i: (a["district"][i], a["access"][i]),
        ("district", "access"), targets, mt))
    rep.communes = _sort_rows(_group_rows(
        ctx, "commune", lambda i: (a["district"][i], a["commune"][i], a["access"][i]),
        ("district", "commune", "access"), targets, mt))
    rep.isps = _sort_rows(_group_rows(
        ctx, "isp", lambda i: (a["isp"][i], a["access"][i]), ("isp", "access"), targets, mt))
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
    rep.latency = _latency(lat_lines, lat, tput, ctx)
    rep.availability = _availability(ctx, month, settings, now)
    rep.reach = _reach(ipv6, reach)
    return rep


def _latency(lat_lines: Lines, lat: Tests, tput: Tests, ctx: _Ctx) -> list[LatencyRow]:
    out: list[LatencyRow] = []
    lat_access = np.array(lat_lines.column("access") or [""], dtype=object)
    lat_district = np.array(lat_lines.column("district") or [""], dtype=object)
    t_access = np.array(ctx.attr["access"] or [""], dtype=object)
    t_district = np.array(ctx.attr["district"] or [""], dtype=object)
    districts = set(lat_lines.column("district")) | set(ctx.attr["district"])
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


def _availability(ctx: _Ctx, month: Month, settings: BulletinSettings,
                  now: datetime) -> list[AvailabilityRow]:
    """Arrived / expected throughput tests per line, summed per district.

    A line is expected from the local midnight before its first result of the month (a
    probe installed mid-month is not blamed for the days before it existed) until the end
    of the month, or now if the month is not over.
    """
    t = ctx.tests
    n_lines = len(ctx.lines)
    if not n_lines or not t.size:
        return []
    arrived = np.bincount(t.line, minlength=n_lines)
    first = np.full(n_lines, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, t.line, t.time_ms)
    start_ms, end_ms = month.bounds_ms()
    end_ms = min(end_ms, int(now.timestamp() * 1000))
    off = month.start().utcoffset()
    off_ms = int(off.total_seconds() * 1000) if off else 0
    day = 86_400_000
    first_day = ((first + off_ms) // day) * day - off_ms
    first_day = np.maximum(first_day, start_ms)
    expected = np.maximum(end_ms - first_day, 0) / day * settings.expected_tests_per_day
    got = np.minimum(arrived, expected)
    rows: list[AvailabilityRow] = []
    districts = np.array(ctx.attr["district"], dtype=object)
    # "" is the province row; lines without a district tag count only towards it.
    for d in ["", *sorted((x for x in set(ctx.attr["district"]) if x), key=sort_key)]:
        m = np.ones(n_lines, bool) if not d else districts == d
        exp = float(expected[m].sum())
        rows.append(AvailabilityRow(
            district=d, lines=int(m.sum()),
            probes=int(np.unique(ctx.line_probe[m]).size), arrived=int(arrived[m].sum()),
            expected=exp, share=float(got[m].sum() / exp) if exp > 0 else None))
    return rows


def _reach(ipv6: list[CommuneCount], reach: list[CommuneCount]) -> list[CommuneReach]:
    out: dict[tuple[str, str], CommuneReach] = {}
    for c in ipv6:
        r = out.setdefault((c.district, c.commune), CommuneReach(c.district, c.commune))
        r.ipv6_ok, r.ipv6_failed = c.ok, c.failed
    for c in reach:
        r = out.setdefault((c.district, c.commune), CommuneReach(c.district, c.commune))
        r.reach_ok, r.reach_failed, r.reach_rtt_ms = c.ok, c.failed, c.rtt_median_ms
    return [out[k] for k in sorted(out, key=lambda k: (sort_key(k[0]), sort_key(k[1])))]
