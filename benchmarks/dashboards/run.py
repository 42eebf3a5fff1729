"""Benchmark: how long InfluxDB takes to answer each dashboard and alert query.

Loads ``probes x days`` of data with the collector's schema (``collector.schema.line``:
hourly throughput and latency tests per link, hourly TSLCD and IPv6 tests, a status
every 15 minutes) into a fresh influxd 1.x, then runs every panel query of the
Vietnamese dashboards over the last ``days`` (variables "All", ``$__interval`` sized for
1000 points, as Grafana would) and every alert query, ``--runs`` times each, and prints
the median seconds per dashboard (sum over its queries, what a full page refresh costs
InfluxDB when run one after another) and the slowest queries.

The rollups (collector/core/rollups.py) are built after the load, as the collector would
have kept them, and the time that takes is printed. Panels that read rollups are also
timed with the query they replaced (raw points, ``PREVIOUS`` below) in the same run:
``previous_approach`` gives both medians and the ratio. CPU seconds of influxd
(``/proc/PID/stat``) and of this process are printed too: on a shared machine they vary
less than wall time.

    python3 benchmarks/dashboards/run.py                  # 300 probes, 7 days, 3 runs
    python3 benchmarks/dashboards/run.py --probes 50 --days 2 --runs 2   # quick

Prints one JSON object on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from collector.config import InfluxSettings  # noqa: E402
from collector.core.influx import InfluxClient  # noqa: E402
from collector.core.registry import default_units  # noqa: E402
from collector.core.registrymetrics import REGISTRY, probe_activity  # noqa: E402
from collector.core.rollups import Rollups  # noqa: E402
from collector.core.schema import LINK_USAGE, PROBE_STATUS, RESULTS, line  # noqa: E402
from collector.dashboards import queries as Q  # noqa: E402
from collector.dashboards.build import BuildConfig, build_all  # noqa: E402
from collector.dashboards.provisioning import alert_rules  # noqa: E402
from devstack import services  # noqa: E402
from tests.helpers.dashboards import VN, fake_grafana_interpolate  # noqa: E402


def generate(probes: int, days: int, now_ms: int, seed: int = 1) -> list[str]:
    """Line protocol for the data set (throughput, latency, TSLCD, IPv6, statuses, and the
    collector's registry points every 5 minutes), spread over Hà Tĩnh's current units."""
    rng = random.Random(seed)
    out: list[str] = []
    start = now_ms - days * 86_400_000
    units = default_units().sorted_units()
    for p in range(probes):
        probe = f"probe-{p:04d}"
        unit = units[p % len(units)]
        districts = unit.old_districts
        site = {"district": districts[0] if len(districts) == 1 else "",
                "commune": unit.name, "commune_code": unit.code,
                "site_type": "commune_office"}
        links = [("fibre", "fixed", ("VNPT", "Viettel", "FPT")[p % 3], 150.0),
                 ("mobile", "mobile", ("Viettel", "VinaPhone", "MobiFone")[p % 3], 71.0)]
        for ts in range(start, now_ms, 3_600_000):
            hour = float((ts // 3_600_000 + 7) % 24)  # Asia/Ho_Chi_Minh is UTC+7, no DST
            for link, access, isp, base in links:
                tags = {"probe": probe, "link": link, "access": access, "isp": isp,
                        "status": "ok", **site}
                down = max(0.5, rng.gauss(base, base * 0.3))
                out.append(line(RESULTS, tags | {"method": "iperf3", "target": "hn"},
                                {"download_mbps": down, "upload_mbps": down / 3,
                                 "loaded_rtt_ms": rng.uniform(40, 90),
                                 "idle_rtt_ms": rng.uniform(8, 20), "duration_s": 10.0,
                                 "latitude": 18.3, "longitude": 105.9, "cross_traffic": 0.0,
                                 "local_hour": hour, "result_id": f"{probe}-{ts}-{link}"},
                                ts))
                out.append(line(RESULTS, tags | {"method": "icmp", "target": "8.8.8.8"},
                                {"rtt_ms": rng.uniform(10, 60), "jitter_ms": rng.uniform(1, 8),
                                 "loss_pct": rng.choice((0.0, 0.0, 1.0)), "duration_s": 5.0},
                                ts + 20_000))
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
        for ts in range(start, now_ms, 300_000):
            out.append(line(REGISTRY, {"probe": probe, "unit": f"{unit.code} {unit.name}",
                                       **site},
                            {"registered": 1, "results_30m": 6, "offline": 0,
                             "latitude": 18.3, "longitude": 105.9}, ts))
        for ts in range(start, now_ms, 900_000):
            out.append(line(PROBE_STATUS, {"probe": probe, **site},
                            {"online": 1, "spool_depth": 0, "clock_synced": 1,
                             "last_result_ms": ts, "config_version": 1}, ts))
            out.append(line(LINK_USAGE, {"probe": probe, "link": "mobile", "access": "mobile",
                                         "isp": "Viettel", **site},
                            {"used_bytes": ts % 10**9, "budget_bytes": 5 * 10**9,
                             "used_pct": (ts % 10**9) / 5e7}, ts))
    return out


def _previous_status(cols: tuple[str, ...], group: tuple[str, ...]) -> str:
    sel = ", ".join(f'last("{c}") AS "{c}"' for c in cols)
    return (f'SELECT {sel} FROM "{PROBE_STATUS}" WHERE "commune_code" =~ /^$commune$/ AND '
            f'"probe" =~ /^$probe$/ AND $timeFilter GROUP BY {", ".join(group)}')


def previous_queries(cfg: BuildConfig) -> dict[str, str]:
    """The raw-point queries of the panels that now read rollups (before issue 20)."""
    tg = cfg.targets
    last_online = _previous_status(("online",), ('"probe"',))
    last_synced = _previous_status(("clock_synced",), ('"probe"',))
    return {
        "overview/overview.share_mobile/A": Q.share_meeting("mobile", tg.mobile_mbps),
        "overview/overview.share_fixed/A": Q.share_meeting("fixed", tg.fixed_mbps),
        "overview/overview.share_fixed_2030/A": Q.share_meeting("fixed", tg.fixed_2030_mbps),
        "where/where.communes_fixed/B": Q.share_meeting("fixed", tg.fixed_mbps, Q.UNIT),
        "where/where.communes_mobile/B": Q.share_meeting("mobile", tg.mobile_mbps, Q.UNIT),
        "probes/probes.online/A": f'SELECT sum("online") AS "online" FROM ({last_online})',
        "probes/probes.offline/A": f'SELECT count("online") - sum("online") AS "offline" '
                                   f"FROM ({last_online})",
        "probes/probes.unsynced/A": f'SELECT count("clock_synced") - sum("clock_synced") AS '
                                    f'"unsynced" FROM ({last_synced})',
        "probes/probes.table/A": _previous_status(
            ("online", "clock_synced", "spool_depth", "spool_evicted", "config_version",
             "agent_version"), ('"probe"', '"commune_code"', '"commune"')),
        "probes/probes.spool/A": f'SELECT max("spool_depth") FROM "{PROBE_STATUS}" WHERE '
                                 f'"commune_code" =~ /^$commune$/ AND "probe" =~ /^$probe$/ '
                                 f'AND $timeFilter GROUP BY time($__interval), "probe" '
                                 f"fill(none)",
    }


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
    args = ap.parse_args()
    assert VN  # the helper module's timezone; local_hour above assumes UTC+7
    with tempfile.TemporaryDirectory() as tmp:
        svc = services.start_influxd(Path(tmp) / "influxd")
        try:
            url = f"http://{svc.host}:{svc.port}"
            client = InfluxClient(InfluxSettings(url=url, database="netmon", timeout_s=300))
            client.ensure_database()
            now_ms = int(time.time() * 1000)
            lines = generate(args.probes, args.days, now_ms)
            t0 = time.perf_counter()
            for i in range(0, len(lines), 20_000):
                client.write_lines(lines[i:i + 20_000])
            load_s = time.perf_counter() - t0
            print(f"loaded {len(lines)} points in {load_s:.1f}s", file=sys.stderr)
            start_ms = now_ms - args.days * 86_400_000
            t0 = time.perf_counter()
            rollup_points = Rollups(client.settings).rebuild(
                start_ms, now_ms, [f"probe-{p:04d}" for p in range(args.probes)])
            rollup_s = time.perf_counter() - t0
            print(f"rollups: {rollup_points} points in {rollup_s:.1f}s", file=sys.stderr)
            # Steady state: a round after batches touched every probe's current hour
            # (its hour and its day are read again, twice: see Rollups.run_round).
            rounds = []
            roll = Rollups(client.settings)
            for _ in range(args.runs):
                probes = [f"probe-{p:04d}" for p in range(args.probes)]
                roll.touch_times([(p, now_ms - 1) for p in probes],
                                 [(p, now_ms - 1) for p in probes])
                t0 = time.perf_counter()
                roll.run_round()
                rounds.append(time.perf_counter() - t0)
            round_s = statistics.median(rounds)
            pid: int | None = svc.proc.pid
            cpu0 = (cpu_s(pid) if pid else 0.0, cpu_s())
            interval = f"{max(1, args.days * 86_400 // 1000 // 60)}m"
            cfg = BuildConfig.from_config()

            def timed(sql: str) -> float:
                runs = []
                for _ in range(args.runs):
                    t = time.perf_counter()
                    client.query(sql)
                    runs.append(time.perf_counter() - t)
                return statistics.median(runs)

            timings: dict[str, float] = {}
            per_dash: dict[str, float] = {}
            for name, dash in build_all(cfg, "vi").items():
                total = 0.0
                for panel in dash.data_panels():
                    # Grafana's $__interval is at least the panel's own minimum ("1h").
                    minimum = (int(panel.interval[:-1]) * {"m": 1, "h": 60, "d": 1440}[
                        panel.interval[-1]] if panel.interval else 0)
                    wide = f"{max(int(interval[:-1]), minimum)}m"
                    for target in panel.targets:
                        sql = fake_grafana_interpolate(target.query, start_ms, now_ms, wide)
                        runs = []
                        for _ in range(args.runs):
                            t = time.perf_counter()
                            client.query(sql)
                            runs.append(time.perf_counter() - t)
                        med = statistics.median(runs)
                        timings[f"{name}/{panel.key}/{target.ref_id}"] = med
                        total += med
                per_dash[name] = round(total, 3)
                print(f"{name}: {total:.2f}s", file=sys.stderr)
            for rule in alert_rules(cfg)["groups"][0]["rules"]:
                runs = []
                for _ in range(args.runs):
                    t = time.perf_counter()
                    client.query(rule["data"][0]["model"]["query"])
                    runs.append(time.perf_counter() - t)
                timings[f"alert/{rule['uid']}"] = statistics.median(runs)
            # What the collector runs every 5 minutes to write the registry points.
            runs = []
            for _ in range(args.runs):
                t = time.perf_counter()
                probe_activity(client, datetime.now(UTC))
                runs.append(time.perf_counter() - t)
            registry_s = statistics.median(runs)
            cpu1 = (cpu_s(pid) if pid else 0.0, cpu_s())
            previous: dict[str, dict[str, float]] = {}
            for key, old in previous_queries(cfg).items():
                if key not in timings:
                    continue
                was = timed(fake_grafana_interpolate(old, start_ms, now_ms, interval))
                previous[key] = {"previous_s": round(was, 3), "now_s": round(timings[key], 3),
                                 "ratio": round(was / max(timings[key], 1e-6), 1)}
            prev_total, now_total = (sum(v["previous_s"] for v in previous.values()),
                                     sum(v["now_s"] for v in previous.values()))
            slowest = sorted(timings.items(), key=lambda kv: -kv[1])[:8]
            print(json.dumps({
                "probes": args.probes, "days": args.days, "points": len(lines),
                "runs": args.runs, "load_s": round(load_s, 1),
                "rollup_points": rollup_points, "rollup_build_s": round(rollup_s, 1),
                "rollup_round_s_median": round(round_s, 2),
                "cpu_s_all_queries": {"influxd": round(cpu1[0] - cpu0[0], 1),
                                      "bench": round(cpu1[1] - cpu0[1], 1)},
                "dashboard_refresh_s_median": per_dash,
                "registry_activity_query_s_median": round(registry_s, 3),
                "alert_query_s_median": {k.split("/", 1)[1]: round(v, 3)
                                         for k, v in timings.items() if k.startswith("alert/")},
                "slowest_queries_s_median": {k: round(v, 3) for k, v in slowest},
                "previous_approach": {"panels": previous,
                                      "sum_previous_s": round(prev_total, 3),
                                      "sum_now_s": round(now_total, 3),
                                      "ratio": round(prev_total / max(now_total, 1e-6), 1)}},
                ensure_ascii=False, indent=1))
            client.close()
        finally:
            svc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
