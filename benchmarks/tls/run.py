#!/usr/bin/env python3
"""TLS cost benchmark: the ``http`` method over https against plain http on the same
tbf-shaped link, per direction: goodput and the probe's CPU per GB (and per Mb/s).

For each rate a fresh namespace gets a shaped veth and the measurement nginx serving
plain HTTP and HTTPS (a throwaway CA made by ``devstack.measurement_server.make_pki``).
Each repeat runs plain then TLS, alternating the order so drift favours neither. CPU is
the engine thread's CPU time (``cpu_s``: where HTTP parsing and TLS record crypto run)
and, beside it, the whole process's (user + sys, the agent's loop included); per GB of
payload moved. The TLS/plain ratio is the median over the repeats of each repeat's
ratio.

Needs root (namespaces, tc). Usage: see benchmarks/tls/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.methods.base import LinkBinding, MethodContext
from agent.methods.registry import get
from devstack import measurement_server, netns
from netmon.methods import HttpOptions

HTTP_PORT, HTTPS_PORT = 8080, 8443


def _proc_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one(ctx: MethodContext, url: str, direction: str, duration: float, ca: str | None
        ) -> dict[str, Any]:
    """One ``http`` run in one direction: goodput, bytes, engine and process CPU."""
    cls = get("http")
    opts = HttpOptions(target=url, direction=direction, duration_s=duration,
                       warmup_s=1, loaded_latency=False, ca_file=ca)
    c0 = _proc_cpu()
    res = asyncio.run(cls().run(ctx, opts))[0]
    proc_cpu = _proc_cpu() - c0
    if res.error:
        raise SystemExit(f"{url} {direction}: {res.error.code}: {res.error.message}")
    m = res.metrics.values()
    suffix = "" if direction == "download" else "_upload"
    mbps, cpu_s, nbytes = m[f"{direction}_mbps"], m[f"cpu{suffix}_s"], m["bytes"]
    return {"mbps": mbps, "bytes": nbytes, "cpu_s": cpu_s, "proc_cpu_s": proc_cpu,
            "cpu_s_per_gb": cpu_s / (nbytes / 1e9),
            "proc_cpu_s_per_gb": proc_cpu / (nbytes / 1e9),
            # CPU-seconds per second of test, per Mb/s of goodput (x 1000: milli).
            "cpu_ms_per_s_per_mbps": 1000 * cpu_s / duration / mbps}


def bench_rate(rate: float, repeat: int, duration: float, directions: list[str]
               ) -> list[dict[str, Any]]:
    """Every repeat and direction at one rate, on a fresh namespace."""
    rows: list[dict[str, Any]] = []
    ns = netns.ServerNamespace.create()
    with tempfile.TemporaryDirectory(prefix="netmon-tls-bench-") as tmp:
        try:
            link = ns.add_link(rate)
            pki = measurement_server.make_pki(Path(tmp) / "pki", [link.server_ip])
            nginx = measurement_server.start(Path(tmp) / "nginx", host="0.0.0.0",
                                             port=HTTP_PORT, netns=ns.name, sparse=True,
                                             tls=pki, tls_port=HTTPS_PORT)
            ctx = MethodContext("bench", "bench",
                                LinkBinding("fibre", "fixed", "bench", interface=link.host_if))
            plain_url = f"http://{link.server_ip}:{HTTP_PORT}"
            tls_url = f"https://{link.server_ip}:{HTTPS_PORT}"
            try:
                for i in range(repeat):
                    for direction in directions:
                        order = [("http", plain_url, None), ("https", tls_url, str(pki.ca))]
                        if i % 2:
                            order.reverse()
                        got = {name: one(ctx, url, direction, duration, ca)
                               for name, url, ca in order}
                        rows.append({"rate": rate, "repeat": i, "direction": direction,
                                     "http": got["http"], "https": got["https"]})
            finally:
                nginx.stop()
        finally:
            ns.destroy()
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median per rate and direction, and the median of per-repeat TLS/plain ratios."""
    out = []
    for key in sorted({(r["rate"], r["direction"]) for r in rows}):
        sel = [r for r in rows if (r["rate"], r["direction"]) == key]

        def med(scheme: str, field: str, sel: list[dict[str, Any]] = sel) -> float:
            return float(statistics.median(r[scheme][field] for r in sel))

        def ratio(field: str, sel: list[dict[str, Any]] = sel) -> float:
            return float(statistics.median(r["https"][field] / r["http"][field]
                                           for r in sel))

        out.append({
            "rate": key[0], "direction": key[1], "repeats": len(sel),
            "http_mbps": med("http", "mbps"), "https_mbps": med("https", "mbps"),
            "goodput_ratio": ratio("mbps"),
            "http_cpu_s_per_gb": med("http", "cpu_s_per_gb"),
            "https_cpu_s_per_gb": med("https", "cpu_s_per_gb"),
            "cpu_ratio": ratio("cpu_s_per_gb"),
            "cpu_ratio_min": min(r["https"]["cpu_s_per_gb"] / r["http"]["cpu_s_per_gb"]
                                 for r in sel),
            "cpu_ratio_max": max(r["https"]["cpu_s_per_gb"] / r["http"]["cpu_s_per_gb"]
                                 for r in sel),
            "proc_cpu_ratio": ratio("proc_cpu_s_per_gb"),
            "http_cpu_ms_per_s_per_mbps": med("http", "cpu_ms_per_s_per_mbps"),
            "https_cpu_ms_per_s_per_mbps": med("https", "cpu_ms_per_s_per_mbps"),
        })
    return out


def main(argv: list[str] | None = None) -> int:
    """Parse options, run, print the table (or JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="150,1000", help="Mbit/s, comma-separated")
    ap.add_argument("--repeat", type=int, default=5, help="runs per rate and direction")
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per run")
    ap.add_argument("--directions", default="download,upload")
    ap.add_argument("--json", action="store_true", help="summary and raw rows as JSON")
    args = ap.parse_args(argv)
    reason = netns.can_use_netns()
    if reason:
        print(f"benchmarks/tls: {reason}; run it as root", file=sys.stderr)
        return 2
    if args.repeat < 1 or args.duration < 2:
        print("benchmarks/tls: --repeat must be >= 1 and --duration >= 2", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    for rate in (float(r) for r in args.rates.split(",")):
        rows += bench_rate(rate, args.repeat, args.duration, args.directions.split(","))
    summary = summarise(rows)
    if args.json:
        print(json.dumps({"summary": summary, "rows": rows}, indent=1))
        return 0
    print(f"{'rate':>6} {'dir':<9} {'http':>8} {'https':>8} {'CPU-s/GB':>9} {'TLS':>7} "
          f"{'CPU x':>6} {'(min-max)':>11} {'proc x':>7}")
    for s in summary:
        print(f"{s['rate']:>6g} {s['direction']:<9} {s['http_mbps']:>8.1f} "
              f"{s['https_mbps']:>8.1f} {s['http_cpu_s_per_gb']:>9.2f} "
              f"{s['https_cpu_s_per_gb']:>7.2f} {s['cpu_ratio']:>6.2f} "
              f"{s['cpu_ratio_min']:>5.2f}-{s['cpu_ratio_max']:<5.2f} "
              f"{s['proc_cpu_ratio']:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
