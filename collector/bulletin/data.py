"""Fetch one month of raw test results from InfluxDB into numpy arrays.

Raw values, not aggregates, are fetched for the speed statistics (medians and percentiles
over individual tests cannot be rebuilt from aggregates). To keep memory bounded the month
is read in time chunks (one local day by default), each grouped by the tags that identify
a line, so tag strings travel once per series and chunk rather than once per point. Only
the fields the bulletin uses are selected.

Counts for IPv6 readiness and TSLCD reachability, and the 12-month trend, are aggregated
by InfluxDB itself (``count()``, ``median()`` over the individual points), which is exact
and keeps those reads small.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from collector.core.influx import InfluxClient
from collector.core.registry import FOREVER_MS
from collector.core.schema import LINK_USAGE, RESULTS, Site, influxql_string, nfc
from netmon.contract import (
    THROUGHPUT_METHODS,
)
from netmon.errors import EXIT_INPUT, NetmonError

if TYPE_CHECKING:
    from collector.core.registry import Registry
    from collector.core.units import UnitMap

THROUGHPUT_FIELDS: tuple[str, ...] = ("download_mbps", "upload_mbps", "loaded_rtt_ms",
                                      "idle_rtt_ms", "device_limited")
LATENCY_FIELDS: tuple[str, ...] = ("rtt_ms", "jitter_ms", "loss_pct")
#: Tags read to identify one line (a probe's link) and where it stands.
LINE_TAGS: tuple[str, ...] = ("probe", "link", "access", "isp", "commune_code", "commune",
                              "district")
#: A line's attributes once placed on the current map (:class:`Placement`): the unit's
#: code and name, the old district and the old commune (for the legacy view).
LINE_KEYS: tuple[str, ...] = ("probe", "link", "access", "isp", "commune_code", "commune",
                              "district", "old_commune")

_MONTH_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


class MonthError(NetmonError, ValueError):
    """The month argument is not ``YYYY-MM``."""

    exit_code = EXIT_INPUT


@dataclass(frozen=True)
class Month:
    """A calendar month in the bulletin's time zone."""

    year: int
    month: int
    tz: str

    @classmethod
    def parse(cls, text: str, tz: str) -> Month:
        """``YYYY-MM`` -> Month; raises :class:`MonthError`."""
        m = _MONTH_RE.match(text.strip())
        if not m:
            raise MonthError(f"--month must be YYYY-MM (e.g. 2026-10), got {text!r}")
        year = int(m.group(1))
        if not 2000 <= year <= 2100:
            raise MonthError(f"--month year {year} is outside 2000-2100")
        return cls(year, int(m.group(2)), tz)

    @property
    def label(self) -> str:
        """``YYYY-MM``."""
        return f"{self.year:04d}-{self.month:02d}"

    def start(self) -> datetime:
        """Local midnight of the first day."""
        return datetime(self.year, self.month, 1, tzinfo=ZoneInfo(self.tz))

    def next(self) -> Month:
        """The following month."""
        return (Month(self.year + 1, 1, self.tz) if self.month == 12
                else Month(self.year, self.month + 1, self.tz))

    def prev(self) -> Month:
        """The previous month."""
        return (Month(self.year - 1, 12, self.tz) if self.month == 1
                else Month(self.year, self.month - 1, self.tz))

    def end(self) -> datetime:
        """Local midnight of the first day of the next month (exclusive)."""
        return self.next().start()

    def bounds_ms(self) -> tuple[int, int]:
        """[start, end) in epoch milliseconds."""
        return int(self.start().timestamp() * 1000), int(self.end().timestamp() * 1000)

    def days(self) -> int:
        """Number of days in the month."""
        return (self.end().date() - self.start().date()).days


class Placement:
    """Where a result stands on the current map, from its tags or, failing those, the registry.

    Results written since the collector tags ``commune_code`` carry their unit; older ones
    (no such tag) are placed by probe id through the site registry, with the entry in force
    at ``at_ms`` (the start of the slice being read: a local day for the month's figures, so
    a registry change, dated to a local midnight, is honoured exactly). An untagged result
    of a probe the registry does not know keeps its old names and no code.
    """

    def __init__(self, units: UnitMap, registry: Registry | None = None) -> None:
        self.units = units
        self.registry = registry
        #: Tags as written -> (key, from, until ms): the key holds while the registry's
        #: answer for the probe does (for most probes, the whole month).
        self._cache: dict[tuple[str | None, ...], tuple[tuple[str, ...], int, int]] = {}
        self._nfc: dict[tuple[str | None, ...], tuple[str, ...]] = {}
        self._placed: dict[tuple[tuple[str, ...], Site | None], tuple[str, ...]] = {}

    def key(self, tags: dict[str, str], at_ms: int) -> tuple[str, ...]:
        """The :data:`LINE_KEYS` tuple for a series' tags."""
        # Called per series and day (~90,000 times a month at 1,000 probes): each step is
        # cached on what it depends on (tags as written; their NFC form and the site).
        given = tuple(map(tags.get, LINE_TAGS))  # None: tag absent
        hit = self._cache.get(given)
        if hit is not None and hit[1] <= at_ms < hit[2]:
            return hit[0]
        raw = self._nfc.get(given)
        if raw is None:
            raw = self._nfc[given] = tuple(nfc(v or "") for v in given)
        if self.registry is None:
            site, lo, hi = None, -FOREVER_MS, FOREVER_MS
        else:
            site, lo, hi = self.registry.span(raw[0], at_ms)
        pk = (raw, site)
        found = self._placed.get(pk)
        if found is None:
            found = self._placed[pk] = self._place(raw, site)
        self._cache[given] = (found, lo, hi)
        return found

    def _place(self, raw: tuple[str, ...], site: Site | None) -> tuple[str, ...]:
        """:meth:`key` for NFC tags and the registry's site of the probe at that time."""
        probe, link, access, isp, code, commune, district = raw
        old_commune = ""
        if site is not None and site.legacy_commune_code:
            old = self.units.old_units.get(site.legacy_commune_code)
            old_commune = old.name if old else ""
        if not code:
            if site is not None and site.commune_code:
                # The registry's placement replaces the names the result was written with.
                if not old_commune:
                    old_commune = commune
                code, district = site.commune_code, site.district or district
            else:
                old_commune = commune
        elif site is None or site.commune_code != code:
            old_commune = ""  # the registry no longer vouches for this line's old unit
        unit = self.units.get(code) if code else None
        name = unit.name if unit is not None else (commune if code else "")
        return (probe, link, access, isp, code, name, district, old_commune)

    def probes_by_unit(self, at_ms: int) -> dict[str, set[str]]:
        """Unit code -> probes the registry places there at ``at_ms``."""
        out: dict[str, set[str]] = {}
        if self.registry is None:
            return out
        when = datetime.fromtimestamp(at_ms / 1000, UTC)
        for site in self.registry.sites():
            placed = self.registry.get(site.probe_id, when)
            if placed is not None and placed.commune_code:
                out.setdefault(placed.commune_code, set()).add(site.probe_id)
        return out


def is_loopback(client: InfluxClient) -> bool:
    """True when InfluxDB is on this host, where compressing the answer only costs CPU."""
    host = (urlsplit(client.settings.url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _method_filter(methods: tuple[str, ...]) -> str:
    return "(" + " OR ".join(f'"method" = {influxql_string(m)}' for m in methods) + ")"


@dataclass
class Lines:
    """The distinct lines seen (index = line id), with their tags."""

    keys: list[tuple[str, ...]] = field(default_factory=list)
    index: dict[tuple[str, ...], int] = field(default_factory=dict)

    def id_for(self, key: tuple[str, ...]) -> int:
        """The line id for an attribute tuple (``LINE_KEYS`` order), adding it if new."""
        found = self.index.get(key)
        if found is None:
            found = self.index[key] = len(self.keys)
            self.keys.append(key)
        return found

    def column(self, tag: str) -> list[str]:
        """One attribute (:data:`LINE_KEYS`) for every line."""
        i = LINE_KEYS.index(tag)
        return [k[i] for k in self.keys]

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class Tests:
    """Individual results of one family of methods, one element per test."""

    line: NDArray[np.int32]
    time_ms: NDArray[np.int64]
    ok: NDArray[np.bool_]
    cross: NDArray[np.bool_]
    values: dict[str, NDArray[np.float64]]

    @property
    def size(self) -> int:
        """Number of tests."""
        return int(self.line.size)

    @classmethod
    def empty(cls, fields: tuple[str, ...]) -> Tests:
        """No tests."""
        return cls(np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, bool),
                   np.zeros(0, bool), {f: np.zeros(0) for f in fields})


#: One slice of tests as read: (its start ms, each series' tags and row count, every row
#: as ``[time, cross_traffic, *fields]`` in float64; None without any row).
Slice = tuple[int, list[tuple[dict[str, str], int]], "NDArray[np.float64] | None"]

#: InfluxDB 1.x returns the series of a ``GROUP BY`` sorted by their tag values, tag keys
#: in alphabetical order; both read paths (raw, day packs) put series in that order, so
#: the tests come in one order whatever the server (a mean's last bits depend on it).
_ORDER_KEYS: tuple[str, ...] = tuple(sorted((*LINE_TAGS, "status")))


def series_order(tags: dict[str, str]) -> tuple[str, ...]:
    """Sort key of a series of the month's read (:data:`LINE_TAGS` and ``status``)."""
    return tuple(tags.get(k, "") for k in _ORDER_KEYS)


def raw_slice(client: InfluxClient, b: tuple[int, int], methods: tuple[str, ...],
              fields: tuple[str, ...]) -> Slice:
    """Every result of ``methods`` in [b[0], b[1]) from the raw points, grouped by line
    tags and status, series in :func:`series_order`."""
    select = ", ".join(f'"{f}"' for f in ("cross_traffic", *fields))
    group = ", ".join(f'"{t}"' for t in (*LINE_TAGS, "status"))
    q = (f'SELECT {select} FROM "{RESULTS}" WHERE time >= {b[0]}ms AND time < {b[1]}ms '
         f'AND {_method_filter(methods)} GROUP BY {group}')
    series = sorted((s for s in client.query(q, compressed=not is_loopback(client),
                                             binary=True)[0] if s.values),
                    key=lambda s: series_order(s.tags))
    if not series:
        return b[0], [], None
    # One conversion per slice: None (field absent) becomes NaN.
    arr = np.array([row for s in series for row in s.values], dtype=np.float64)
    return b[0], [(s.tags, len(s.values)) for s in series], arr.reshape(-1, 2 + len(fields))


def day_bounds(start_ms: int, end_ms: int, chunk_ms: int = 86_400_000
               ) -> list[tuple[int, int]]:
    """[start, end) cut into ``chunk_ms`` slices."""
    bounds = []
    t0 = start_ms
    while t0 < end_ms:
        bounds.append((t0, min(t0 + chunk_ms, end_ms)))
        t0 += chunk_ms
    return bounds


def assemble(slices: Iterable[Slice], fields: tuple[str, ...], lines: Lines,
             place: Placement) -> Tests:
    """The tests of ``slices`` (in time order), each series placed on the current map by
    ``place`` as of its slice's start."""
    # Per-slice columns in their final dtypes: the month is never held twice in float64.
    t_parts: list[NDArray[np.int64]] = []
    line_parts: list[NDArray[np.int32]] = []
    ok_parts: list[NDArray[np.bool_]] = []
    cross_parts: list[NDArray[np.bool_]] = []
    val_parts: dict[str, list[NDArray[np.float64]]] = {f: [] for f in fields}
    for b0, meta, arr in slices:
        if arr is None:
            continue
        line_ids = np.empty(arr.shape[0], dtype=np.int32)
        ok = np.empty(arr.shape[0], dtype=bool)
        pos = 0
        for tags, n in meta:
            line_ids[pos:pos + n] = lines.id_for(place.key(tags, b0))
            ok[pos:pos + n] = tags.get("status") == "ok"
            pos += n
        t_parts.append(arr[:, 0].astype(np.int64))
        line_parts.append(line_ids)
        ok_parts.append(ok)
        cross_parts.append(np.nan_to_num(arr[:, 1], nan=0.0) > 0)
        for i, f in enumerate(fields):
            val_parts[f].append(arr[:, 2 + i].copy())
    if not t_parts:
        return Tests.empty(fields)
    return Tests(
        line=np.concatenate(line_parts),
        time_ms=np.concatenate(t_parts),
        ok=np.concatenate(ok_parts),
        cross=np.concatenate(cross_parts),
        values={f: np.concatenate(v) for f, v in val_parts.items()},
    )


def fetch_tests(client: InfluxClient, start_ms: int, end_ms: int, methods: tuple[str, ...],
                fields: tuple[str, ...], lines: Lines, place: Placement,
                chunk_ms: int = 86_400_000, workers: int = 3) -> Tests:
    """Every result of ``methods`` in [start_ms, end_ms), read in ``chunk_ms`` slices,
    each series placed on the current map by ``place`` as of its slice's start.

    Failed tests are included (``ok`` False) so they can be counted; ``cross`` marks tests
    flagged for cross-traffic on the line. ``workers`` slices are in flight at once: while
    Python decodes one, influxd (another process, another core) reads the next. Results
    are assembled in time order, so the output does not depend on thread timing.
    """
    with ThreadPoolExecutor(max(1, workers)) as pool:
        # map() yields in (time) order
        return assemble(pool.map(lambda b: raw_slice(client, b, methods, fields),
                                 day_bounds(start_ms, end_ms, chunk_ms)),
                        fields, lines, place)


@dataclass
class CommuneCount:
    """Server-side counts of one method's results for one unit (current map)."""

    commune_code: str
    commune: str
    district: str = ""
    ok: int = 0
    failed: int = 0
    targets: set[str] = field(default_factory=set)
    rtt_median_ms: float | None = None


def fetch_commune_counts(client: InfluxClient, start_ms: int, end_ms: int,
                         method: str, place: Placement) -> list[CommuneCount]:
    """Per unit: how many ``method`` tests succeeded and failed (counted by InfluxDB).

    Grouped by probe too, so untagged (older) results are placed by ``place`` (the
    registry entry in force at ``start_ms``); counts add up across probes.
    """
    q = (f'SELECT count("duration_s") AS n, median("rtt_ms") AS rtt FROM "{RESULTS}" '
         f'WHERE time >= {start_ms}ms AND time < {end_ms}ms '
         f'AND "method" = {influxql_string(method)} '
         f'GROUP BY {", ".join(f"{chr(34)}{t}{chr(34)}" for t in LINE_TAGS)}, "status", '
         f'"target"')
    out: dict[tuple[str, str], CommuneCount] = {}
    for series in client.query(q)[0]:
        tags = series.tags
        k = place.key(tags, start_ms)
        code, name, district = k[4], k[5], k[6]
        cc = out.setdefault((code, name), CommuneCount(code, name, district))
        row = series.rows()[0] if series.values else {}
        n = int(row.get("n") or 0)
        if tags.get("status") == "ok":
            cc.ok += n
            # Several targets: keep the slowest median, the one the commune depends on.
            rtt = row.get("rtt")
            if rtt is not None:
                cc.rtt_median_ms = max(cc.rtt_median_ms or 0.0, float(rtt))
        else:
            cc.failed += n
        if tags.get("target"):
            cc.targets.add(tags["target"])
    return sorted(out.values(), key=lambda c: (c.commune_code, c.commune))


@dataclass
class TrendPoint:
    """Province medians for one month and access type (computed by InfluxDB)."""

    month: str
    access: str
    download_median: float | None
    download_tests: int
    upload_median: float | None
    upload_tests: int


def first_throughput_ms(client: InfluxClient, start_ms: int, end_ms: int) -> int | None:
    """Time of the first throughput result in [start, end), or None: months that end
    before it need no trend query.

    A trend statement costs influxd a cursor per series of its shard even over a range
    without a point (~0.2 CPU-s each at 1,000 probes: 3.5 CPU-s for a first bulletin's 11
    empty months); ``first()`` reads one block per series (~0.1 CPU-s) and the skipped
    months would give no trend point anyway.
    """
    q = (f'SELECT first("duration_s") FROM "{RESULTS}" WHERE time >= {start_ms}ms AND '
         f'time < {end_ms}ms AND {_method_filter(THROUGHPUT_METHODS)}')
    series = client.query(q)[0]
    return int(series[0].values[0][0]) if series and series[0].values else None


def fetch_trend(client: InfluxClient, months: list[Month],
                with_upload: frozenset[str] = frozenset()) -> list[TrendPoint]:
    """Province median download (and upload for the months in ``with_upload``) per access
    type for each month, computed by InfluxDB.

    ``median()`` in InfluxDB is taken over the individual points (the mean of the two
    middle values for an even count), the same definition as the bulletin's own. Each
    month costs InfluxDB a scan of its points, so callers pass only months they cannot get
    from an earlier bulletin's CSV.
    """
    if not months:
        return []
    stmts = []
    for m in months:
        a, b = m.bounds_ms()
        sel = 'median("download_mbps") AS dl, count("download_mbps") AS dln'
        if m.label in with_upload:
            sel += ', median("upload_mbps") AS ul, count("upload_mbps") AS uln'
        stmts.append(
            f'SELECT {sel} FROM "{RESULTS}" '
            f"WHERE time >= {a}ms AND time < {b}ms AND \"status\" = 'ok' "
            f'AND "cross_traffic" = 0 AND {_method_filter(THROUGHPUT_METHODS)} '
            f'GROUP BY "access"')
    results = client.query(";\n".join(stmts))
    out: list[TrendPoint] = []
    for m, series_list in zip(months, results, strict=True):
        for s in series_list:
            row = s.rows()[0]
            out.append(TrendPoint(m.label, s.tags.get("access", ""),
                                  _f(row.get("dl")), int(row.get("dln") or 0),
                                  _f(row.get("ul")), int(row.get("uln") or 0)))
    return out


def _f(v: object) -> float | None:
    return None if v is None else float(v)  # type: ignore[arg-type]


@dataclass
class UnitTrendPoint:
    """One unit's median download for one month and access type (computed by InfluxDB)."""

    month: str
    commune_code: str
    access: str
    download_median: float | None
    download_tests: int


def _valid_tput_where(a: int, b: int) -> str:
    return (f"time >= {a}ms AND time < {b}ms AND \"status\" = 'ok' "
            f'AND "cross_traffic" = 0 AND {_method_filter(THROUGHPUT_METHODS)}')


def fetch_unit_trend(client: InfluxClient, months: list[Month], place: Placement
                     ) -> list[UnitTrendPoint]:
    """Each unit's median download per access type and month, by InfluxDB's ``median()``.

    Results tagged with ``commune_code`` are grouped by it (one statement a month). A month
    that also holds untagged (older) results gets, for each unit the registry places one
    of those probes in (entry in force at the month's start), one statement over the
    unit's tagged results *and* its untagged probes' results, so a 2026 unit's trend
    includes its predecessors' months exactly (medians do not add up: one set per unit).
    """
    if not months:
        return []
    probe_q = [f'SELECT count("download_mbps") AS n FROM "{RESULTS}" WHERE '
               f'{_valid_tput_where(*m.bounds_ms())} AND "commune_code" = \'\' GROUP BY "probe"'
               for m in months]
    untagged: list[set[str]] = [{s.tags.get("probe", "") for s in res if s.values}
                                for res in client.query(";\n".join(probe_q))]
    stmts: list[str] = []
    plan: list[tuple[Month, str | None]] = []  # (month, None: grouped by code | unit code)
    sel = 'median("download_mbps") AS dl, count("download_mbps") AS n'
    for m, probes in zip(months, untagged, strict=True):
        a, b = m.bounds_ms()
        stmts.append(f'SELECT {sel} FROM "{RESULTS}" WHERE {_valid_tput_where(a, b)} '
                     f'AND "commune_code" != \'\' GROUP BY "commune_code", "access"')
        plan.append((m, None))
        if not probes:
            continue
        for code, unit_probes in sorted(place.probes_by_unit(a).items()):
            mine = sorted(unit_probes & probes)
            if not mine:
                continue
            who = " OR ".join(f'"probe" = {influxql_string(p)}' for p in mine)
            stmts.append(f'SELECT {sel} FROM "{RESULTS}" WHERE {_valid_tput_where(a, b)} AND '
                         f'("commune_code" = {influxql_string(code)} OR '
                         f'("commune_code" = \'\' AND ({who}))) GROUP BY "access"')
            plan.append((m, code))
    results = client.query(";\n".join(stmts))
    out: dict[tuple[str, str, str], UnitTrendPoint] = {}
    for (m, ucode), series_list in zip(plan, results, strict=True):
        for s in series_list:
            row = s.rows()[0]
            c = ucode or nfc(s.tags.get("commune_code", ""))
            # A unit's combined statement replaces its tagged-only figure of that month.
            if ucode is None and (m.label, c, s.tags.get("access", "")) in out:
                continue
            out[(m.label, c, s.tags.get("access", ""))] = UnitTrendPoint(
                m.label, c, s.tags.get("access", ""), _f(row.get("dl")), int(row.get("n") or 0))
    return list(out.values())


@dataclass
class LineActivity:
    """One line's results of every method in the month, and its planned runs per day."""

    probe: str
    link: str
    commune_code: str = ""
    district: str = ""
    results: int = 0
    #: Start of the first local day of the month with a result (the bulletin expects
    #: tests of a line from that day on).
    first_ms: int | None = None
    #: Per local day of the month: the runs/day the agent reported (NaN: none known).
    expected_per_day: NDArray[np.float64] | None = None
    #: Local day of the month -> throughput results that day (what the day packs are
    #: checked against).
    tput_per_day: dict[int, int] = field(default_factory=dict)


def fetch_activity(client: InfluxClient, month: Month, place: Placement
                   ) -> dict[tuple[str, str], LineActivity]:
    """Per (probe, link): results of every method in the month (count and first day) and
    the ``expected_runs_per_day`` its agent reported (``link_usage``), per local day.

    A day without a report takes the latest earlier report (before the month included),
    days before a link's first report ever take its first one; a link that never reported
    has no ``expected_per_day`` (the bulletin falls back to its configured rate).
    """
    a, b = month.bounds_ms()
    off = month.start().utcoffset()
    # Day buckets that start at local midnight: InfluxDB's buckets start at UTC midnight
    # plus the offset given in GROUP BY time(1d, <offset>).
    off_min = (-int(off.total_seconds()) // 60 if off else 0) % 1440
    stmts = [
        # Per local day and method: the same scan as a month's count, and it tells which
        # days the rollups' day packs hold in full (collector/bulletin/packread.py).
        f'SELECT count("duration_s") AS n FROM "{RESULTS}" WHERE time >= {a}ms AND '
        f'time < {b}ms GROUP BY time(1d, {off_min}m), "probe", "link", "commune_code", '
        f'"district", "method" fill(none)',
        f'SELECT last("expected_runs_per_day") AS r FROM "{LINK_USAGE}" WHERE time < {a}ms '
        f'GROUP BY "probe", "link"',
        f'SELECT last("expected_runs_per_day") AS r FROM "{LINK_USAGE}" WHERE time >= {a}ms '
        f'AND time < {b}ms GROUP BY time(1d, {off_min}m), "probe", "link" fill(none)',
        f'SELECT first("expected_runs_per_day") AS r FROM "{LINK_USAGE}" WHERE time >= {b}ms '
        f'GROUP BY "probe", "link"',
    ]
    # The counts alone first: a missing database is then named by InfluxDB ("database not
    # found"); in a multi-statement query 1.x only says "not executed".
    counts = client.query(stmts[0], binary=True)[0]
    before, during, after = client.query(";\n".join(stmts[1:]))
    out: dict[tuple[str, str], LineActivity] = {}

    def get(tags: dict[str, str]) -> LineActivity:
        k = (nfc(tags.get("probe", "")), nfc(tags.get("link", "")))
        if k not in out:
            out[k] = LineActivity(*k)
        return out[k]

    day_ms = 86_400_000
    tput_methods = frozenset(THROUGHPUT_METHODS)
    for s in counts:
        act = get(s.tags)
        placed = place.key(s.tags, a)
        act.commune_code, act.district = placed[4], placed[6]
        is_tput = s.tags.get("method", "") in tput_methods
        for t_ms, n in s.values:
            act.results += int(n or 0)
            if n and (act.first_ms is None or int(t_ms) < act.first_ms):
                act.first_ms = int(t_ms)
            if is_tput and n:
                day = (int(t_ms) - a) // day_ms
                act.tput_per_day[day] = act.tput_per_day.get(day, 0) + int(n)
    n_days = month.days()
    carry: dict[tuple[str, str], float] = {}
    for s in before:
        if s.values and s.values[0][1] is not None:
            act = get(s.tags)
            carry[(act.probe, act.link)] = float(s.values[0][1])
    day_vals: dict[tuple[str, str], dict[int, float]] = {}
    for s in during:
        for t_ms, r in s.values:
            if r is None:
                continue
            act = get(s.tags)
            day = (int(t_ms) - a) // day_ms
            if 0 <= day < n_days:
                day_vals.setdefault((act.probe, act.link), {})[day] = float(r)
    later: dict[tuple[str, str], float] = {}
    for s in after:
        if s.values and s.values[0][1] is not None:
            act = get(s.tags)
            later[(act.probe, act.link)] = float(s.values[0][1])
    for k, act in out.items():
        days = day_vals.get(k, {})
        if k not in carry and not days and k not in later:
            continue  # never reported: the configured fallback applies
        first_known = carry.get(k, days[min(days)] if days else later.get(k, np.nan))
        arr = np.empty(n_days)
        cur = first_known
        for d in range(n_days):
            cur = days.get(d, cur)
            arr[d] = cur
        act.expected_per_day = arr
    return out
