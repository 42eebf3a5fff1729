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

With ``--baseline REV`` the ``http`` and ``https`` rows are also run from the files of git
revision REV (``http@REV``, ``https@REV``): its agent code against an nginx rendered from
its own server template, beside this checkout's on the same link, each in a fresh child
process (this checkout's too, so both are measured alike). The summary then gives each
revision's TLS/plain CPU ratio.

Needs root (namespaces, tc). Usage: see benchmarks/accuracy/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from benchmarks.baseline import REPO, worktree
from devstack import measurement_server, netns, services

PORT = 8080
TLS_PORT = 8443
#: The baseline revision's nginx (its own template) listens beside the current one.
BASE_PORT = 8081
BASE_TLS_PORT = 8444
TEMPLATE_IN_TREE = Path("deploy/ansible/roles/netmon_server/templates/nginx.conf.j2")

#: Runs the ``http`` method from the tree given as argv[1] (first on sys.path) with the
#: options in argv[2]; prints its metrics and the CPU seconds of the run (imports excluded).
WORKER = r'''
import asyncio, json, resource, sys
sys.path.insert(0, sys.argv[1])
from agent.methods.base import LinkBinding, MethodContext
from agent.methods.registry import get
opts = json.loads(sys.argv[2])
ctx = MethodContext("bench-probe", "bench",
                    LinkBinding("bench", "fixed", "bench", interface=opts.pop("interface")))
cls = get("http")
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
c0 = cpu()
res = asyncio.run(cls().run(ctx, cls.decl.options(**opts)))[0]
used = cpu() - c0
metrics = ({"error": f"{res.error.code}: {res.error.message}"} if res.error
           else res.metrics.values())
print(json.dumps({"metrics": metrics, "cpu_s": used}))
'''


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


def run_http_in(tree: Path, interface: str, **opts: Any) -> tuple[dict[str, Any], float]:
    """The ``http`` method from ``tree``'s files in a child process; metrics and CPU s."""
    proc = subprocess.run([sys.executable, "-c", WORKER, str(tree),
                           json.dumps(dict(opts, interface=interface))],
                          capture_output=True, text=True, check=False, cwd=tree,
                          timeout=float(opts.get("duration_s", 10)) * 4 + 60)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip()[-300:]}, 0.0
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out["metrics"], float(out["cpu_s"])


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
    parser.add_argument("--baseline", metavar="REV",
                        help="also run http/https from git revision REV (its agent code and "
                             "its nginx template), each side in a child process")
    parser.add_argument("--json", action="store_true", help="print rows as JSON")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        base = stack.enter_context(worktree(args.baseline)) if args.baseline else None
        return _run(args, base)


def _run(args: argparse.Namespace, base: Path | None) -> int:
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
            old_nginx = None
            if base is not None:
                old_nginx = measurement_server.start(
                    work / f"nginx-base-{rate:g}", host=link.server_ip, port=BASE_PORT,
                    netns=ns.name, webroot=nginx.extra["webroot"],
                    speedtest_length_s=args.duration, tls=pki, tls_port=BASE_TLS_PORT,
                    template=base / TEMPLATE_IN_TREE)
            time.sleep(0.3)
            base_url = f"http://{link.server_ip}:{PORT}"
            tls_url = f"https://{link.server_ip}:{TLS_PORT}"
            # (name, tree or None = in this process, plain URL, TLS URL)
            runs = [(m, None, base_url, tls_url) for m in methods]
            if base is not None:
                runs = []
                for m in methods:
                    runs.append((m, REPO if m in ("http", "https") else None, base_url,
                                 tls_url))
                    if m in ("http", "https"):
                        runs.append((f"{m}@{args.baseline[:8]}", base,
                                     f"http://{link.server_ip}:{BASE_PORT}",
                                     f"https://{link.server_ip}:{BASE_TLS_PORT}"))
            ctx = MethodContext("bench-probe", "bench",
                                LinkBinding("bench", "fixed", "bench", interface=link.host_if))
            common = {"loaded_latency": False}
            for i in range(args.repeat):
                for direction in ("download", "upload"):
                    key = f"{direction}_mbps"
                    # Alternate the order each repeat so drift favours no revision.
                    for method, tree, plain, tls_target in (runs if i % 2 == 0
                                                            else runs[::-1]):
                        before, ref_cpu, ref_bytes = ref(ctx, link, direction, args.duration)
                        kind = method.split("@")[0]
                        if kind in ("http", "https"):
                            tls = {"ca_file": str(pki.ca)} if kind == "https" else {}
                            opts = dict(direction=direction,
                                        target=tls_target if tls else plain,
                                        duration_s=args.duration + 1, warmup_s=1,
                                        **common, **tls)
                            m, used = (run_method("http", ctx, **opts) if tree is None
                                       else run_http_in(tree, link.host_if, **opts))
                        elif kind == "speedtest":
                            m, used = run_method("speedtest", ctx,
                                                 target=f"{plain}/speedtest/upload.php",
                                                 direction=direction, length_s=args.duration,
                                                 **common)
                        else:
                            m, used = run_cli(plain, direction, args.duration)
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
            if old_nginx is not None:
                old_nginx.stop()
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
    cpu_med: dict[tuple[float, str, str], float] = {}
    table = []
    for (rate, method, direction), group in groups.items():
        errs = [r["error_pct"] for r in group if r["error_pct"] is not None]
        cpus = [r["cpu_s_per_gb"] for r in group if r["cpu_s_per_gb"] is not None]
        if cpus:
            cpu_med[(rate, method, direction)] = statistics.median(cpus)
        table.append(f"{rate:>6g} {method:<14} {direction:<8} "
                     f"{_fmt(statistics.median(errs) if errs else None, '+7.2f')} "
                     f"{_fmt(max(errs, key=abs) if errs else None, '+7.2f')} "
                     f"{_fmt(cpu_med.get((rate, method, direction)), '9.2f')}")
    if any(len(g) > 1 for g in groups.values()):
        print("\nmedians over repeats:")
        print(f"{'rate':>6} {'method':<14} {'dir':<8} {'error%':>7} {'worst%':>7} "
              f"{'CPU-s/GB':>9}")
        print("\n".join(table))
    # "https" pairs with "http", "https@REV" with "http@REV".
    ratios = [(rate, method, direction, tls / cpu_med[(rate, "http" + method[5:], direction)])
              for (rate, method, direction), tls in cpu_med.items()
              if method.startswith("https") and (rate, "http" + method[5:], direction) in cpu_med]
    if ratios:
        print("\nTLS/plain CPU per GB (medians; goal <= 2):")
        for rate, method, direction, ratio in ratios:
            print(f"{rate:>6g} {method:<14} {direction:<8} {ratio:5.2f}x")

if __name__ == "__main__":
    sys.exit(main())
