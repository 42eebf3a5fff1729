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
    series = [s for s in client.query(q, compressed=not data.is_loopback(client),
                                      binary=True)[0] if s.values]
    datas: list[str] = []
    owner: list[int] = []
    for i, s in enumerate(series):
        for _, v in s.values:
            if v:
                datas.append(v)
                owner.append(i)
    if not datas:
        return b[0], [], None
    batch = packs.decode_many(datas, b[0])
    # Each (line, status) is one series in the raw read: number them, order them as
    # data.series_order does, and put each test in its series' place (stable: parts and
    # tests keep their order).
    n_status = len(batch.status)
    virt = np.asarray(owner, np.int64)[batch.pack] * n_status + batch.status_idx
    ids, counts = np.unique(virt, return_counts=True)
    tags_of = []
    for v in ids.tolist():
        t = series[v // n_status].tags
        tags_of.append({k: t.get(k, "") for k in data.LINE_TAGS}
                       | {"status": batch.status[v % n_status]})
    ranked = sorted(range(len(ids)), key=lambda j: data.series_order(tags_of[j]))
    rank = np.empty(len(ids), np.int64)
    rank[ranked] = np.arange(len(ids))
    order = np.argsort(rank[np.searchsorted(ids, virt)], kind="stable")
    arr = np.column_stack([batch.time_ms.astype(np.float64), batch.cross.astype(np.float64),
                           *(batch.values[f] for f in packs.PACK_FIELDS)])[order]
    return b[0], [(tags_of[j], int(counts[j])) for j in ranked], arr


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
