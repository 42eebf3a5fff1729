"""Rollups: hourly and daily aggregates the dashboards read instead of scanning raw points.

The collector writes them itself, recomputed from the raw points (not maintained
incrementally), for every (probe, hour) and (probe, local day) that a written batch
touched. So a rollup of a closed interval is exactly what a query over the raw points
of that interval returns, and a result that arrives days late (a probe's spool
draining) makes its hour and day be recomputed with it. Continuous queries were not
used: InfluxDB 1.x CQs recompute only a ``RESAMPLE FOR`` window, and 2.x/3.x have no
CQs; these are plain ``/query`` + ``/write`` on the v1 API, which every version serves
(docs/schema.md, "Rollups").

Work is debounced: :meth:`Rollups.touch` only marks (probe, bucket) pairs dirty (cheap,
called after every batch), :meth:`Rollups.run_once` recomputes them (every
``interval_s`` in a thread, or directly in tests and :func:`collector.core.service.ingest`).
A failed recompute keeps its pairs dirty for the next round.

Measurements (tags as on ``results``/``probe_status``; docs/schema.md):

- ``tput_1h`` / ``tput_1d``: per line (probe, link, access, isp, commune_code, commune,
  district), successful throughput tests on an idle line (what the dashboards count):
  ``tests``, ``median_mbps``, ``p10_mbps``, ``p90_mbps``, ``upload_median_mbps``,
  ``met`` (tests at or above the line's access target), ``met_2030`` (at or above the
  2030 fixed target). Counts add up exactly over any range; medians do not.
- ``tput_pack``: per line and local day, every throughput test of the day (failed and
  cross-traffic ones too) with the exact values the monthly bulletin reads
  (collector/core/packs.py), so the bulletin need not read a month of raw points.
- ``status_1h`` / ``status_1d``: per probe, the last status in the bucket (``online``,
  ``clock_synced``, ``spool_depth``, ``spool_evicted``, ``config_version``,
  ``agent_version``, ``last_at_ms``; issue 18's ``oldest_waiting_ms``, ``board_model``,
  ``update_event``, ``update_failed`` when the status had them) and ``spool_max``.
- ``qual_1h`` / ``qual_1d``: per line, what the quality dashboard shows (successful
  latency tests: ``latency_tests``, ``rtt_median_ms``, ``jitter_median_ms``,
  ``loss_sum``/``loss_tests`` (a mean that adds up); successful tests measuring latency
  under load: ``loaded_rtt_median_ms``, ``idle_rtt_median_ms``; throughput tests the
  probe limited: ``device_limited``; IPv6 and TSLCD tests: ``ipv6_ready``/``ipv6_tests``,
  ``tslcd_reachable``/``tslcd_tests``).
- ``line_1d``: per line and local day, the probe map's and the peak-hour panels' figures
  (:func:`_line_day_lines`).
- ``last_result``: per line, when its latest result started (``last_ms``), one point
  per line at a constant instant, overwritten in place (:func:`last_result_lines`).
- ``usage_1d``: per link and local day, the last data usage its statuses reported
  (:func:`_usage_lines`): the data budget table.
- ``radio_1d``: per mobile line and local day, the radio levels' and the download's
  medians (:func:`_radio_lines`): the radio scatter plots.
- ``qual_access_1h`` / ``qual_access_1d``: per access type and bucket, the quality trend
  panels' figures over every line (:func:`access_quality_lines`): the medians of the
  lines' ``qual_*`` medians and the sums of their counts, what those panels computed from
  every line's points when no commune, ISP or probe is chosen.
- ``qual_commune_1h`` / ``qual_commune_1d``: per unit (``commune_code``, ``commune``),
  access type and bucket, the sums of the lines' IPv6 and TSLCD counts
  (:func:`commune_readiness_lines`): the readiness tables when no ISP or probe is chosen.
- ``rollup_switch``: three constant points (:func:`switch_lines`) from which the
  dashboards' hidden ``resolution`` variable picks raw points, hourly or daily rollups
  by the length of the time range (collector/dashboards/queries.py, ``RESOLUTION``).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
from numpy.typing import NDArray

from collector.config import InfluxSettings, Targets
from collector.core import packs
from collector.core.influx import InfluxClient, Series
from collector.core.schema import (
    LINK_USAGE,
    NS_PER_MS,
    PROBE_STATUS,
    RESULTS,
    VIETNAM,
    influxql_string,
    line,
    to_ms,
)
from collector.core.writer import Item
from netmon.contract import (
    IPV6_METHOD,
    LATENCY_METHODS,
    REACHABILITY_METHOD,
    THROUGHPUT_METHODS,
)

log = logging.getLogger(__name__)

TPUT_1H = "tput_1h"
TPUT_1D = "tput_1d"
STATUS_1H = "status_1h"
STATUS_1D = "status_1d"
QUAL_1H = "qual_1h"
QUAL_1D = "qual_1d"
LINE_1D = "line_1d"
LAST_RESULT = "last_result"
USAGE_1D = "usage_1d"
RADIO_1D = "radio_1d"
QUAL_ACCESS_1H = "qual_access_1h"
QUAL_ACCESS_1D = "qual_access_1d"
QUAL_COMMUNE_1H = "qual_commune_1h"
QUAL_COMMUNE_1D = "qual_commune_1d"
#: Every rollup measurement (the dashboards' layer rules and docs list them).
MEASUREMENTS = (TPUT_1H, TPUT_1D, STATUS_1H, STATUS_1D, QUAL_1H, QUAL_1D, LINE_1D,
                packs.PACK, LAST_RESULT, USAGE_1D, RADIO_1D, QUAL_ACCESS_1H, QUAL_ACCESS_1D,
                QUAL_COMMUNE_1H, QUAL_COMMUNE_1D)
#: The one instant of every ``last_result`` point (2100-01-01T00:00Z, the switch points'
#: base: see ``SWITCH_BASE_MS``): a line's new point overwrites its old one (same series,
#: same time), so the dashboards read one point per line whatever the time range.
LAST_RESULT_AT_MS = 4_102_444_800_000
#: ``radio_1d`` field prefixes of the radio levels (fields of ``results``).
RADIO_LEVELS = {"radio_rsrp_dbm": ("rsrp", "dbm"), "radio_sinr_db": ("sinr", "db")}
#: A result whose speed the probe set, not the line (agent/methods/common/device.py).
DEVICE_LIMITED = "\"flags\" =~ /(^|,)device_limited(,|$)/"

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
#: Days are local days (the bulletin's and the NOC's), Asia/Ho_Chi_Minh: UTC+7, no DST.
_TZ: timezone = VIETNAM
_OFFSET_MS = int((_TZ.utcoffset(None) or timedelta(0)).total_seconds() * 1000)

#: Tags of a line (one series of ``tput_*``) and of a probe (``status_*``).
LINE_TAGS = ("probe", "link", "access", "isp", "commune_code", "commune", "district")
PROBE_TAGS = ("probe", "commune_code", "commune", "district")
STATUS_FIELDS = ("online", "clock_synced", "spool_depth", "spool_evicted", "config_version",
                 "agent_version",
                 # fleet health (issue 18; absent in statuses of older agents)
                 "oldest_waiting_ms", "board_model", "update_event", "update_failed")
#: Probes per statement: keeps the regex and the answer small.
_PROBES_PER_QUERY = 200
DEFAULT_INTERVAL_S = 60.0

_PROBE_TAG = re.compile(r",probe=((?:[^,\\ ]|\\.)+)")


def hour_start(ms: int) -> int:
    """The start (epoch ms) of the UTC hour holding ``ms``."""
    return ms - ms % HOUR_MS


def day_start(ms: int) -> int:
    """The start (epoch ms) of the local day (Asia/Ho_Chi_Minh) holding ``ms``."""
    local = ms + _OFFSET_MS
    return local - local % DAY_MS - _OFFSET_MS


def _q(name: str) -> str:
    return '"' + name.replace('"', '\\"') + '"'


def _probe_filter(probes: Iterable[str]) -> str:
    return "(" + " OR ".join(f"{_q('probe')} = {influxql_string(p)}" for p in sorted(probes)) \
        + ")"


def _status_touch(lines: list[str]) -> tuple[str, int] | None:
    """(probe, time ms) of a status item's ``probe_status`` line (the collector's own
    line: the probe tag is a contract-checked id, the timestamp the last token)."""
    for ln in lines:
        if ln.startswith(PROBE_STATUS + ","):
            m = _PROBE_TAG.search(ln)  # the tag set comes first: its match is the first
            if m:
                return m.group(1), int(ln.rsplit(" ", 1)[1]) // NS_PER_MS
    return None


@dataclass(frozen=True)
class _Kind:
    measurement: str
    step: str  # InfluxQL GROUP BY time() argument
    bucket_ms: int
    status: bool
    #: "qual" or "line": the quality or the line-day rollups (their own functions)
    family: str = ""


#: GROUP BY time() of a local day: UTC days shifted to the province's midnight.
_DAY_STEP = f"1d, {(-_OFFSET_MS // 60_000) % 1440}m"
_KINDS = (
    _Kind(TPUT_1H, "1h", HOUR_MS, False),
    _Kind(TPUT_1D, _DAY_STEP, DAY_MS, False),
    _Kind(STATUS_1H, "1h", HOUR_MS, True),
    _Kind(STATUS_1D, _DAY_STEP, DAY_MS, True),
    _Kind(QUAL_1H, "1h", HOUR_MS, False, "qual"),
    _Kind(QUAL_1D, _DAY_STEP, DAY_MS, False, "qual"),
    _Kind(LINE_1D, _DAY_STEP, DAY_MS, False, "line"),
    _Kind(USAGE_1D, _DAY_STEP, DAY_MS, True, "usage"),
    _Kind(RADIO_1D, _DAY_STEP, DAY_MS, False, "radio"),
)


def _bucket(kind: _Kind, ms: int) -> int:
    return hour_start(ms) if kind.bucket_ms == HOUR_MS else day_start(ms)


class Rollups:
    """Keeps the rollup measurements exact for what the collector has written."""

    #: Peak hours [start, end) local time of ``line_1d``'s peak median (the collector
    #: sets them from ``[bulletin]``, as the dashboards' peak panels use).
    peak_hours: tuple[int, int] = (19, 23)

    def __init__(self, influx: InfluxSettings, targets: Targets | None = None,
                 interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.influx = influx
        self.targets = targets or Targets()
        self.interval_s = interval_s
        self._lock = threading.Lock()
        #: probe -> result times (ms) / status times (ms) not yet rolled up.
        self._results: dict[str, set[int]] = {}
        self._statuses: dict[str, set[int]] = {}
        #: Buckets recomputed in the last round, to be recomputed once more.
        self._again: tuple[dict[str, set[int]], dict[str, set[int]]] = ({}, {})
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._switch_written = False

    # ------------------------------------------------------------------ marking

    def touch(self, items: Iterable[Item]) -> None:
        """Mark the hours and days of a written batch's results and statuses dirty."""
        res: list[tuple[str, int]] = []
        sta: list[tuple[str, int]] = []
        for it in items:
            if it.dead is not None or not it.lines:
                continue
            if it.result is not None:
                # every method: the quality rollups count latency, IPv6 and TSLCD tests
                res.append((it.result.probe_id, hour_start(to_ms(it.result.started_at))))
            elif it.kind == "status":
                found = _status_touch(it.lines)
                if found:
                    sta.append((found[0], hour_start(found[1])))
        self.touch_times(res, sta)

    def touch_times(self, results: Iterable[tuple[str, int]],
                    statuses: Iterable[tuple[str, int]] = ()) -> None:
        """Mark (probe, epoch ms) of throughput results and statuses dirty."""
        with self._lock:
            for probe, ms in results:
                self._results.setdefault(probe, set()).add(hour_start(ms))
            for probe, ms in statuses:
                self._statuses.setdefault(probe, set()).add(hour_start(ms))

    def dirty(self) -> int:
        """How many (probe, hour) pairs wait to be recomputed."""
        with self._lock:
            return sum(map(len, self._results.values())) + sum(map(len, self._statuses.values()))

    # ------------------------------------------------------------------ recomputing

    def run_once(self) -> int:
        """Recompute every dirty bucket; returns the rollup points written. Raises
        InfluxError (the pairs stay dirty)."""
        with self._lock:
            results, self._results = self._results, {}
            statuses, self._statuses = self._statuses, {}
        try:
            with InfluxClient(self.influx) as client:
                if not self._switch_written:
                    write_switch(client)
                    self._switch_written = True
                written = 0
                for kind in _KINDS:
                    todo = statuses if kind.status else results
                    written += self._recompute(client, kind, todo)
                written += self._recompute_packs(client, results)
                written += _recompute_last_results(client, results)
                # after the per-line quality points it is made of, in the same round
                written += _recompute_access_quality(client, results)
        except Exception:
            self._remark(results, statuses)
            raise
        return written

    def _remark(self, results: dict[str, set[int]], statuses: dict[str, set[int]]) -> None:
        with self._lock:
            for src, dst in ((results, self._results), (statuses, self._statuses)):
                for probe, hours in src.items():
                    dst.setdefault(probe, set()).update(hours)

    def rebuild(self, start_ms: int, end_ms: int, probes: Iterable[str]) -> int:
        """Recompute every bucket of ``probes`` overlapping [start_ms, end_ms) (after a
        change of targets, or for data written before rollups existed)."""
        hours = set(range(hour_start(start_ms), end_ms, HOUR_MS))
        plist = list(probes)
        self.touch_times([(p, h) for p in plist for h in hours],
                         [(p, h) for p in plist for h in hours])
        return self.run_once()

    def _recompute(self, client: InfluxClient, kind: _Kind,
                   dirty: dict[str, set[int]]) -> int:
        # Probes grouped by the span their dirty buckets cover: in steady state that is
        # every probe's current hour (one statement per group of probes); a spool
        # draining days later widens only its own probe's span.
        spans: dict[tuple[int, int], list[tuple[str, set[int]]]] = {}
        for probe, hours in dirty.items():
            buckets = {_bucket(kind, h) for h in hours}
            spans.setdefault((min(buckets), max(buckets) + kind.bucket_ms), []).append(
                (probe, buckets))
        lines: list[str] = []
        for (a, b), members in sorted(spans.items()):
            for i in range(0, len(members), _PROBES_PER_QUERY):
                chunk = members[i:i + _PROBES_PER_QUERY]
                wanted = {(p, t) for p, buckets in chunk for t in buckets}
                probes = [p for p, _ in chunk]
                if kind.family == "usage":
                    lines += _usage_lines(client, kind, a, b, probes, wanted)
                elif kind.family == "radio":
                    lines += _radio_lines(client, kind, a, b, probes, wanted)
                elif kind.status:
                    lines += self._status_lines(client, kind, a, b, probes, wanted)
                elif kind.family == "qual":
                    lines += _quality_lines(client, kind, a, b, probes, wanted)
                elif kind.family == "line":
                    lines += _line_day_lines(client, kind, a, b, probes, wanted,
                                             self.peak_hours)
                else:
                    lines += self._tput_lines(client, kind, a, b, probes, wanted)
        for i in range(0, len(lines), 5000):
            client.write_lines(lines[i:i + 5000])
        return len(lines)

    def _tput_lines(self, client: InfluxClient, kind: _Kind, a: int, b: int,
                    probes: list[str], wanted: set[tuple[str, int]]) -> list[str]:
        base, group = _idle_tput(kind, a, b, probes)
        dl = _q("download_mbps")
        tg = self.targets
        stmts = [
            f"SELECT count({dl}) AS tests, median({dl}) AS median_mbps, "
            f"percentile({dl}, 10) AS p10_mbps, percentile({dl}, 90) AS p90_mbps, "
            f"median({_q('upload_mbps')}) AS upload_median_mbps {base} {group}",
            f"SELECT count({dl}) AS met {base} AND {_q('access')} = 'fixed' "
            f"AND {dl} >= {tg.fixed_mbps!r} {group}",
            f"SELECT count({dl}) AS met {base} AND {_q('access')} = 'mobile' "
            f"AND {dl} >= {tg.mobile_mbps!r} {group}",
            f"SELECT count({dl}) AS met {base} AND {dl} >= {tg.fixed_2030_mbps!r} {group}",
        ]
        main, met_fixed, met_mobile, met_2030 = client.query(";\n".join(stmts))

        def counts(series_list: list[Series]) -> dict[tuple[tuple[str, ...], int], int]:
            return {(tuple(s.tags.get(t, "") for t in LINE_TAGS), int(v[0])): int(v[1])
                    for s in series_list for v in s.values if v[1]}

        met = counts(met_fixed) | counts(met_mobile)
        met2030 = counts(met_2030)
        out = []
        for s in main:
            key = tuple(s.tags.get(t, "") for t in LINE_TAGS)
            for row in s.rows():
                t = int(row["time"])
                if (key[0], t) not in wanted or not row["tests"]:
                    continue
                fields: dict[str, float | int | bool | str] = {
                    "tests": int(row["tests"]), "met": met.get((key, t), 0),
                    "met_2030": met2030.get((key, t), 0)}
                for f in ("median_mbps", "p10_mbps", "p90_mbps", "upload_median_mbps"):
                    if row.get(f) is not None:
                        fields[f] = float(row[f])
                tags = {k: v for k, v in zip(LINE_TAGS, key, strict=True) if v}
                out.append(line(kind.measurement, tags, fields, t))
        return out

    def _status_lines(self, client: InfluxClient, kind: _Kind, a: int, b: int,
                      probes: list[str], wanted: set[tuple[str, int]]) -> list[str]:
        sel = ", ".join(f"last({_q(f)}) AS {_q(f)}" for f in STATUS_FIELDS)
        where = (f"FROM {_q(PROBE_STATUS)} WHERE time >= {a}ms AND time < {b}ms AND "
                 f"{_probe_filter(probes)}")
        group = f"GROUP BY time({kind.step}), {', '.join(_q(t) for t in PROBE_TAGS)} fill(none)"
        main = client.query(
            f"SELECT {sel}, max({_q('spool_depth')}) AS spool_max {where} {group}")[0]
        out = []
        lasts = self._last_times(client, kind, a, b, probes)
        for s in main:
            key = tuple(s.tags.get(t, "") for t in PROBE_TAGS)
            for row in s.rows():
                t = int(row["time"])
                if (key[0], t) not in wanted or row.get("online") is None:
                    continue
                fields: dict[str, float | int | bool | str] = {}
                for f in STATUS_FIELDS:
                    v = row.get(f)
                    if v is None:
                        continue
                    fields[f] = v if isinstance(v, str) else int(v)
                fields["spool_max"] = int(row.get("spool_max") or 0)
                at = lasts.get((key, t))
                if at is not None:
                    fields["last_at_ms"] = at
                tags = {k: v for k, v in zip(PROBE_TAGS, key, strict=True) if v}
                out.append(line(kind.measurement, tags, fields, t))
        return out

    def _last_times(self, client: InfluxClient, kind: _Kind, a: int, b: int,
                    probes: list[str]) -> dict[tuple[tuple[str, ...], int], int]:
        """Time of the last status in each bucket (``last_at_ms``: "last seen")."""
        out: dict[tuple[tuple[str, ...], int], int] = {}
        t = a
        stmts, starts = [], []
        while t < b:
            nxt = t + kind.bucket_ms
            stmts.append(f"SELECT last({_q('online')}) FROM {_q(PROBE_STATUS)} WHERE "
                         f"time >= {t}ms AND time < {nxt}ms AND {_probe_filter(probes)} "
                         f"GROUP BY {', '.join(_q(x) for x in PROBE_TAGS)}")
            starts.append(t)
            t = nxt
        for i in range(0, len(stmts), 100):
            for start, series_list in zip(starts[i:i + 100],
                                          client.query(";\n".join(stmts[i:i + 100])),
                                          strict=True):
                for s in series_list:
                    key = tuple(s.tags.get(x, "") for x in PROBE_TAGS)
                    out[(key, start)] = int(s.values[0][0])
        return out

    # ------------------------------------------------------------------ day packs

    def _recompute_packs(self, client: InfluxClient, dirty: dict[str, set[int]]) -> int:
        """Rewrite the day packs (collector/core/packs.py) of every dirty (probe, local
        day): all the day's throughput tests, read again from the raw points."""
        spans: dict[tuple[int, int], list[tuple[str, set[int]]]] = {}
        for probe, hours in dirty.items():
            days = {day_start(h) for h in hours}
            spans.setdefault((min(days), max(days) + DAY_MS), []).append((probe, days))
        lines: list[str] = []
        for (a, b), members in sorted(spans.items()):
            for i in range(0, len(members), _PROBES_PER_QUERY):
                chunk = members[i:i + _PROBES_PER_QUERY]
                wanted = {(p, d) for p, days in chunk for d in days}
                lines += pack_lines(client, a, b, [p for p, _ in chunk], wanted)
        for i in range(0, len(lines), 2000):
            client.write_lines(lines[i:i + 2000])
        return len(lines)

    # ------------------------------------------------------------------ thread

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.run_round()
        self.run_round()  # what the last batches touched, before the collector exits

    def run_round(self) -> None:
        """One round of the thread: recompute what is dirty, and once more what was new
        in the previous round."""
        # Each bucket is recomputed a second time one round later: a point another
        # collector worker wrote while this one was reading, or one the server had not
        # made readable yet (InfluxDB 3.x answers queries from persisted WAL files), is
        # in the second reading.
        with self._lock:
            fresh = (self._results, self._statuses)
            self._results, self._statuses = {}, {}
        again, self._again = self._again, ({}, {})
        self._remark(*fresh)
        self._remark(*again)
        if not self.dirty():
            return
        try:
            self.run_once()
            self._again = fresh  # only what was new this round gets a second reading
        except Exception as exc:
            # Not fatal: raw results are stored; the pairs stay dirty for the next round.
            log.warning("rollups not recomputed (%s); %d (probe, hour) pairs kept for the "
                        "next try in %.0f s", exc, self.dirty(), self.interval_s)

    def start(self, probes: Iterable[str] = ()) -> None:
        """Recompute dirty buckets every ``interval_s`` in a thread; first the last two
        hours of ``probes`` (the registry's): what a collector that stopped between a
        write and its next round left behind (the dirty marks live in memory; older
        gaps: ``netmon-collector rollups rebuild``)."""
        now = to_ms(datetime.now(UTC))
        recent = [(p, now - h * HOUR_MS) for p in probes for h in (0, 1)]
        self.touch_times(recent, recent)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="rollups", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread after one last round."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
            self._thread = None


def pack_query(a: int, b: int, probes: list[str] | None = None) -> str:
    """The raw read a day pack is made of: the bulletin's own (collector/bulletin/data.py),
    grouped by the line's tags and ``status``, over [a, b) (epoch ms)."""
    methods = " OR ".join(f"{_q('method')} = {influxql_string(m)}" for m in THROUGHPUT_METHODS)
    where = f"time >= {a}ms AND time < {b}ms AND ({methods})"
    if probes:
        where += f" AND {_probe_filter(probes)}"
    select = ", ".join(_q(f) for f in ("cross_traffic", *packs.PACK_FIELDS))
    group = ", ".join(_q(t) for t in (*LINE_TAGS, "status"))
    return f"SELECT {select} FROM {_q(RESULTS)} WHERE {where} GROUP BY {group}"


def pack_lines(client: InfluxClient, a: int, b: int, probes: list[str],
               wanted: set[tuple[str, int]]) -> list[str]:
    """Line protocol of the day packs of ``probes`` over the local days in [a, b), for the
    (probe, day start) pairs in ``wanted``."""
    by_day: dict[tuple[tuple[str, ...], int], list[tuple[str, NDArray[np.float64]]]] = {}
    for s in client.query(pack_query(a, b, probes), binary=True)[0]:
        if not s.values:
            continue
        key = tuple(s.tags.get(t, "") for t in LINE_TAGS)
        arr = np.array(s.values, dtype=np.float64).reshape(len(s.values), -1)
        local = arr[:, 0].astype(np.int64) + _OFFSET_MS
        days = local - local % DAY_MS - _OFFSET_MS
        for d in np.unique(days):
            if (key[0], int(d)) in wanted:
                by_day.setdefault((key, int(d)), []).append(
                    (s.tags.get("status", ""), arr[days == d]))
    out: list[str] = []
    for (key, d), series in by_day.items():
        status = [st for st, _ in series]
        rows = np.concatenate([r for _, r in series])
        sidx = np.concatenate([np.full(len(r), i, np.uint8) for i, (_, r) in enumerate(series)])
        tags = {k: v for k, v in zip(LINE_TAGS, key, strict=True) if v}
        for part, p0 in enumerate(range(0, len(rows), packs.MAX_TESTS)):
            sl = slice(p0, p0 + packs.MAX_TESTS)
            r = rows[sl]
            dt = packs.DayTests(
                d, r[:, 0].astype(np.int64), status, sidx[sl],
                np.nan_to_num(r[:, 1], nan=0.0) > 0,
                {f: r[:, 2 + i] for i, f in enumerate(packs.PACK_FIELDS)})
            out.append(line(packs.PACK, tags, {"n": dt.size, "v": packs.VERSION,
                                               "data": packs.encode(dt)}, d + part))
    return out


def _bucket_fields(client: InfluxClient, stmts: list[str], wanted: set[tuple[str, int]],
                   counted: Callable[[str], bool]
                   ) -> dict[tuple[tuple[str, ...], int], dict[str, float | int | bool | str]]:
    """Run ``stmts`` (each ``GROUP BY time(...)`` and the line's tags) and merge their
    columns per (line tags, bucket start) for the (probe, bucket) pairs in ``wanted``:
    ``counted`` columns as ints, the others as floats, missing values left out."""
    points: dict[tuple[tuple[str, ...], int], dict[str, float | int | bool | str]] = {}
    for series_list in client.query(";\n".join(stmts)):
        for series in series_list:
            key = tuple(series.tags.get(t, "") for t in LINE_TAGS)
            for row in series.rows():
                t = int(row.pop("time"))
                if (key[0], t) not in wanted:
                    continue
                fields = points.setdefault((key, t), {})
                for name, value in row.items():
                    if value is not None:
                        fields[name] = int(value) if counted(name) else float(value)
    return points


def _quality_lines(client: InfluxClient, kind: _Kind, a: int, b: int, probes: list[str],
                   wanted: set[tuple[str, int]]) -> list[str]:
    """``qual_*`` points: per line and bucket, the quality dashboard's figures."""
    def one_of(names: Iterable[str]) -> str:
        return "(" + " OR ".join(f"{_q('method')} = {influxql_string(m)}" for m in names) + ")"

    rng = f"time >= {a}ms AND time < {b}ms AND {_probe_filter(probes)}"
    ok = f"{_q('status')} = 'ok'"
    group = f"GROUP BY time({kind.step}), {', '.join(_q(t) for t in LINE_TAGS)} fill(none)"
    stmts = [
        f"SELECT count({_q('rtt_ms')}) AS latency_tests, median({_q('rtt_ms')}) AS "
        f"rtt_median_ms, median({_q('jitter_ms')}) AS jitter_median_ms, "
        f"sum({_q('loss_pct')}) AS loss_sum, count({_q('loss_pct')}) AS loss_tests "
        f"FROM {_q(RESULTS)} WHERE {rng} AND {one_of(LATENCY_METHODS)} AND {ok} {group}",
        f"SELECT median({_q('loaded_rtt_ms')}) AS loaded_rtt_median_ms, "
        f"median({_q('idle_rtt_ms')}) AS idle_rtt_median_ms "
        f"FROM {_q(RESULTS)} WHERE {rng} AND {ok} {group}",
        f"SELECT count({_q('download_mbps')}) AS device_limited FROM {_q(RESULTS)} "
        f"WHERE {rng} AND {one_of(THROUGHPUT_METHODS)} AND {ok} AND {DEVICE_LIMITED} {group}",
        f"SELECT sum({_q('ipv6_reachable')}) AS ipv6_ready, "
        f"count({_q('ipv6_reachable')}) AS ipv6_tests FROM {_q(RESULTS)} "
        f"WHERE {rng} AND {one_of((IPV6_METHOD,))} {group}",
        f"SELECT sum({_q('reachable')}) AS tslcd_reachable, "
        f"count({_q('reachable')}) AS tslcd_tests FROM {_q(RESULTS)} "
        f"WHERE {rng} AND {one_of((REACHABILITY_METHOD,))} {group}",
    ]
    # counts (and sums of 0/1 metrics) are ints; the rest floats
    points = _bucket_fields(client, stmts, wanted, lambda name: name.endswith("_tests") or
                            name in ("device_limited", "ipv6_ready", "tslcd_reachable"))
    out = []
    for (key, t), fields in sorted(points.items()):
        # a count() with no matching point is 0 in a bucket other statements filled
        if not any(fields.get(f) for f in ("latency_tests", "loss_tests", "device_limited",
                                           "ipv6_tests", "tslcd_tests")) and not any(
                f in fields for f in ("loaded_rtt_median_ms", "idle_rtt_median_ms")):
            continue
        tags = {k: v for k, v in zip(LINE_TAGS, key, strict=True) if v}
        out.append(line(kind.measurement, tags, fields, t))
    return out


def _idle_tput(kind: _Kind, a: int, b: int, probes: list[str],
               extra: str = "") -> tuple[str, str]:
    """FROM/WHERE of the successful throughput tests on an idle line (no cross traffic)
    of ``probes`` over [a, b) (epoch ms), ``extra`` ANDed, and the GROUP BY per line and
    ``kind``'s bucket: what the throughput, line-day and radio rollups aggregate."""
    methods = " OR ".join(f"{_q('method')} = {influxql_string(m)}" for m in THROUGHPUT_METHODS)
    base = (f"FROM {_q(RESULTS)} WHERE time >= {a}ms AND time < {b}ms AND ({methods}) "
            f"AND {_q('status')} = 'ok' AND {_q('cross_traffic')} = 0 AND "
            + (f"{extra} AND " if extra else "") + _probe_filter(probes))
    group = f"GROUP BY time({kind.step}), {', '.join(_q(t) for t in LINE_TAGS)} fill(none)"
    return base, group


def _line_day_lines(client: InfluxClient, kind: _Kind, a: int, b: int, probes: list[str],
                    wanted: set[tuple[str, int]], peak: tuple[int, int]) -> list[str]:
    """``line_1d`` points: per line and local day, what the probe map and the peak-hour
    panels show (successful idle-line throughput tests: ``tests``, ``median_mbps``,
    ``latitude``, ``longitude``; those started in the peak hours: ``peak_tests``,
    ``peak_median_mbps``)."""
    dl = _q("download_mbps")
    base, group = _idle_tput(kind, a, b, probes)
    hour = _q("local_hour")
    stmts = [
        f"SELECT count({dl}) AS tests, median({dl}) AS median_mbps, "
        f"last({_q('latitude')}) AS latitude, last({_q('longitude')}) AS longitude "
        f"{base} {group}",
        f"SELECT count({dl}) AS peak_tests, median({dl}) AS peak_median_mbps {base} "
        f"AND {hour} >= {peak[0]} AND {hour} < {peak[1]} {group}",
    ]
    points = _bucket_fields(client, stmts, wanted, lambda name: name.endswith("tests"))
    out = []
    for (key, t), fields in sorted(points.items()):
        if fields.get("tests") or fields.get("peak_tests"):
            tags = {k: v for k, v in zip(LINE_TAGS, key, strict=True) if v}
            out.append(line(kind.measurement, tags, fields, t))
    return out


def _usage_lines(client: InfluxClient, kind: _Kind, a: int, b: int, probes: list[str],
                 wanted: set[tuple[str, int]]) -> list[str]:
    """``usage_1d`` points: per link (the line's tags) and local day, the last data usage
    the day's statuses reported (``used_bytes``, ``budget_bytes``, ``used_pct``, each its
    own last value, as the raw table read them), for the probes dashboard's data budget."""
    group = f"GROUP BY time({kind.step}), {', '.join(_q(t) for t in LINE_TAGS)} fill(none)"
    stmt = (f"SELECT last({_q('used_bytes')}) AS used_bytes, "
            f"last({_q('budget_bytes')}) AS budget_bytes, "
            f"last({_q('used_pct')}) AS used_pct FROM {_q(LINK_USAGE)} "
            f"WHERE time >= {a}ms AND time < {b}ms AND {_probe_filter(probes)} {group}")
    points = _bucket_fields(client, [stmt], wanted, lambda name: name != "used_pct")
    out = []
    for (key, t), fields in sorted(points.items()):
        if "used_bytes" in fields:  # not the planned-runs-only points of unlisted links
            tags = {k: v for k, v in zip(LINE_TAGS, key, strict=True) if v}
            out.append(line(kind.measurement, tags, fields, t))
    return out


def _radio_lines(client: InfluxClient, kind: _Kind, a: int, b: int, probes: list[str],
                 wanted: set[tuple[str, int]]) -> list[str]:
    """``radio_1d`` points: per mobile line and local day, over the successful idle-line
    throughput tests that reported a radio level (:data:`RADIO_LEVELS`): how many
    (``rsrp_tests``), the level's median (``rsrp_median_dbm``) and the download's median
    over the same tests (``rsrp_download_median_mbps``); ``sinr_*`` likewise. One dot
    per line-day in the radio scatter plots instead of one per test."""
    dl = _q("download_mbps")
    base, group = _idle_tput(kind, a, b, probes, f"{_q('access')} = 'mobile'")
    stmts = [f"SELECT count({_q(field)}) AS {name}_tests, median({_q(field)}) AS "
             f"{name}_median_{unit}, median({dl}) AS {name}_download_median_mbps {base} "
             f"AND {_q(field)} > -1000 {group}"
             for field, (name, unit) in RADIO_LEVELS.items()]
    points = _bucket_fields(client, stmts, wanted, lambda name: name.endswith("_tests"))
    out = []
    for (key, t), fields in sorted(points.items()):
        if any(fields.get(f"{name}_tests") for name, _u in RADIO_LEVELS.values()):
            tags = {k: v for k, v in zip(LINE_TAGS, key, strict=True) if v}
            out.append(line(kind.measurement, tags, {k: v for k, v in fields.items()
                                                     if v is not None}, t))
    return out


# ---------------------------------------------------------------------- per access type

#: ``qual_*`` median fields of which ``qual_access_*`` holds the median over the lines.
ACCESS_MEDIANS = ("rtt_median_ms", "jitter_median_ms", "loaded_rtt_median_ms",
                  "idle_rtt_median_ms")
#: ``qual_*`` count and sum fields of which ``qual_access_*`` holds the sum over the lines.
ACCESS_SUMS = ("latency_tests", "loss_sum", "loss_tests")
#: ``qual_*`` readiness counts of which ``qual_commune_*`` holds the sums per unit.
COMMUNE_SUMS = ("ipv6_ready", "ipv6_tests", "tslcd_reachable", "tslcd_tests")
#: Tags of a ``qual_commune_*`` point.
COMMUNE_TAGS = ("commune_code", "commune", "access")
#: (grouped measurement, the per-line one it is made of, its bucket): hourly and daily.
_ACCESS_KINDS = (
    (_Kind(QUAL_ACCESS_1H, "1h", HOUR_MS, False, "qual_access"), QUAL_1H),
    (_Kind(QUAL_ACCESS_1D, _DAY_STEP, DAY_MS, False, "qual_access"), QUAL_1D),
    (_Kind(QUAL_COMMUNE_1H, "1h", HOUR_MS, False, "qual_commune"), QUAL_1H),
    (_Kind(QUAL_COMMUNE_1D, _DAY_STEP, DAY_MS, False, "qual_commune"), QUAL_1D),
)
#: Buckets per statement at most (a rebuild's month of hours: 720).
_ACCESS_BUCKETS_PER_QUERY = 800


def bucket_runs(buckets: Iterable[int], step_ms: int, most: int) -> list[tuple[int, int]]:
    """[start, end) spans of consecutive bucket starts, each at most ``most`` buckets."""
    out: list[tuple[int, int]] = []
    for t in sorted(set(buckets)):
        if out and out[-1][1] == t and (t - out[-1][0]) // step_ms < most:
            out[-1] = (out[-1][0], t + step_ms)
        else:
            out.append((t, t + step_ms))
    return out


def _recompute_access_quality(client: InfluxClient, dirty: dict[str, set[int]]) -> int:
    """Rewrite the ``qual_access_*`` and ``qual_commune_*`` points of every hour and local
    day any probe's batch touched (every access type and unit: a bucket's points are made
    of all its lines), from the ``qual_*`` points this round has just rewritten."""
    lines: list[str] = []
    for kind, source in _ACCESS_KINDS:
        make = access_quality_lines if kind.family == "qual_access" \
            else commune_readiness_lines
        buckets = {_bucket(kind, h) for hours in dirty.values() for h in hours}
        for a, b in bucket_runs(buckets, kind.bucket_ms, _ACCESS_BUCKETS_PER_QUERY):
            lines += make(client, kind.measurement, source, kind.step, a, b)
    for i in range(0, len(lines), 5000):
        client.write_lines(lines[i:i + 5000])
    return len(lines)


def access_quality_lines(client: InfluxClient, measurement: str, source: str, step: str,
                         a: int, b: int) -> list[str]:
    """``qual_access_*`` points of the buckets in [a, b) (epoch ms): per access type and
    bucket, the median of every line's ``source`` (``qual_1h``/``qual_1d``) point for each
    of :data:`ACCESS_MEDIANS` and the sum of each of :data:`ACCESS_SUMS`. So a quality
    trend over every line reads one point per access type and bucket and shows what it
    showed from the lines' points (the median of their medians; loss: a sum over a
    count) in every Grafana bucket holding at most one rollup bucket."""
    cols = [f"median({_q(f)}) AS {_q(f)}" for f in ACCESS_MEDIANS] + \
        [f"sum({_q(f)}) AS {_q(f)}" for f in ACCESS_SUMS]
    stmt = (f"SELECT {', '.join(cols)} FROM {_q(source)} WHERE time >= {a}ms AND "
            f"time < {b}ms GROUP BY time({step}), {_q('access')} fill(none)")
    out = []
    for s in client.query(stmt)[0]:
        access = s.tags.get("access", "")
        for row in s.rows():
            fields: dict[str, float | int | bool | str] = {
                f: (int(row[f]) if f.endswith("_tests") else float(row[f]))
                for f in (*ACCESS_MEDIANS, *ACCESS_SUMS) if row.get(f) is not None}
            # a bucket of IPv6/TSLCD-only lines has none of these fields
            if access and any(f in fields for f in ("latency_tests", *ACCESS_MEDIANS)):
                out.append(line(measurement, {"access": access}, fields, int(row["time"])))
    return out


def commune_readiness_lines(client: InfluxClient, measurement: str, source: str, step: str,
                            a: int, b: int) -> list[str]:
    """``qual_commune_*`` points of the buckets in [a, b) (epoch ms): per unit, access type
    and bucket, the sum of every line's ``source`` point for each of
    :data:`COMMUNE_SUMS`. The readiness tables (sums over counts per unit: exact) then
    read a point per unit and access type, not one per line."""
    cols = ", ".join(f"sum({_q(f)}) AS {_q(f)}" for f in COMMUNE_SUMS)
    stmt = (f"SELECT {cols} FROM {_q(source)} WHERE time >= {a}ms AND time < {b}ms "
            f"GROUP BY time({step}), {', '.join(_q(t) for t in COMMUNE_TAGS)} fill(none)")
    out = []
    for s in client.query(stmt)[0]:
        tags = {t: s.tags[t] for t in COMMUNE_TAGS if s.tags.get(t)}
        for row in s.rows():
            fields: dict[str, float | int | bool | str] = {
                f: int(row[f]) for f in COMMUNE_SUMS if row.get(f) is not None}
            if fields.get("ipv6_tests") or fields.get("tslcd_tests"):
                out.append(line(measurement, tags, fields, int(row["time"])))
    return out


def _recompute_last_results(client: InfluxClient, dirty: dict[str, set[int]]) -> int:
    """Rewrite the ``last_result`` points of the probes with new results."""
    since: dict[int, list[str]] = {}
    for probe, hours in dirty.items():
        if hours:
            since.setdefault(min(hours), []).append(probe)
    lines: list[str] = []
    for a, probes in sorted(since.items()):
        for i in range(0, len(probes), _PROBES_PER_QUERY):
            lines += last_result_lines(client, a, probes[i:i + _PROBES_PER_QUERY])
    for i in range(0, len(lines), 5000):
        client.write_lines(lines[i:i + 5000])
    return len(lines)


def last_result_lines(client: InfluxClient, since_ms: int, probes: list[str]) -> list[str]:
    """``last_result`` points of ``probes``: per line with a result at or after
    ``since_ms`` (the earliest hour a batch touched), ``last_ms`` = when its latest result
    started. The latest is at or after that hour, so a late result older than a line's
    latest leaves its point as it was, and a line without new results keeps its point."""
    stmt = (f"SELECT last({_q('duration_s')}) FROM {_q(RESULTS)} WHERE time >= {since_ms}ms "
            f"AND {_probe_filter(probes)} GROUP BY {', '.join(_q(t) for t in LINE_TAGS)}")
    out = []
    for s in client.query(stmt)[0]:
        if s.values:
            tags = {k: s.tags[k] for k in LINE_TAGS if s.tags.get(k)}
            out.append(line(LAST_RESULT, tags, {"last_ms": int(s.values[0][0])},
                            LAST_RESULT_AT_MS))
    return out


# ---------------------------------------------------------------------- dashboards' switch

#: Where the dashboards' ``resolution`` variable is read from (one string field).
SWITCH = "rollup_switch"
#: The switch points sit at this instant plus a range length: 2100-01-01T00:00Z. Epoch 0
#: would make the query shorter, but a finite retention policy (``retention = "520w"``)
#: makes InfluxDB 1.x refuse points that old; nothing drops points from the future.
SWITCH_BASE_MS = LAST_RESULT_AT_MS
#: (shortest range, resolution): raw points below 2 days, hourly rollups below 8 days
#: (so "last 7 days" keeps hourly detail), daily rollups from 8 days on.
SWITCH_STEPS = ((0, "raw"), (2 * DAY_MS, "1h"), (8 * DAY_MS, "1d"))


def switch_lines(rollups: bool = True) -> list[str]:
    """The ``rollup_switch`` points: at ``SWITCH_BASE_MS + shortest range`` the resolution
    for ranges at least that long. The latest point at or before ``base + range`` names
    the resolution, which influxd itself finds for the dashboards' variable query. Without
    ``rollups`` (``[rollups] enabled = false``) every range reads raw: the same points say
    ``raw``, overwriting what an earlier collector with rollups wrote."""
    return [line(SWITCH, {}, {"resolution": res if rollups else "raw"},
                 SWITCH_BASE_MS + shortest) for shortest, res in SWITCH_STEPS]


def write_switch(client: InfluxClient, rollups: bool = True) -> None:
    """Write (again: the same points, idempotent) the dashboards' switch points."""
    client.write_lines(switch_lines(rollups))
