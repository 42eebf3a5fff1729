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

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np

from collector.bulletin import data
from collector.core import packs
from collector.core.influx import InfluxClient
from collector.core.rollups import DAY_MS
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


def pack_counts(client: InfluxClient, a: int, b: int) -> dict[tuple[str, str, int], int]:
    """(probe, link, local day of the month) -> tests the day packs hold."""
    q = (f'SELECT "n" FROM "{packs.PACK}" WHERE time >= {a}ms AND time < {b}ms '
         f'GROUP BY "probe", "link"')
    out: dict[tuple[str, str, int], int] = {}
    for s in client.query(q, binary=True)[0]:
        probe, link = nfc(s.tags.get("probe", "")), nfc(s.tags.get("link", ""))
        for t_ms, n in s.values:
            k = (probe, link, (int(t_ms) - a) // DAY_MS)
            out[k] = out.get(k, 0) + int(n or 0)
    return out


def covered_days(month: data.Month, counts: dict[tuple[str, str, int], int],
                 activity: dict[tuple[str, str], data.LineActivity]) -> set[int]:
    """The local days whose packs hold exactly the raw throughput results of every line."""
    raw: dict[tuple[str, str, int], int] = {
        (act.probe, act.link, day): n for act in activity.values()
        for day, n in act.tput_per_day.items() if n}
    days = set(range(month.days()))
    for k in counts.keys() | raw.keys():
        if counts.get(k, 0) != raw.get(k, 0):
            days.discard(k[2])
    return days


def pack_slice(client: InfluxClient, b: tuple[int, int]) -> data.Slice:
    """One local day's tests from its packs, as :func:`data.raw_slice` gives them."""
    group = ", ".join(f'"{t}"' for t in data.LINE_TAGS)
    q = (f'SELECT "data" FROM "{packs.PACK}" WHERE time >= {b[0]}ms AND time < {b[1]}ms '
         f'GROUP BY {group}')
    series: list[tuple[tuple[str, ...], dict[str, str], list[np.ndarray]]] = []
    for s in client.query(q, compressed=not data.is_loopback(client), binary=True)[0]:
        parts = [packs.decode(v, b[0]) for _, v in s.values if v]
        if not parts:
            continue
        # Each status of the line is its own series in the raw read.
        by_status: dict[str, list[np.ndarray]] = {}
        for p in parts:
            cols = np.column_stack([p.time_ms.astype(np.float64), p.cross.astype(np.float64),
                                    *(p.values[f] for f in packs.PACK_FIELDS)])
            for i, st in enumerate(p.status):
                rows = cols[p.status_idx == i]
                if rows.size:
                    by_status.setdefault(st, []).append(rows)
        for st, chunks in by_status.items():
            tags = {t: s.tags.get(t, "") for t in data.LINE_TAGS} | {"status": st}
            series.append((data.series_order(tags), tags, chunks))
    if not series:
        return b[0], [], None
    series.sort(key=lambda x: x[0])
    arr = np.concatenate([c for _, _, chunks in series for c in chunks])
    return b[0], [(tags, sum(len(c) for c in chunks)) for _, tags, chunks in series], arr


def fetch_throughput(client: InfluxClient, month: data.Month, lines: data.Lines,
                     place: data.Placement,
                     activity: dict[tuple[str, str], data.LineActivity], *,
                     use_packs: bool = True, workers: int = 3
                     ) -> tuple[data.Tests, Sources]:
    """The month's throughput tests (:data:`data.THROUGHPUT_FIELDS`), each local day from
    its packs when they hold it in full (:func:`covered_days`), else from the raw points.

    ``activity`` is :func:`data.fetch_activity`'s answer for the month. The arrays are the
    ones :func:`data.fetch_tests` returns, element for element.
    """
    if data.THROUGHPUT_FIELDS != packs.PACK_FIELDS:
        raise AssertionError("day packs must keep the bulletin's throughput fields")
    a, b = month.bounds_ms()
    bounds = data.day_bounds(a, b)
    from_packs: set[int] = set()
    if use_packs and _aligned(month):
        counts = pack_counts(client, a, b)
        if counts:
            from_packs = covered_days(month, counts, activity)
    src = Sources(sorted(from_packs), sorted(set(range(len(bounds))) - from_packs))

    def one(i_b: tuple[int, tuple[int, int]]) -> data.Slice:
        i, bd = i_b
        if i in from_packs:
            return pack_slice(client, bd)
        return data.raw_slice(client, bd, THROUGHPUT_METHODS, data.THROUGHPUT_FIELDS)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        tests = data.assemble(pool.map(one, enumerate(bounds)), data.THROUGHPUT_FIELDS,
                              lines, place)
    return tests, src
