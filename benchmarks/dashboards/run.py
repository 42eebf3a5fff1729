"""Benchmark: how long InfluxDB takes to answer each dashboard and alert query.

Loads ``probes x days`` of data with the collector's schema (``collector.schema.line``:
hourly throughput and latency tests per link, hourly TSLCD and IPv6 tests, a status
every ``--status-minutes``) into a fresh influxd 1.x, then runs every panel query of the
Vietnamese dashboards over the last ``days`` (variables "All", ``$__interval`` sized for
1000 points, the hidden ``resolution`` variable refreshed from influxd for that range, as
Grafana would) and every alert query, ``--runs`` times each, and prints the median
seconds per dashboard (sum over its queries, what a full page refresh costs InfluxDB
when run one after another) and the slowest queries.

The rollups (collector/core/rollups.py) are built after the load, as the collector would
have kept them, and the time that takes is printed. With ``--baseline REV`` the
dashboards of that git revision (its own builder, run from a ``git archive`` copy) are
timed on the same data in the same run: per dashboard both medians and the ratio. CPU
seconds of influxd (``/proc/PID/stat``) and of this process are printed too: on a shared
machine they vary less than wall time.

The collector's ``registry`` points (every 5 minutes per probe) are only read over the
last 15 minutes (and by ``SHOW TAG VALUES``, from the index): they are written for the
last ``--registry-hours`` only, which keeps a year of data loadable here.

    python3 benchmarks/dashboards/run.py                  # 300 probes, 7 days, 3 runs
    python3 benchmarks/dashboards/run.py --probes 300 --days 30 --baseline 8c9a0b2
    python3 benchmarks/dashboards/run.py --probes 50 --days 2 --runs 2   # quick

Prints one JSON object on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from array import array
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.baseline import worktree  # noqa: E402
from collector.config import InfluxSettings  # noqa: E402
from collector.core.influx import InfluxClient  # noqa: E402
from collector.core.registry import default_units  # noqa: E402
from collector.core.registrymetrics import REGISTRY, probe_activity  # noqa: E402
from collector.core.rollups import (  # noqa: E402
    ACCESS_MEDIANS,
    ACCESS_SUMS,
    COMMUNE_SUMS,
    COMMUNE_TAGS,
    LAST_RESULT,
    LAST_RESULT_AT_MS,
    LINE_1D,
    LINE_TAGS,
    RADIO_1D,
    USAGE_1D,
    Rollups,
    day_start,
    hour_start,
    write_switch,
)
from collector.core.schema import LINK_USAGE, PROBE_STATUS, RESULTS, line  # noqa: E402
from collector.dashboards import queries as Q  # noqa: E402
from collector.dashboards.build import BuildConfig, build_all  # noqa: E402
from collector.dashboards.provisioning import alert_rules  # noqa: E402
from devstack import services  # noqa: E402
from tests.helpers.dashboards import (  # noqa: E402
    VN,
    fake_grafana_interpolate,
    fake_grafana_resolution,
)

#: Run in a revision's copy: its dashboards' queries as JSON (the builder's interface
#: has been the same since the dashboards have had panel keys).
_DUMP = """
import json, sys
from collector.dashboards.build import BuildConfig, build_all
out = {}
for name, dash in build_all(BuildConfig.from_config(), "vi").items():
    out[name] = [[p.key, p.interval, t.ref_id, t.query] for p in dash.data_panels()
                 for t in p.targets]
json.dump(out, sys.stdout)
"""

Queries = dict[str, list[tuple[str, str | None, str, str, int | None]]]


def current_queries() -> Queries:
    """This checkout's dashboards: name -> (panel key, min interval, refId, query, max
    data points)."""
    return {name: [(p.key, p.interval, t.ref_id, t.query, p.max_data_points)
                   for p in dash.data_panels() for t in p.targets]
            for name, dash in build_all(BuildConfig.from_config(), "vi").items()}


def baseline_queries(tree: Path) -> Queries:
    """The dashboards of another revision's copy, built by its own code."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", _DUMP], cwd=tree, env=env, check=True,
                         capture_output=True, text=True).stdout
    return {name: [(k, i, r, q, None) for k, i, r, q in rows]
            for name, rows in json.loads(out).items()}


def _pct(values: list[float], pct: float) -> float | None:
    """InfluxQL's nearest-rank percentile (None where it returns nothing)."""
    ordered = sorted(values)
    rank = int(len(ordered) * pct / 100.0 + 0.5)
    return ordered[rank - 1] if rank >= 1 else None


class _AccessBuckets:
    """Part of the STAND-IN below: the per-access and per-unit quality points
    (``qual_access_*``, ``qual_commune_*``) made of every probe's per-line ``qual_*``
    points (per access type and bucket: the median of the lines' medians, the sum of their
    counts; per unit, access type and bucket: the sums of the IPv6/TSLCD counts), across
    the probes."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, tuple[tuple[str, str], ...], int],
                          dict[str, array[float]]] = {}

    def add(self, measurement: str, tags: dict[str, str], ts: int,
            fields: dict[str, float | int | bool | str]) -> None:
        """Record one line's ``qual_*`` point."""
        # an IPv6/TSLCD-only line is not in the per-access points
        if any(f in fields for f in ("latency_tests", *ACCESS_MEDIANS)):
            self._add((measurement.replace("qual_", "qual_access_"),
                       (("access", tags["access"]),), ts), fields, (*ACCESS_MEDIANS,
                                                                    *ACCESS_SUMS))
        if any(fields.get(f) for f in ("ipv6_tests", "tslcd_tests")):
            self._add((measurement.replace("qual_", "qual_commune_"),
                       tuple((t, tags[t]) for t in COMMUNE_TAGS if tags.get(t)), ts), fields,
                      COMMUNE_SUMS)

    def _add(self, key: tuple[str, tuple[tuple[str, str], ...], int],
             fields: dict[str, float | int | bool | str], names: tuple[str, ...]) -> None:
        got = self.values.setdefault(key, {})
        for name in names:
            if name in fields:
                got.setdefault(name, array("d")).append(float(fields[name]))

    def lines(self) -> list[str]:
        """The per-access and per-unit points of what was added."""
        out = []
        for (measurement, tags, ts), v in self.values.items():
            fields: dict[str, float | int | bool | str] = {
                name: statistics.median(v[name]) for name in ACCESS_MEDIANS if name in v}
            for name in (*ACCESS_SUMS, *COMMUNE_SUMS):
                if name in v:
                    total = math.fsum(v[name])
                    fields[name] = total if name == "loss_sum" else int(total)
            out.append(line(measurement, dict(tags), fields, ts))
        return out


class _Buckets:
    """A STAND-IN for Rollups.rebuild in ``--synthetic-rollups`` runs: the rollup points
    computed here from the generated values, in the rollups' measurements, tags, fields
    and timestamps (what the queries' cost depends on), without the hours of recomputing
    a year through InfluxDB. Tests (tests/dashboards) check the real rollups' values."""

    def __init__(self, per_access: _AccessBuckets) -> None:
        self.values: dict[tuple[str, tuple[tuple[str, str], ...], int], dict[str, list[float]]] \
            = {}
        self.per_access = per_access

    def add(self, family: str, tags: dict[str, str], ts: int, **fields: float) -> None:
        """Record one test's values in its hour and its local day."""
        key = tuple(sorted((k, tags[k]) for k in LINE_TAGS if tags.get(k)))
        for bucket in (("1h", hour_start(ts)), ("1d", day_start(ts))):
            got = self.values.setdefault((f"{family}_{bucket[0]}", key, bucket[1]), {})
            for name, value in fields.items():
                got.setdefault(name, []).append(value)

    def lines(self, targets: tuple[float, float, float], peak: tuple[int, int]) -> list[str]:
        """The rollup points (tput, qual, line_1d, radio_1d, usage_1d, status) of what was
        added."""
        fixed, mobile, f2030 = targets
        med = statistics.median
        out = []
        for (measurement, key, ts), v in self.values.items():
            tags = dict(key)
            fields: dict[str, float | int | bool | str] = {}
            if measurement in ("radio_1h", "usage_1h"):
                continue  # daily only
            if measurement == RADIO_1D:
                fields = {"rsrp_tests": len(v["rsrp"]), "rsrp_median_dbm": med(v["rsrp"]),
                          "rsrp_download_median_mbps": med(v["down"]),
                          "sinr_tests": len(v["sinr"]), "sinr_median_db": med(v["sinr"]),
                          "sinr_download_median_mbps": med(v["down"])}
            elif measurement == USAGE_1D:
                last = max(range(len(v["at"])), key=v["at"].__getitem__)
                fields = {"used_bytes": int(v["used"][last]),
                          "budget_bytes": int(v["budget"][last]), "used_pct": v["pct"][last]}
            elif measurement.startswith("tput"):
                down = v["down"]
                target = fixed if tags["access"] == "fixed" else mobile
                fields = {"tests": len(down), "median_mbps": med(down),
                          "upload_median_mbps": med(v["up"]),
                          "met": sum(d >= target for d in down),
                          "met_2030": sum(d >= f2030 for d in down)}
                for name, pct in (("p10_mbps", 10), ("p90_mbps", 90)):
                    value = _pct(down, pct)
                    if value is not None:
                        fields[name] = value
                if measurement == "tput_1d":
                    peak_down = [d for d, h in zip(down, v["hour"], strict=True)
                                 if peak[0] <= h < peak[1]]
                    line_fields: dict[str, float | int | bool | str] = {
                        "tests": len(down), "median_mbps": med(down), "latitude": 18.3,
                        "longitude": 105.9}
                    if peak_down:
                        line_fields |= {"peak_tests": len(peak_down),
                                        "peak_median_mbps": med(peak_down)}
                    out.append(line(LINE_1D, tags, line_fields, ts))
            elif measurement.startswith("qual"):
                if "rtt" in v:
                    fields |= {"latency_tests": len(v["rtt"]), "rtt_median_ms": med(v["rtt"]),
                               "jitter_median_ms": med(v["jitter"]),
                               "loss_sum": sum(v["loss"]), "loss_tests": len(v["loss"])}
                if "loaded" in v:
                    fields |= {"loaded_rtt_median_ms": med(v["loaded"]),
                               "idle_rtt_median_ms": med(v["idle"])}
                if "reachable" in v:
                    fields |= {"tslcd_reachable": int(sum(v["reachable"])),
                               "tslcd_tests": len(v["reachable"])}
                if "ipv6" in v:
                    fields |= {"ipv6_ready": int(sum(v["ipv6"])), "ipv6_tests": len(v["ipv6"])}
                self.per_access.add(measurement, tags, ts, fields)
            else:  # status
                fields = {"online": 1, "clock_synced": 1, "spool_depth": 0,
                          "config_version": 1, "last_at_ms": int(max(v["at"])),
                          "spool_max": 0}
            out.append(line(measurement, tags, fields, ts))
        return out


def _line_key(tags: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, tags[k]) for k in LINE_TAGS if tags.get(k)))


def wait_compactions(url: str, quiet_s: float = 30, deadline_s: float = 3600) -> None:
    """Until influxd has had no compaction running for ``quiet_s`` (its ``/debug/vars``):
    a load of millions of points is compacted for minutes after it, and queries timed
    meanwhile measure that instead (a year at 300 probes: overview 3.7 s during it)."""
    t0 = last_busy = time.perf_counter()
    while time.perf_counter() - last_busy < quiet_s:
        if time.perf_counter() - t0 > deadline_s:
            print("influxd still compacting; timing anyway", file=sys.stderr)
            return
        with urllib.request.urlopen(f"{url}/debug/vars", timeout=30) as resp:
            stats = json.loads(resp.read())
        if any(v.get("name") == "tsm1_engine" and any(
                n for f, n in v.get("values", {}).items() if f.endswith("CompactionsActive"))
               for v in stats.values() if isinstance(v, dict)):
            last_busy = time.perf_counter()
        time.sleep(2)
    print(f"influxd's compactions done after {time.perf_counter() - t0:.0f} s",
          file=sys.stderr, flush=True)


def generate(probes: int, days: int, now_ms: int, seed: int = 1, status_minutes: int = 15,
             registry_hours: int = 24, synthetic_rollups: bool = False
             ) -> Iterator[list[str]]:
    """Line protocol for the data set (throughput, latency, TSLCD, IPv6, statuses, and the
    collector's registry points every 5 minutes), spread over Hà Tĩnh's current units;
    one list of lines per probe (a year of 300 probes does not fit in memory at once);
    with ``synthetic_rollups`` the rollup points too (:class:`_Buckets`)."""
    cfg = BuildConfig.from_config()
    tg = cfg.targets
    rng = random.Random(seed)
    start = now_ms - days * 86_400_000
    units = default_units().sorted_units()
    per_access = _AccessBuckets()
    for p in range(probes):
        probe = f"probe-{p:04d}"
        unit = units[p % len(units)]
        districts = unit.old_districts
        site = {"district": districts[0] if len(districts) == 1 else "",
                "commune": unit.name, "commune_code": unit.code,
                "site_type": "commune_office"}
        out: list[str] = []
        roll = _Buckets(per_access) if synthetic_rollups else None
        #: line tags -> its latest result (the last_result points)
        latest: dict[tuple[tuple[str, str], ...], int] = {}
        links = [("fibre", "fixed", ("VNPT", "Viettel", "FPT")[p % 3], 150.0),
                 ("mobile", "mobile", ("Viettel", "VinaPhone", "MobiFone")[p % 3], 71.0)]
        for ts in range(start, now_ms, 3_600_000):
            hour = float((ts // 3_600_000 + 7) % 24)  # Asia/Ho_Chi_Minh is UTC+7, no DST
            for link, access, isp, base in links:
                tags = {"probe": probe, "link": link, "access": access, "isp": isp,
                        "status": "ok", **site}
                down = max(0.5, rng.gauss(base, base * 0.3))
                loaded, idle = rng.uniform(40, 90), rng.uniform(8, 20)
                # a mobile link's modem reports its radio levels (the scatter plots)
                radio: dict[str, float] = {"radio_rsrp_dbm": rng.uniform(-120, -75),
                                           "radio_sinr_db": rng.uniform(-5, 25)} \
                    if access == "mobile" else {}
                fields: dict[str, float | int | bool | str] = {
                    "download_mbps": down, "upload_mbps": down / 3,
                    "loaded_rtt_ms": loaded, "idle_rtt_ms": idle, "duration_s": 10.0,
                    "latitude": 18.3, "longitude": 105.9, "cross_traffic": 0.0,
                    "local_hour": hour, "result_id": f"{probe}-{ts}-{link}"}
                out.append(line(RESULTS, tags | {"method": "iperf3", "target": "hn"},
                                {**fields, **radio}, ts))
                rtt, jitter = rng.uniform(10, 60), rng.uniform(1, 8)
                loss = rng.choice((0.0, 0.0, 1.0))
                out.append(line(RESULTS, tags | {"method": "icmp", "target": "8.8.8.8"},
                                {"rtt_ms": rtt, "jitter_ms": jitter,
                                 "loss_pct": loss, "duration_s": 5.0},
                                ts + 20_000))
                if roll is not None:
                    roll.add("tput", tags, ts, down=down, up=down / 3, hour=hour)
                    roll.add("qual", tags, ts, loaded=loaded, idle=idle)
                    roll.add("qual", tags, ts + 20_000, rtt=rtt, jitter=jitter, loss=loss)
                    if radio:
                        roll.add("radio", tags, ts, rsrp=radio["radio_rsrp_dbm"],
                                 sinr=radio["radio_sinr_db"], down=down)
                latest[_line_key(tags)] = ts + 20_000
            base_tags = {"probe": probe, "link": "fibre", "access": "fixed", "isp": "VNPT",
                         **site}
            ok = rng.random() > 0.1
            out.append(line(RESULTS, base_tags | {"method": "reachability", "target": "tslcd",
                                                  "status": "ok" if ok else "error"},
                            {"duration_s": 1.0, "reachable": 1.0 if ok else 0.0}
                            | ({} if ok else {"error_message": "x"}),
                            ts + 40_000))
            out.append(line(RESULTS, base_tags | {"method": "ipv6", "target": "v6",
                                                  "status": "ok"},
                            {"duration_s": 1.0, "ipv6_reachable": 1.0},
                            ts + 50_000))
            if roll is not None:
                roll.add("qual", base_tags, ts + 40_000, reachable=1.0 if ok else 0.0)
                roll.add("qual", base_tags, ts + 50_000, ipv6=1.0)
            latest[_line_key(base_tags)] = ts + 50_000
        for ts in range(max(start, now_ms - registry_hours * 3_600_000), now_ms, 300_000):
            out.append(line(REGISTRY, {"probe": probe, "unit": f"{unit.code} {unit.name}",
                                       **site},
                            {"registered": 1, "results_30m": 6, "offline": 0,
                             "latitude": 18.3, "longitude": 105.9}, ts))
        for ts in range(start, now_ms, status_minutes * 60_000):
            out.append(line(PROBE_STATUS, {"probe": probe, **site},
                            {"online": 1, "spool_depth": 0, "clock_synced": 1,
                             "last_result_ms": ts, "config_version": 1}, ts))
            if roll is not None:
                roll.add("status", {"probe": probe, **site}, ts, at=float(ts))
            usage_tags = {"probe": probe, "link": "mobile", "access": "mobile",
                          "isp": "Viettel", **site}
            out.append(line(LINK_USAGE, usage_tags,
                            {"used_bytes": ts % 10**9, "budget_bytes": 5 * 10**9,
                             "used_pct": (ts % 10**9) / 5e7}, ts))
            if roll is not None:
                roll.add("usage", usage_tags, ts, at=float(ts), used=float(ts % 10**9),
                         budget=5e9, pct=(ts % 10**9) / 5e7)
        if roll is not None:
            out += [line(LAST_RESULT, dict(key), {"last_ms": at}, LAST_RESULT_AT_MS)
                    for key, at in latest.items()]
            out += roll.lines((tg.fixed_mbps, tg.mobile_mbps, tg.fixed_2030_mbps),
                              (cfg.peak_start_hour, cfg.peak_end_hour))
        yield out
    if synthetic_rollups:
        yield per_access.lines()


def cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system) of a process, from /proc (this one by default)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    """Run the benchmark; print JSON figures."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probes", type=int, default=300)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--status-minutes", type=int, default=15,
                    help="minutes between a probe's statuses (the agent's heartbeat)")
    ap.add_argument("--registry-hours", type=int, default=24,
                    help="hours of registry points written (only the last 15 min are read)")
    ap.add_argument("--synthetic-rollups", action="store_true",
                    help="write the rollup points from the generator (a stand-in for "
                         "Rollups.rebuild, which takes hours for a year of 300 probes)")
    ap.add_argument("--shard-duration", metavar="DURATION",
                    help="shard group duration of the database's retention policy (InfluxQL "
                         "duration, e.g. 52w; influxd 1.x's default for an infinite one: 7d)")
    ap.add_argument("--all-queries", action="store_true",
                    help="print every query's median (current dashboards), not only the "
                         "slowest")
    ap.add_argument("--baseline", metavar="REV",
                    help="also time the dashboards of this git revision on the same data")
    args = ap.parse_args()
    assert VN  # the helper module's timezone; local_hour above assumes UTC+7
    dashboards = {"current": current_queries()}
    if args.baseline:
        with worktree(args.baseline) as tree:
            dashboards["baseline"] = baseline_queries(tree)
    with tempfile.TemporaryDirectory() as tmp:
        svc = services.start_influxd(Path(tmp) / "influxd")
        try:
            url = f"http://{svc.host}:{svc.port}"
            client = InfluxClient(InfluxSettings(url=url, database="netmon", timeout_s=600))
            client.ensure_database()
            if args.shard_duration:
                client.query(f'ALTER RETENTION POLICY "autogen" ON "netmon" SHARD DURATION '
                             f"{args.shard_duration}")
            now_ms = int(time.time() * 1000)
            points = 0
            t0 = time.perf_counter()
            pending: list[str] = []
            shown = t0
            for done, probe_lines in enumerate(generate(
                    args.probes, args.days, now_ms, status_minutes=args.status_minutes,
                    registry_hours=args.registry_hours,
                    synthetic_rollups=args.synthetic_rollups), 1):
                pending += probe_lines
                while len(pending) >= 20_000:
                    client.write_lines(pending[:20_000])
                    del pending[:20_000]
                points += len(probe_lines)
                if time.perf_counter() - shown >= 30:  # a year at 300 probes loads ~40 min
                    shown = time.perf_counter()
                    print(f"loading: {min(done, args.probes)} of {args.probes} probes, "
                          f"{points:,} points, "
                          f"{shown - t0:.0f} s", file=sys.stderr, flush=True)
            if pending:
                client.write_lines(pending)
            load_s = time.perf_counter() - t0
            print(f"loaded {points} points in {load_s:.1f}s", file=sys.stderr)
            start_ms = now_ms - args.days * 86_400_000
            t0 = time.perf_counter()
            rollup_points = 0
            probes = [f"probe-{p:04d}" for p in range(args.probes)]
            # A month at a time: what `netmon-collector rollups rebuild` does.
            for a in range(start_ms, now_ms, 30 * 86_400_000):
                if args.synthetic_rollups:
                    write_switch(client)
                    break
                rollup_points += Rollups(client.settings).rebuild(
                    a, min(a + 30 * 86_400_000, now_ms), probes)
            rollup_s = time.perf_counter() - t0
            print(f"rollups: {rollup_points} points in {rollup_s:.1f}s", file=sys.stderr)
            # Steady state: a round after batches touched every probe's current hour
            # (its hour and its day are read again, twice: see Rollups.run_round).
            rounds = []
            roll = Rollups(client.settings)
            for _ in range(args.runs):
                roll.touch_times([(p, now_ms - 1) for p in probes],
                                 [(p, now_ms - 1) for p in probes])
                t0 = time.perf_counter()
                roll.run_round()
                rounds.append(time.perf_counter() - t0)
            round_s = statistics.median(rounds)
            interval = f"{max(1, args.days * 86_400 // 1000 // 60)}m"  # 1,000 points
            resolution = fake_grafana_resolution(client, Q.resolution_query(), start_ms, now_ms)
            print(f"resolution for {args.days} days: {resolution}", file=sys.stderr)
            cfg = BuildConfig.from_config()

            def timed(sql: str) -> float:
                runs = []
                for _ in range(args.runs):
                    t = time.perf_counter()
                    client.query(sql)
                    runs.append(time.perf_counter() - t)
                return statistics.median(runs)

            wait_compactions(url)
            pid: int | None = svc.proc.pid
            # Every query of each side once per run, the sides alternating which goes first:
            # background work of influxd (a cache snapshot, a compaction) and the machine's
            # load then fall on both, not on whichever ran first.
            samples: dict[str, dict[str, list[float]]] = {w: {} for w in dashboards}
            cpu_sum: dict[str, list[float]] = {w: [0.0, 0.0] for w in dashboards}
            for run in range(args.runs):
                order = list(dashboards) if run % 2 == 0 else list(dashboards)[::-1]
                for which in order:
                    cpu0 = (cpu_s(pid) if pid else 0.0, cpu_s())
                    for name, targets in dashboards[which].items():
                        for key, minimum, ref, query, max_points in targets:
                            # Grafana's $__interval: range / the panel's max data points
                            # (1,000 here by default), at least the panel's own minimum.
                            least = (int(minimum[:-1])
                                     * {"m": 1, "h": 60, "d": 1440}[minimum[-1]]
                                     if minimum else 0)
                            sized = (max(1, args.days * 1440 // max_points) if max_points
                                     else int(interval[:-1]))
                            wide = f"{max(sized, least)}m"
                            sql = fake_grafana_interpolate(query, start_ms, now_ms, wide,
                                                           resolution=resolution)
                            t = time.perf_counter()
                            client.query(sql)
                            samples[which].setdefault(f"{name}/{key}/{ref}", []).append(
                                time.perf_counter() - t)
                    cpu1 = (cpu_s(pid) if pid else 0.0, cpu_s())
                    cpu_sum[which][0] += cpu1[0] - cpu0[0]
                    cpu_sum[which][1] += cpu1[1] - cpu0[1]
                print(f"run {run + 1} of {args.runs} done", file=sys.stderr, flush=True)
            timings: dict[str, dict[str, float]] = {
                w: {q: statistics.median(v) for q, v in got.items()}
                for w, got in samples.items()}
            per_dash: dict[str, dict[str, float]] = {w: {} for w in dashboards}
            for which, meds in timings.items():
                for q, med in meds.items():
                    name = q.split("/", 1)[0]
                    per_dash[which][name] = per_dash[which].get(name, 0.0) + med
                for name, total in per_dash[which].items():
                    per_dash[which][name] = round(total, 3)
                    print(f"{which} {name}: {total:.2f}s", file=sys.stderr)
            cpu = {w: {"influxd": round(c[0], 1), "bench": round(c[1], 1)}
                   for w, c in cpu_sum.items()}
            alerts = {rule["uid"]: timed(rule["data"][0]["model"]["query"])
                      for rule in alert_rules(cfg)["groups"][0]["rules"]}
            # What the collector runs every 5 minutes to write the registry points.
            runs = []
            for _ in range(args.runs):
                t = time.perf_counter()
                probe_activity(client, datetime.now(UTC))
                runs.append(time.perf_counter() - t)
            registry_s = statistics.median(runs)
            slowest = sorted(timings["current"].items(), key=lambda kv: -kv[1])[:8]
            report: dict[str, object] = {
                "probes": args.probes, "days": args.days, "points": points,
                "runs": args.runs, "resolution": resolution, "load_s": round(load_s, 1),
                "synthetic_rollups": args.synthetic_rollups,
                "shard_duration": args.shard_duration or "default",
                # (with --synthetic-rollups they are part of "points", not built here)
                "rollup_points": None if args.synthetic_rollups else rollup_points,
                "rollup_build_s": round(rollup_s, 1),
                "rollup_round_s_median": round(round_s, 2),
                "cpu_s_all_dashboard_queries": cpu,
                "dashboard_refresh_s_median": per_dash["current"],
                "registry_activity_query_s_median": round(registry_s, 3),
                "alert_query_s_median": {k: round(v, 3) for k, v in alerts.items()},
                "slowest_queries_s_median": {k: round(v, 3) for k, v in slowest}}
            if args.all_queries:
                report["queries_s_median"] = {k: round(v, 3)
                                              for k, v in timings["current"].items()}
            if args.baseline:
                base = per_dash["baseline"]
                report["baseline"] = {
                    "rev": args.baseline, "dashboard_refresh_s_median": base,
                    "ratio_baseline_over_current": {
                        name: round(base[name] / max(now, 1e-6), 1)
                        for name, now in per_dash["current"].items() if name in base}}
            print(json.dumps(report, ensure_ascii=False, indent=1))
            client.close()
        finally:
            svc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
