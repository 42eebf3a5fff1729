"""Benchmark: bulletin generation for a month of 1,000 probes x 2 links x hourly tests.

Loads ``probes x links x 24 x days`` throughput results (about 1.49 million for a 31-day
month at the defaults) into a fresh influxd, then times ``netmon-collector bulletin`` as a
child process, several runs, and reports wall time and the child's peak RSS
(``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``). The points have the collector's
schema (collector.schema: the same tags and fields, including the string fields), built
with f-strings because a million pydantic messages would time the generator, not the
bulletin.

    python3 benchmarks/bulletin/bench.py                 # full size, 3 runs
    python3 benchmarks/bulletin/bench.py --probes 100    # quick
    python3 benchmarks/bulletin/bench.py --keep DIR      # keep influxd data for reuse
    python3 benchmarks/bulletin/bench.py --reuse DIR     # skip the load, reuse DIR
    python3 benchmarks/bulletin/bench.py --out DIR       # keep the bulletins to look at

Prints one JSON object (figures) on stdout; progress goes to stderr.

After the load the collector's rollups are brought up to date (``netmon-collector rollups
rebuild`` over the month, timed: what the running collector does a batch at a time),
which writes the day packs the bulletin reads (docs/schema.md, "Day packs").

Each run is done twice, back to back on the same data: the bulletin as it is, and the
previous approach (``--previous``: ``raw``, the default, reads every raw point of the month
as before the day packs (``[bulletin] day_packs = false``); ``json``: that and every
InfluxDB answer in JSON, as before issue 20), so the ratios compare runs made under the
same load. ``--previous none`` skips it. ``--baseline REV`` makes the previous approach the
bulletin of git revision ``REV`` (its files exported with ``git archive``; day packs on, as
now), e.g. ``--baseline b5683be`` for the code before the GC pause and the numpy compute.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.baseline import worktree  # noqa: E402
from collector.config import InfluxSettings  # noqa: E402
from collector.core.influx import InfluxClient  # noqa: E402
from collector.core.schema import (  # noqa: E402
    NS_PER_MS,
    escape_key,
    escape_string_field,
    identity_offset_ns,
)
from collector.core.units import load_units  # noqa: E402
from devstack import services  # noqa: E402

#: The current map (69 units); probe p stands in unit p % 69, tagged as the collector does
#: (commune_code, the unit's name, its old district when it has a single one).
UNITS = load_units().sorted_units()
FIXED_ISPS = ["VNPT", "Viettel", "FPT"]
MOBILE_ISPS = ["Viettel", "VinaPhone", "MobiFone"]
MONTH = (2026, 10)
TZ_OFFSET_MS = 7 * 3600 * 1000


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def generate_lines(probes: int, days: int, seed: int = 568):
    """Yield batches of line-protocol strings for the month, hour by hour."""
    rng = np.random.default_rng(seed)
    # 2026-10-01 00:00 local = 2026-09-30 17:00 UTC
    start_ms = int(dt.datetime(MONTH[0], MONTH[1], 1, tzinfo=dt.UTC).timestamp() * 1000
                   ) - TZ_OFFSET_MS
    cross_flag = ',flags="cross_traffic"'
    prefixes = []
    levels = []
    for p in range(probes):
        unit = UNITS[p % len(UNITS)]
        c, code = unit.name, unit.code
        d = unit.old_districts[0] if len(unit.old_districts) == 1 else ""
        probe = f"ht-{p:04d}"
        site_type = ("ubnd", "school", "health")[p % 3]
        for link, access, isps, level in (("fibre", "fixed", FIXED_ISPS, 170.0),
                                          ("lte", "mobile", MOBILE_ISPS, 75.0)):
            isp = isps[p % len(isps)]
            tags = {"access": access, "commune": c, "commune_code": code, "district": d,
                    "isp": isp, "link": link, "method": "iperf3", "probe": probe,
                    "site_type": site_type, "target": "speed.hatinh.example"}
            base = ",".join(f"{escape_key(k)}={escape_key(v)}" for k, v in sorted(tags.items())
                            if v)
            # status sorts after site_type and before target
            ok_tags = base.replace(",target=", ",status=ok,target=")
            err_tags = base.replace(",target=", ",error_code=timeout,status=error,target=")
            prefixes.append((f"results,{ok_tags} ", f"results,{err_tags} ",
                             escape_string_field(f"UBND {c}")))
            levels.append(level * rng.uniform(0.5, 1.4))
    levels_arr = np.array(levels)
    n_lines = len(prefixes)
    lat = 18.3
    for h in range(days * 24):
        ts0 = start_ms + h * 3600_000
        dl = np.maximum(0.5, rng.normal(levels_arr, levels_arr * 0.25))
        ul = dl * rng.uniform(0.3, 0.9, n_lines)
        rtt = rng.uniform(5, 40, n_lines)
        loaded = rtt + rng.uniform(10, 200, n_lines)
        fail = rng.random(n_lines) < 0.02
        cross = rng.random(n_lines) < 0.01
        offs = rng.integers(0, 3_000_000, n_lines)
        batch = []
        for i in range(n_lines):
            ok_p, err_p, site_name = prefixes[i]
            rid = uuid.UUID(int=(h << 32) | i)
            # nanoseconds, as the collector writes (schema.PRECISION): ms + the id's offset
            ts = (ts0 + int(offs[i])) * NS_PER_MS + identity_offset_ns(rid)
            if fail[i]:
                batch.append(f"{err_p}duration_s=30.0,latitude={lat},longitude=105.9,"
                             f'result_id="{rid}",site_name={site_name},cross_traffic=0.0,'
                             f'error_message="timeout: no answer",agent_version="1.0.0" {ts}')
            else:
                batch.append(f"{ok_p}download_mbps={dl[i]:.3f},upload_mbps={ul[i]:.3f},"
                             f"rtt_ms={rtt[i]:.2f},idle_rtt_ms={rtt[i]:.2f},"
                             f"loaded_rtt_ms={loaded[i]:.2f},retransmits=0.0,duration_s=10.0,"
                             f"latitude={lat},longitude=105.9,result_id=\"{rid}\","
                             f"site_name={site_name},cross_traffic={1.0 if cross[i] else 0.0}"
                             f"{cross_flag if cross[i] else ''},"
                             f'agent_version="1.0.0" {ts}')
        yield batch


def load(url: str, probes: int, days: int, batch_size: int) -> tuple[int, float]:
    """Write the month; returns (points, seconds)."""
    settings = InfluxSettings(url=url, database="netmon", timeout_s=300)
    n = 0
    t0 = time.perf_counter()
    with InfluxClient(settings) as client:
        client.ensure_database()
        pending: list[str] = []
        for hour_batch in generate_lines(probes, days):
            pending.extend(hour_batch)
            if len(pending) >= batch_size:
                client.write_lines(pending)
                n += len(pending)
                pending = []
                if n % 200_000 < batch_size:
                    log(f"loaded {n:,} points ({time.perf_counter() - t0:.0f} s)")
        if pending:
            client.write_lines(pending)
            n += len(pending)
    return n, time.perf_counter() - t0


def _cpu_s(pid: int) -> float:
    """utime + stime of a process, seconds (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_registry(path: Path, probes: int) -> None:
    """The site registry of the benchmark's probes (the bulletin needs one)."""
    rows = []
    for p in range(probes):
        unit = UNITS[p % len(UNITS)]
        rows.append(f'[[site]]\nprobe_id = "ht-{p:04d}"\nname = "UBND {unit.name}"\n'
                    f'commune_code = "{unit.code}"\nlatitude = 18.3\nlongitude = 105.9\n'
                    f'site_type = "{("ubnd", "school", "health")[p % 3]}"\n')
    path.write_text("\n".join(rows), encoding="utf-8")


#: The bulletin with every query answered in JSON: how it read InfluxDB before issue 20.
PREVIOUS_JSON = """
import sys
from collector.core import influx
_query = influx.InfluxClient.query
def query(self, q, params=None, *, compressed=True, binary=False):
    return _query(self, q, params, compressed=compressed)
influx.InfluxClient.query = query
from collector.cli import main
sys.exit(main(sys.argv[1:]))
"""


def write_config(url: str, work: Path, probes: int, day_packs: bool = True) -> Path:
    """The collector config the bulletin and the rollups rebuild read."""
    cfg = work / f"collector{'' if day_packs else '-raw'}.toml"
    write_registry(work / "sites.toml", probes)
    cfg.write_text(f'[influxdb]\nurl = "{url}"\ndatabase = "netmon"\ntimeout_s = 300\n\n'
                   '[registry]\npath = "sites.toml"\n\n'
                   f'[bulletin]\nday_packs = {"true" if day_packs else "false"}\n',
                   encoding="utf-8")
    return cfg


def rebuild_rollups(url: str, work: Path, probes: int, days: int) -> float:
    """``netmon-collector rollups rebuild`` over the loaded days; returns seconds."""
    cfg = write_config(url, work, probes)
    since = dt.date(MONTH[0], MONTH[1], 1) - dt.timedelta(days=1)  # local day 1 starts at 17:00 UTC
    until = dt.date(MONTH[0], MONTH[1], 1) + dt.timedelta(days=days)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "collector.cli", "rollups", "rebuild", "--config",
                        str(cfg), "--since", since.isoformat(), "--until", until.isoformat(),
                        "--json"], capture_output=True, text=True, cwd=ROOT,
                       env=os.environ | {"PYTHONPATH": str(ROOT)})
    if p.returncode != 0:
        raise SystemExit(f"rollups rebuild failed ({p.returncode}): {p.stderr}")
    return time.perf_counter() - t0


def has_packs(url: str) -> bool:
    """True when the kept data already holds day packs."""
    with InfluxClient(InfluxSettings(url=url, database="netmon")) as client:
        return bool(client.query('SELECT count("n") FROM "tput_pack"')[0])


def _pdf_text(path: Path) -> str:
    """The PDF's text and page count (pdftotext, poppler-utils), to compare two bulletins."""
    if shutil.which("pdftotext") is None:
        return ""
    text = subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True,
                          text=True, check=True).stdout
    # The generation time ("Lập lúc 2026-12-03 18:40") differs between runs; nothing else may.
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d", "(time)", text)
    return f"{text.count(chr(12))} pages\n{text}"


def run_bulletin(url: str, work: Path, lang: str, formats: list[str],
                 influxd_pid: int, probes: int, previous: str = "",
                 tree: Path = ROOT) -> dict[str, object]:
    """One bulletin as a child process; ``tree``: whose code runs (a baseline's files)."""
    cfg = write_config(url, work, probes, day_packs=previous in ("", "baseline"))
    out = work / f"out-{lang}{'-previous' if previous else ''}"
    entry = ["-c", PREVIOUS_JSON] if previous == "json" else ["-m", "collector.cli"]
    argv = [sys.executable, *entry, "bulletin", "--config", str(cfg),
            "--month", f"{MONTH[0]}-{MONTH[1]:02d}", "--out", str(out), "--lang", lang,
            "--json"]
    for f in formats:
        argv += ["--format", f]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    influx_cpu0 = _cpu_s(influxd_pid)
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, cwd=tree,
                       env=os.environ | {"PYTHONPATH": str(tree)})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds do not depend on what else the (shared) machine is doing; wall time does.
    child_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    influx_cpu = _cpu_s(influxd_pid) - influx_cpu0
    if p.returncode != 0:
        raise SystemExit(f"bulletin failed ({p.returncode}): {p.stderr}")
    summary = json.loads(p.stdout)
    csv = sorted(out.glob("*.csv"))
    pdfs = sorted(out.glob("*.pdf"))
    return {"wall_s": wall, "cpu_s": child_cpu, "influxd_cpu_s": influx_cpu,
            "load_average_1min": round(os.getloadavg()[0], 2),
            "pdf_text": _pdf_text(pdfs[0]) if pdfs else "",
            "timings_s": summary["timings_s"], "totals": summary["totals"],
            "days_from_packs": summary.get("days_from_packs"),
            "csv": csv[0].read_bytes() if csv else b""}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probes", type=int, default=1000)
    ap.add_argument("--days", type=int, default=31, help="days of October 2026 to fill")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=50_000, help="points per write")
    ap.add_argument("--lang", default="vi", choices=("vi", "en"))
    ap.add_argument("--keep", type=Path, help="keep influxd's data in this folder")
    ap.add_argument("--reuse", type=Path, help="reuse influxd data kept with --keep")
    ap.add_argument("--previous", default="raw", choices=("raw", "json", "none"),
                    help="also time the previous approach in each run: raw = every raw "
                    "point (no day packs), json = that with JSON answers (default: raw)")
    ap.add_argument("--baseline", metavar="REV",
                    help="the previous approach is the bulletin of this git revision (its "
                    "files via git archive, day packs on); overrides --previous")
    ap.add_argument("--out", type=Path, help="keep the bulletins here (default: a temporary "
                    "folder, removed at the end)")
    args = ap.parse_args()
    if args.baseline:
        args.previous = "baseline"
    work = args.out or Path(tempfile.mkdtemp(prefix="bench-bulletin-"))
    work.mkdir(parents=True, exist_ok=True)
    data_dir = args.reuse or args.keep or work / "influxd"
    svc = services.start_influxd(data_dir)
    figures: dict[str, object] = {"probes": args.probes, "days": args.days}
    stack = contextlib.ExitStack()
    try:
        base = stack.enter_context(worktree(args.baseline)) if args.baseline else ROOT
        url = f"http://{svc.host}:{svc.port}"
        if not args.reuse:
            log(f"loading {args.probes * 2 * 24 * args.days:,} results into influxd ...")
            n, secs = load(url, args.probes, args.days, args.batch)
            figures |= {"points": n, "load_s": round(secs, 1),
                        "load_points_per_s": round(n / secs)}
            log(f"loaded {n:,} points in {secs:.0f} s")
        if not args.reuse or not has_packs(url):
            log("rollups rebuild over the month (day packs) ...")
            secs = rebuild_rollups(url, work, args.probes, args.days)
            figures["rollups_rebuild_s"] = round(secs, 1)
            log(f"rollups rebuilt in {secs:.0f} s")
        runs = []
        prev_runs = []
        for i in range(args.runs):
            # Alternate which goes first, so neither always gets the warmer cache.
            order = [False, True] if i % 2 == 0 else [True, False]
            for previous in order if args.previous != "none" else [False]:
                r = run_bulletin(url, work, args.lang, [], svc.proc.pid, args.probes,
                                 args.previous if previous else "",
                                 base if previous else ROOT)
                (prev_runs if previous else runs).append(r)
                log(f"run {i + 1}{' (previous)' if previous else ''}: {r['wall_s']:.1f} s "
                    f"days from packs {r['days_from_packs']}, "
                    f"wall, bulletin CPU {r['cpu_s']:.1f} s, influxd CPU "
                    f"{r['influxd_cpu_s']:.1f} s, stages {r['timings_s']}, "
                    f"load average {os.getloadavg()[0]:.1f}")
        if not runs:
            return 0
        if prev_runs:
            def med(rs: list[dict[str, object]], k: str) -> float:
                return statistics.median(float(r[k]) for r in rs)  # type: ignore[arg-type]

            figures["previous_approach"] = {
                what: {"previous_median": round(med(prev_runs, k), 2),
                       "now_median": round(med(runs, k), 2),
                       "ratio": round(med(prev_runs, k) / max(med(runs, k), 1e-6), 2)}
                for what, k in (("wall_s", "wall_s"), ("bulletin_cpu_s", "cpu_s"),
                                ("influxd_cpu_s", "influxd_cpu_s"))}
            figures["previous_approach"]["cpu_total_s"] = {  # type: ignore[index]
                "previous_median": round(statistics.median(
                    float(r["cpu_s"]) + float(r["influxd_cpu_s"])  # type: ignore[arg-type]
                    for r in prev_runs), 2),
                "now_median": round(statistics.median(
                    float(r["cpu_s"]) + float(r["influxd_cpu_s"])  # type: ignore[arg-type]
                    for r in runs), 2)}
            figures["csv_identical_to_previous"] = all(
                r["csv"] == prev_runs[0]["csv"] for r in runs + prev_runs)
            # The same text and page count (pdftotext; empty when it is not installed).
            figures["pdf_text_identical_to_previous"] = all(
                r["pdf_text"] == prev_runs[0]["pdf_text"] for r in runs + prev_runs)
            figures["stages_s_previous_last_run"] = prev_runs[-1]["timings_s"]
            figures["previous"] = args.previous
            if args.baseline:
                figures["baseline"] = args.baseline
        rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        walls = [float(r["wall_s"]) for r in runs]  # type: ignore[arg-type]
        figures |= {
            "results_in_month": runs[0]["totals"]["results"],  # type: ignore[index]
            "runs": len(runs),
            "wall_s_median": round(statistics.median(walls), 2),
            "wall_s_all": [round(w, 2) for w in walls],
            "bulletin_cpu_s_median": round(statistics.median(
                float(r["cpu_s"]) for r in runs), 2),  # type: ignore[arg-type]
            "influxd_cpu_s_median": round(statistics.median(
                float(r["influxd_cpu_s"]) for r in runs), 2),  # type: ignore[arg-type]
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
            "load_average_1min_runs": [r["load_average_1min"] for r in runs + prev_runs],
            "stages_s_last_run": runs[-1]["timings_s"],
            "days_from_packs": runs[-1]["days_from_packs"],
            "peak_rss_mib": round(rss_mib, 1),
            "influxd_peak_rss_mib": _vm_hwm(svc.proc.pid),
        }
    finally:
        stack.close()
        svc.stop()
        if not args.out:
            shutil.rmtree(work, ignore_errors=True)
        print(json.dumps(figures, indent=2))
    return 0


def _vm_hwm(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


if __name__ == "__main__":
    sys.exit(main())
