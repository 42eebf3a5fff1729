"""The month's throughput tests from the rollups' day packs, where they hold the month.

A day pack (collector/core/packs.py) holds every throughput test of one line and local
day, exactly as the raw read returns it, so reading ~62,000 packs instead of 1.45 million
raw points gives the bulletin the same arrays for a fraction of influxd's work. The packs
are trusted day by day: a day is read from them only when, for every (probe, link), the
packs' test count equals the throughput results InfluxDB counts in the raw points that day
(:attr:`data.LineActivity.tput_per_day`, from the availability read the bulletin makes
anyway). A day the rollups never saw (data older than the rollups, a collector that
stopped before its next round, a late result not rolled up yet) differs and is read raw,
so the output is the same whichever way each day is read.
"""

from __future__ import annotations

from bisect import bisect_right
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np

from collector.bulletin import data, stats
from collector.core import packs
from collector.core.influx import InfluxClient, Series
from collector.core.schema import VIETNAM, nfc
from netmon.contract import THROUGHPUT_METHODS


@dataclass
class Sources:
    """Which local days of the month were read from packs and which from raw points."""

    pack_days: list[int] = field(default_factory=list)
    raw_days: list[int] = field(default_factory=list)


def _aligned(month: data.Month) -> bool:
    """Packs are per local day of Asia/Ho_Chi_Minh (UTC+7): usable when the bulletin's days
    are those days."""
    want = VIETNAM.utcoffset(None) or timedelta(0)
    return month.start().utcoffset() == want and month.end().utcoffset() == want


def raw_counts(activity: dict[tuple[str, str], data.LineActivity]
               ) -> dict[int, dict[tuple[str, str], int]]:
    """Local day of the month -> (probe, link) -> throughput results InfluxDB counted."""
    out: dict[int, dict[tuple[str, str], int]] = {}
    for act in activity.values():
        for day, n in act.tput_per_day.items():
            if n:
                out.setdefault(day, {})[(act.probe, act.link)] = n
    return out


def _read_packs(client: InfluxClient, bounds: list[tuple[int, int]]
                ) -> list[tuple[list[Series], list[str], list[int]]]:
    """The packs of consecutive local days in one query, split by day: per day, the
    series (lines) that hold a pack that day, the packs' ``data`` and each one's series.

    One query for all the days, not one a day: influxd's cost of a pack query is mostly
    opening a cursor per series (2,000 lines: ~0.3 CPU-s whatever the range), so a month
    read a day at a time cost it ~10 CPU-s, in three queries ~1.1 and in one ~0.8
    (benchmarks/bulletin).
    """
    group = ", ".join(f'"{t}"' for t in data.LINE_TAGS)
    # Only "data": each pack's test count is in its header (the "n" field repeats it for
    # other readers), and reading one field fewer saves influxd ~10 %.
    q = (f'SELECT "data" FROM "{packs.PACK}" WHERE time >= {bounds[0][0]}ms AND '
         f'time < {bounds[-1][1]}ms GROUP BY {group}')
    starts = [b[0] for b in bounds]
    days: list[tuple[list[Series], list[str], list[int]]] = [
        ([], [], []) for _ in bounds]
    for s in client.query(q, compressed=not data.is_loopback(client), binary=True)[0]:
        where: dict[int, int] = {}  # day -> this series' index among that day's series
        for t, v in s.values:
            if not v:
                continue
            day = bisect_right(starts, int(t)) - 1
            series, datas, owner = days[day]
            if day not in where:
                where[day] = len(series)
                series.append(s)
            datas.append(v)
            owner.append(where[day])
    return days


def pack_slice(b: tuple[int, int], series: list[Series], datas: list[str],
               owner: list[int]) -> tuple[data.Slice, dict[tuple[str, str], int]]:
    """One local day's tests from its packs (:func:`_read_packs`), as :func:`data.raw_slice`
    gives them, and how many tests the packs hold per (probe, link) (from their headers)."""
    counts: dict[tuple[str, str], int] = {}
    if not datas:
        return (b[0], [], None), counts
    batch = packs.decode_many(datas, b[0])
    held = np.bincount(batch.pack, minlength=len(datas))
    for i, n in zip(owner, held.tolist(), strict=True):
        if n:
            t = series[i].tags
            k = (nfc(t.get("probe", "")), nfc(t.get("link", "")))
            counts[k] = counts.get(k, 0) + n
    # Each (line, status) is one series in the raw read: number them, order them as
    # data.series_order does, and put each test in its series' place (stable: parts and
    # tests keep their order).
    n_status = len(batch.status)
    virt = np.asarray(owner, np.int64)[batch.pack] * n_status + batch.status_idx
    ids, sizes = np.unique(virt, return_counts=True)
    tags_of = []
    for v in ids.tolist():
        t = series[v // n_status].tags
        tags_of.append({k: t.get(k, "") for k in data.LINE_TAGS}
                       | {"status": batch.status[v % n_status]})
    ranked = sorted(range(len(ids)), key=lambda j: data.series_order(tags_of[j]))
    rank = np.empty(len(ids), np.int64)
    rank[ranked] = np.arange(len(ids))
    order = stats.stable_order(rank[np.searchsorted(ids, virt)])
    arr = np.column_stack([batch.time_ms.astype(np.float64), batch.cross.astype(np.float64),
                           *(batch.values[f] for f in packs.PACK_FIELDS)])[order]
    meta = [(tags_of[j], int(sizes[j])) for j in ranked]
    return (b[0], meta, arr), counts


def fetch_throughput(client: InfluxClient, month: data.Month, lines: data.Lines,
                     place: data.Placement,
                     activity: dict[tuple[str, str], data.LineActivity], *,
                     use_packs: bool = True, workers: int = 3
                     ) -> tuple[data.Tests, Sources]:
    """The month's throughput tests (:data:`data.THROUGHPUT_FIELDS`), each local day from
    its packs when their test counts equal the raw counts of every (probe, link) that day
    (:func:`raw_counts`), else from the raw points.

    ``activity`` is :func:`data.fetch_activity`'s answer for the month. The arrays are the
    ones :func:`data.fetch_tests` returns, element for element.
    """
    if data.THROUGHPUT_FIELDS != packs.PACK_FIELDS:
        raise AssertionError("day packs must keep the bulletin's throughput fields")
    a, b = month.bounds_ms()
    bounds = data.day_bounds(a, b)
    use = use_packs and _aligned(month)
    expected = raw_counts(activity)

    def raw(i: int) -> data.Slice:
        return data.raw_slice(client, bounds[i], THROUGHPUT_METHODS, data.THROUGHPUT_FIELDS)

    slices: list[data.Slice | None] = [None] * len(bounds)
    if use:
        # One pack query for the month (see _read_packs): three overlapped in threads
        # bought no wall time on two cores and held their answers at once anyway.
        for i, rows in enumerate(_read_packs(client, bounds)):
            sl, held = pack_slice(bounds[i], *rows)
            slices[i] = sl if held and held == expected.get(i, {}) else None
    todo = [i for i, sl in enumerate(slices) if sl is None]
    # Raw days (none when the rollups hold the month) are read ``workers`` at a time.
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for i, sl in zip(todo, pool.map(raw, todo), strict=True):
            slices[i] = sl
    src = Sources(pack_days=[i for i in range(len(bounds)) if i not in todo], raw_days=todo)
    tests = data.assemble((sl for sl in slices if sl is not None), data.THROUGHPUT_FIELDS,
                          lines, place)
    return tests, src
