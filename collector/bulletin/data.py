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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from collector.core.influx import InfluxClient
from collector.core.schema import RESULTS, influxql_string, nfc
from netmon.contract import (
    THROUGHPUT_METHODS,
)
from netmon.errors import EXIT_INPUT, NetmonError

THROUGHPUT_FIELDS: tuple[str, ...] = ("download_mbps", "upload_mbps", "loaded_rtt_ms",
                                      "idle_rtt_ms")
LATENCY_FIELDS: tuple[str, ...] = ("rtt_ms", "jitter_ms", "loss_pct")
#: Tags that identify one line (a probe's link) and where it stands.
LINE_TAGS: tuple[str, ...] = ("probe", "link", "access", "isp", "commune", "district")

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


def _is_loopback(client: InfluxClient) -> bool:
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
        """The line id for a tag tuple (``LINE_TAGS`` order), adding it if new."""
        found = self.index.get(key)
        if found is None:
            found = self.index[key] = len(self.keys)
            self.keys.append(key)
        return found

    def column(self, tag: str) -> list[str]:
        """One tag's value for every line."""
        i = LINE_TAGS.index(tag)
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


def fetch_tests(client: InfluxClient, start_ms: int, end_ms: int, methods: tuple[str, ...],
                fields: tuple[str, ...], lines: Lines, chunk_ms: int = 86_400_000,
                workers: int = 3) -> Tests:
    """Every result of ``methods`` in [start_ms, end_ms), read in ``chunk_ms`` slices.

    Failed tests are included (``ok`` False) so they can be counted; ``cross`` marks tests
    flagged for cross-traffic on the line. ``workers`` slices are in flight at once: while
    Python decodes one, influxd (another process, another core) reads the next. Results
    are assembled in time order, so the output does not depend on thread timing.
    """
    select = ", ".join(f'"{f}"' for f in ("cross_traffic", *fields))
    group = ", ".join(f'"{t}"' for t in (*LINE_TAGS, "status"))
    bounds = []
    t0 = start_ms
    while t0 < end_ms:
        bounds.append((t0, min(t0 + chunk_ms, end_ms)))
        t0 += chunk_ms

    n_cols = 1 + len(fields)

    def one(b: tuple[int, int]) -> tuple[list[tuple[dict[str, str], int]],
                                         NDArray[np.float64] | None]:
        """One slice: (series tags and lengths, all its rows as one float array)."""
        q = (f'SELECT {select} FROM "{RESULTS}" WHERE time >= {b[0]}ms AND time < {b[1]}ms '
             f'AND {_method_filter(methods)} GROUP BY {group}')
        series = [s for s in client.query(q, compressed=not _is_loopback(client))[0]
                  if s.values]
        if not series:
            return [], None
        # One conversion per slice: None (field absent) becomes NaN.
        arr = np.array([row for s in series for row in s.values], dtype=np.float64)
        return [(s.tags, len(s.values)) for s in series], arr.reshape(-1, 1 + n_cols)

    # Per-slice columns in their final dtypes: the month is never held twice in float64.
    t_parts: list[NDArray[np.int64]] = []
    line_parts: list[NDArray[np.int32]] = []
    ok_parts: list[NDArray[np.bool_]] = []
    cross_parts: list[NDArray[np.bool_]] = []
    val_parts: dict[str, list[NDArray[np.float64]]] = {f: [] for f in fields}
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for meta, arr in pool.map(one, bounds):  # map() yields in submission (time) order
            if arr is None:
                continue
            line_ids = np.empty(arr.shape[0], dtype=np.int32)
            ok = np.empty(arr.shape[0], dtype=bool)
            pos = 0
            for tags, n in meta:
                key = tuple(nfc(tags.get(t, "")) for t in LINE_TAGS)
                line_ids[pos:pos + n] = lines.id_for(key)
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


@dataclass
class CommuneCount:
    """Server-side counts of one method's results for one commune."""

    district: str
    commune: str
    ok: int = 0
    failed: int = 0
    targets: set[str] = field(default_factory=set)
    rtt_median_ms: float | None = None


def fetch_commune_counts(client: InfluxClient, start_ms: int, end_ms: int,
                         method: str) -> list[CommuneCount]:
    """Per commune: how many ``method`` tests succeeded and failed (counted by InfluxDB)."""
    q = (f'SELECT count("duration_s") AS n, median("rtt_ms") AS rtt FROM "{RESULTS}" '
         f'WHERE time >= {start_ms}ms AND time < {end_ms}ms '
         f'AND "method" = {influxql_string(method)} '
         f'GROUP BY "district", "commune", "status", "target"')
    out: dict[tuple[str, str], CommuneCount] = {}
    for series in client.query(q)[0]:
        tags = series.tags
        key = (nfc(tags.get("district", "")), nfc(tags.get("commune", "")))
        cc = out.setdefault(key, CommuneCount(*key))
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
    return sorted(out.values(), key=lambda c: (c.district, c.commune))


@dataclass
class TrendPoint:
    """Province medians for one month and access type (computed by InfluxDB)."""

    month: str
    access: str
    download_median: float | None
    download_tests: int
    upload_median: float | None
    upload_tests: int


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
