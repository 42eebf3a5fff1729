#!/usr/bin/env python3
"""Accuracy benchmark: every throughput method against iperf3 on tbf-shaped links.

For each rate a fresh namespace gets a shaped veth, an iperf3 server and the measurement
nginx. Per repeat and direction: iperf3 (the reference), our ``http`` engine, the
``speedtest`` method, and the unmodified speedtest-cli command-line tool (pointed at the
same self-hosted server via ``http_proxy``, so nothing reaches speedtest.net), then iperf3
again. ``https`` is the ``http`` engine over TLS to the same nginx (a throwaway CA made
by ``measurement_server.make_pki``, the certificate verified). Expected = mean of the
two iperf3 runs around the method. CPU-seconds per GB is the measuring process's CPU
(user+sys) per 10^9 bytes moved.

Needs root (namespaces, tc). Usage: see benchmarks/accuracy/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.methods.base import LinkBinding, MethodContext
from agent.methods.registry import get
from devstack import measurement_server, netns, services

PORT = 8080
TLS_PORT = 8443


def cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def run_method(name: str, ctx: MethodContext, **opts: Any) -> tuple[dict[str, Any], float]:
    """Run a method; return its metrics and the CPU seconds it cost (self + children)."""
    c0 = cpu(resource.RUSAGE_SELF) + cpu(resource.RUSAGE_CHILDREN)
    cls = get(name)
    res = asyncio.run(cls().run(ctx, cls.decl.options(**opts)))[0]
    used = cpu(resource.RUSAGE_SELF) + cpu(resource.RUSAGE_CHILDREN) - c0
    if res.error:
        return {"error": f"{res.error.code}: {res.error.message}"}, used
    return res.metrics.values(), used


def ref(ctx: MethodContext, link: netns.ShapedLink, direction: str, duration: int
        ) -> tuple[float | None, float, float]:
    """iperf3 goodput in one direction, its CPU cost and bytes."""
    m, used = run_method("iperf3", ctx, target=link.server_ip, direction=direction,
                         duration_s=duration, omit_s=1, loaded_latency=False)
    return m.get(f"{direction}_mbps"), used, m.get("bytes", 0.0)


def run_cli(base: str, direction: str, length: int) -> tuple[dict[str, Any], float]:
    """speedtest-cli (the command-line tool) against the self-hosted server."""
    exe = shutil.which("speedtest-cli")  # else the module pip installed (no console script)
    argv = [exe] if exe else [sys.executable, "-m", "speedtest"]
    argv += ["--mini", f"{base}/", "--json", "--no-upload" if direction == "download"
             else "--no-download"]
    env = dict(os.environ, http_proxy=base, HTTP_PROXY=base, no_proxy="")
    c0 = cpu(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=length * 4 + 60,
                          check=False)
    used = cpu(resource.RUSAGE_CHILDREN) - c0
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip()[-300:]}, used
    doc = json.loads(proc.stdout)
    key = "download" if direction == "download" else "upload"
    moved = doc["bytes_received"] if direction == "download" else doc["bytes_sent"]
    return {f"{direction}_mbps": doc[key] / 1e6, "bytes": float(moved)}, used


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="71,150,1000",
                        help="comma-separated tbf rates in Mbit/s (default 71,150,1000)")
    parser.add_argument("--duration", type=int, default=4, help="seconds per run (default 4)")
    parser.add_argument("--repeat", type=int, default=1, help="repeats per rate (default 1)")
    parser.add_argument("--methods", default="http,https,speedtest,speedtest-cli",
                        help="methods to compare with iperf3")
    parser.add_argument("--json", action="store_true", help="print rows as JSON")
    args = parser.parse_args(argv)
    reason = netns.can_use_netns()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 1
    rates = [float(r) for r in args.rates.split(",")]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    rows: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="netmon-bench-"))
    for rate in rates:
        ns = netns.ServerNamespace.create()
        try:
            link = ns.add_link(rate)
            log = open(work / f"iperf3-{rate:g}.log", "wb")  # noqa: SIM115
            ns.spawn([services.require_binary("iperf3"), "-s", "-p", "5201"], stdout=log,
                     stderr=subprocess.STDOUT)
            pki = measurement_server.make_pki(work / f"pki-{rate:g}", [link.server_ip])
            nginx = measurement_server.start(work / f"nginx-{rate:g}", host=link.server_ip,
                                             port=PORT, netns=ns.name,
                                             speedtest_length_s=args.duration,
                                             tls=pki, tls_port=TLS_PORT)
            time.sleep(0.3)
            base = f"http://{link.server_ip}:{PORT}"
            tls_base = f"https://{link.server_ip}:{TLS_PORT}"
            ctx = MethodContext("bench-probe", "bench",
                                LinkBinding("bench", "fixed", "bench", interface=link.host_if))
            common = {"loaded_latency": False}
            for _ in range(args.repeat):
                for direction in ("download", "upload"):
                    key = f"{direction}_mbps"

                    for method in methods:
                        before, ref_cpu, ref_bytes = ref(ctx, link, direction, args.duration)
                        if method in ("http", "https"):
                            tls = {"ca_file": str(pki.ca)} if method == "https" else {}
                            m, used = run_method("http", ctx, direction=direction,
                                                 target=tls_base if tls else base,
                                                 duration_s=args.duration + 1, warmup_s=1,
                                                 **common, **tls)
                        elif method == "speedtest":
                            m, used = run_method("speedtest", ctx,
                                                 target=f"{base}/speedtest/upload.php",
                                                 direction=direction, length_s=args.duration,
                                                 **common)
                        else:
                            m, used = run_cli(base, direction, args.duration)
                        after, _, _ = ref(ctx, link, direction, args.duration)
                        refs = [v for v in (before, after) if v]
                        expected = statistics.fmean(refs) if refs else None
                        got = m.get(key)
                        row = {"rate": rate, "method": method, "direction": direction,
                               "expected_mbps": expected, "measured_mbps": got,
                               "error_pct": (100 * (got - expected) / expected
                                             if got and expected else None),
                               "cpu_s_per_gb": (used / (m["bytes"] / 1e9)
                                                if m.get("bytes") else None),
                               "iperf3_cpu_s_per_gb": (ref_cpu / (ref_bytes / 1e9)
                                                       if ref_bytes else None),
                               "error": m.get("error")}
                        rows.append(row)
                        if not args.json:
                            _print_row(row)
            nginx.stop()
        finally:
            ns.destroy()
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        _print_summary(rows)
    return 0


def _fmt(v: float | None, spec: str) -> str:
    return format(v, spec) if isinstance(v, int | float) else "-"


_HEADER_DONE = False


def _print_row(row: dict[str, Any]) -> None:
    global _HEADER_DONE
    if not _HEADER_DONE:
        print(f"{'rate':>6} {'method':<14} {'dir':<8} {'iperf3':>8} {'measured':>9} "
              f"{'error%':>7} {'CPU-s/GB':>9} {'iperf3 CPU-s/GB':>15}")
        _HEADER_DONE = True
    print(f"{row['rate']:>6g} {row['method']:<14} {row['direction']:<8} "
          f"{_fmt(row['expected_mbps'], '8.1f')} {_fmt(row['measured_mbps'], '9.1f')} "
          f"{_fmt(row['error_pct'], '+7.2f')} {_fmt(row['cpu_s_per_gb'], '9.2f')} "
          f"{_fmt(row['iperf3_cpu_s_per_gb'], '15.2f')}"
          + (f"  ERROR {row['error']}" if row["error"] else ""), flush=True)


def _print_summary(rows: list[dict[str, Any]]) -> None:
    groups: dict[tuple[float, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["rate"], row["method"], row["direction"]), []).append(row)
    if all(len(g) < 2 for g in groups.values()):
        return
    print("\nmedians over repeats:")
    print(f"{'rate':>6} {'method':<14} {'dir':<8} {'error%':>7} {'worst%':>7} {'CPU-s/GB':>9}")
    for (rate, method, direction), group in groups.items():
        errs = [r["error_pct"] for r in group if r["error_pct"] is not None]
        cpus = [r["cpu_s_per_gb"] for r in group if r["cpu_s_per_gb"] is not None]
        print(f"{rate:>6g} {method:<14} {direction:<8} "
              f"{_fmt(statistics.median(errs) if errs else None, '+7.2f')} "
              f"{_fmt(max(errs, key=abs) if errs else None, '+7.2f')} "
              f"{_fmt(statistics.median(cpus) if cpus else None, '9.2f')}")


if __name__ == "__main__":
    sys.exit(main())
