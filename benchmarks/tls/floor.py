#!/usr/bin/env python3
"""TLS floor: the least CPU per GB that Python's ``ssl`` can spend on an upload, against
plain TCP, with no event loop and no HTTP engine in the way.

One blocking connection to the measurement nginx on a tbf-shaped link POSTs one random
buffer again and again with ``sendall`` for ``--duration`` seconds (plain, then TLS with
the role's cipher choice, alternating order each repeat). CPU is the sending thread's CPU
time per 10^9 payload bytes handed to the socket. Whatever the ``http`` engine's TLS upload
costs above this floor is the engine's own overhead; the floor's TLS/plain ratio is what
no engine change can go below.

Needs root (namespaces, tc). Usage: see benchmarks/tls/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from devstack import measurement_server, netns

HTTP_PORT, HTTPS_PORT = 8080, 8443


def upload(host: str, port: int, ctx: ssl.SSLContext | None, chunk: int,
           duration: float) -> dict[str, Any]:
    """One blocking POST of ``chunk``-sized sendall calls for ``duration`` seconds."""
    sock: socket.socket = socket.create_connection((host, port), timeout=30)
    cipher = None
    if ctx is not None:
        sock = ctx.wrap_socket(sock, server_hostname=host)
        got = sock.cipher()  # type: ignore[attr-defined]
        cipher = got[0] if got else None
    try:
        sock.sendall(f"POST {measurement_server.UPLOAD_PATH} HTTP/1.1\r\nHost: {host}\r\n"
                     f"Content-Length: {1 << 40}\r\n\r\n".encode())
        data = memoryview(os.urandom(chunk))
        sent = 0
        t0, c0 = time.monotonic(), time.thread_time()
        while time.monotonic() - t0 < duration:
            sock.sendall(data)
            sent += chunk
        cpu, elapsed = time.thread_time() - c0, time.monotonic() - t0
    finally:
        sock.close()
    return {"mbps": sent * 8 / elapsed / 1e6, "cpu_s_per_gb": cpu / (sent / 1e9),
            "cipher": cipher}


def main(argv: list[str] | None = None) -> int:
    """Parse options, run, print the table (or JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=1000, help="tbf rate, Mbit/s (default 1000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per scheme (default 3)")
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per run (default 4)")
    ap.add_argument("--chunk", type=int, default=1 << 18, help="bytes per sendall (256 KiB)")
    ap.add_argument("--json", action="store_true", help="every run and the medians as JSON")
    args = ap.parse_args(argv)
    reason = netns.can_use_netns()
    if reason:
        print(f"benchmarks/tls/floor: {reason}; run it as root", file=sys.stderr)
        return 2
    if args.repeat < 1 or args.duration < 1 or args.chunk < 1:
        print("benchmarks/tls/floor: --repeat, --duration and --chunk must be positive",
              file=sys.stderr)
        return 2
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "tls": []}
    ns = netns.ServerNamespace.create()
    with tempfile.TemporaryDirectory(prefix="netmon-tls-floor-") as tmp:
        try:
            link = ns.add_link(args.rate)
            pki = measurement_server.make_pki(Path(tmp) / "pki", [link.server_ip])
            nginx = measurement_server.start(Path(tmp) / "nginx", host="0.0.0.0",
                                             port=HTTP_PORT, netns=ns.name, sparse=True,
                                             tls=pki, tls_port=HTTPS_PORT)
            ctx = ssl.create_default_context(cafile=str(pki.ca))
            try:
                for i in range(args.repeat):
                    order = [("plain", HTTP_PORT, None), ("tls", HTTPS_PORT, ctx)]
                    for name, port, c in (order if i % 2 == 0 else order[::-1]):
                        runs[name].append(upload(link.server_ip, port, c, args.chunk,
                                                 args.duration))
            finally:
                nginx.stop()
        finally:
            ns.destroy()
    med = {k: statistics.median(r["cpu_s_per_gb"] for r in v) for k, v in runs.items()}
    ratio = med["tls"] / med["plain"]
    if args.json:
        print(json.dumps({"rate": args.rate, "median_cpu_s_per_gb": med,
                          "tls_over_plain": ratio, "runs": runs}, indent=1))
        return 0
    for name, rows in runs.items():
        for r in rows:
            print(f"{name:<6} {r['mbps']:8.1f} Mb/s {r['cpu_s_per_gb']:6.3f} CPU-s/GB"
                  + (f"  {r['cipher']}" if r["cipher"] else ""))
    print(f"median CPU-s/GB: plain {med['plain']:.3f}, TLS {med['tls']:.3f}; "
          f"TLS/plain {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
