"""Benchmark: how long InfluxDB takes to answer each dashboard and alert query.

Loads ``probes x days`` of data with the collector's schema (``collector.schema.line``:
hourly throughput and latency tests per link, hourly TSLCD and IPv6 tests, a status
every 15 minutes) into a fresh influxd 1.x, then runs every panel query of the
Vietnamese dashboards over the last ``days`` (variables "All", ``$__interval`` sized for
1000 points, as Grafana would) and every alert query, ``--runs`` times each, and prints
the median seconds per dashboard (sum over its queries, what a full page refresh costs
InfluxDB when run one after another) and the slowest queries.

    python3 benchmarks/dashboards/run.py                  # 300 probes, 7 days, 3 runs
    python3 benchmarks/dashboards/run.py --probes 50 --days 2 --runs 2   # quick

Prints one JSON object on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
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
from collector.core.schema import LINK_USAGE, PROBE_STATUS, RESULTS, line  # noqa: E402
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
            interval = f"{max(1, args.days * 86_400 // 1000 // 60)}m"
            cfg = BuildConfig.from_config()
            timings: dict[str, float] = {}
            per_dash: dict[str, float] = {}
            for name, dash in build_all(cfg, "vi").items():
                total = 0.0
                for panel in dash.data_panels():
                    for target in panel.targets:
                        sql = fake_grafana_interpolate(target.query, start_ms, now_ms, interval)
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
            slowest = sorted(timings.items(), key=lambda kv: -kv[1])[:8]
            print(json.dumps({
                "probes": args.probes, "days": args.days, "points": len(lines),
                "runs": args.runs, "load_s": round(load_s, 1),
                "dashboard_refresh_s_median": per_dash,
                "registry_activity_query_s_median": round(registry_s, 3),
                "alert_query_s_median": {k.split("/", 1)[1]: round(v, 3)
                                         for k, v in timings.items() if k.startswith("alert/")},
                "slowest_queries_s_median": {k: round(v, 3) for k, v in slowest}},
                ensure_ascii=False, indent=1))
            client.close()
        finally:
            svc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
