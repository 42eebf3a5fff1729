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


def pack_slice(client: InfluxClient, b: tuple[int, int]
               ) -> tuple[data.Slice, dict[tuple[str, str], int]]:
    """One local day's tests from its packs, as :func:`data.raw_slice` gives them, and
    how many tests the packs hold per (probe, link) (from their headers)."""
    group = ", ".join(f'"{t}"' for t in data.LINE_TAGS)
    # Only "data": each pack's test count is in its header (the "n" field repeats it for
    # other readers), and reading one field fewer saves influxd ~10 %.
    q = (f'SELECT "data" FROM "{packs.PACK}" WHERE time >= {b[0]}ms AND '
         f'time < {b[1]}ms GROUP BY {group}')
    series = [s for s in client.query(q, compressed=not data.is_loopback(client),
                                      binary=True)[0] if s.values]
    datas: list[str] = []
    owner: list[int] = []
    counts: dict[tuple[str, str], int] = {}
    for i, s in enumerate(series):
        for _, v in s.values:
            if v:
                datas.append(v)
                owner.append(i)
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
    order = np.argsort(rank[np.searchsorted(ids, virt)], kind="stable")
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

    def one(i_b: tuple[int, tuple[int, int]]) -> tuple[data.Slice, bool]:
        i, bd = i_b
        if use:
            sl, held = pack_slice(client, bd)
            if held and held == expected.get(i, {}):
                return sl, True
        return data.raw_slice(client, bd, THROUGHPUT_METHODS, data.THROUGHPUT_FIELDS), False

    src = Sources()
    with ThreadPoolExecutor(max(1, workers)) as pool:
        read = list(pool.map(one, enumerate(bounds)))
    for i, (_, packed) in enumerate(read):
        (src.pack_days if packed else src.raw_days).append(i)
    tests = data.assemble((sl for sl, _ in read), data.THROUGHPUT_FIELDS, lines, place)
    return tests, src
