"""Check ``run.py --synthetic-rollups`` (a stand-in) against the real rollups.

Loads the same small data set twice into one fresh influxd: database ``real`` gets the raw
points and ``Rollups.rebuild`` over them (what the collector keeps), database ``synthetic``
gets the raw points and the stand-in's rollup points (``run.py``'s ``_Buckets``). Then,
per rollup measurement, compares the number of points and, per numeric field, the number
of values and their sum. Prints one JSON object; exit code 1 when they differ.

    python3 benchmarks/dashboards/check_stand_in.py --probes 4 --days 9
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.dashboards.run import generate  # noqa: E402
from collector.config import InfluxSettings  # noqa: E402
from collector.core.influx import InfluxClient  # noqa: E402
from collector.core.rollups import MEASUREMENTS, Rollups  # noqa: E402
from devstack import services  # noqa: E402

#: Not written by the stand-in: the day packs (the bulletin's, not the dashboards').
SKIP = {"tput_pack"}


def _summary(client: InfluxClient, measurement: str) -> dict[str, tuple[int, float]]:
    """Field -> (values, sum) over the whole measurement; ``*points`` -> (points, 0)."""
    keys = [str(v[0]) for s in client.query(f'SHOW FIELD KEYS FROM "{measurement}"')[0]
            for v in s.values if v[1] in ("float", "integer")]
    out: dict[str, tuple[int, float]] = {}
    for key in keys:
        [series] = client.query(f'SELECT count("{key}"), sum("{key}") FROM "{measurement}"')[0]
        out[key] = (int(series.values[0][1]), float(series.values[0][2]))
    points = client.query(f'SELECT count(*) FROM "{measurement}"')[0]
    out["*points"] = (max((int(v) for s in points for v in s.values[0][1:] if v), default=0),
                      0.0)
    return out


def main() -> int:
    """Load both databases, compare, print JSON."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probes", type=int, default=4)
    ap.add_argument("--days", type=int, default=9)
    args = ap.parse_args()
    now_ms = int(time.time() * 1000)
    start_ms = now_ms - args.days * 86_400_000
    with tempfile.TemporaryDirectory() as tmp:
        svc = services.start_influxd(Path(tmp) / "influxd")
        try:
            url = f"http://{svc.host}:{svc.port}"
            clients = {db: InfluxClient(InfluxSettings(url=url, database=db, timeout_s=600))
                       for db in ("real", "synthetic")}
            for db, client in clients.items():
                client.ensure_database()
                for lines in generate(args.probes, args.days, now_ms,
                                      synthetic_rollups=db == "synthetic"):
                    if db == "real":  # the raw points only: the rollups are rebuilt below
                        lines = [ln for ln in lines
                                 if ln.split(",", 1)[0] not in MEASUREMENTS]
                    for i in range(0, len(lines), 20_000):
                        client.write_lines(lines[i:i + 20_000])
            Rollups(clients["real"].settings).rebuild(
                start_ms, now_ms, [f"probe-{p:04d}" for p in range(args.probes)])
            report: dict[str, object] = {}
            differ = []
            for measurement in MEASUREMENTS:
                if measurement in SKIP:
                    continue
                real = _summary(clients["real"], measurement)
                synth = _summary(clients["synthetic"], measurement)
                same = real.keys() == synth.keys() and all(
                    real[k][0] == synth[k][0]
                    and math.isclose(real[k][1], synth[k][1], rel_tol=1e-9, abs_tol=1e-6)
                    for k in real)
                report[measurement] = {"same": same, "points": real["*points"][0]}
                if not same:
                    differ.append(measurement)
                    report[measurement] = {"real": real, "synthetic": synth}
            report["differ"] = differ
            print(json.dumps(report, indent=1))
            for client in clients.values():
                client.close()
            return 1 if differ else 0
        finally:
            svc.stop()


if __name__ == "__main__":
    sys.exit(main())
