"""Memory and time of writing a probe's messages with pydantic vs netmon/wire.py (issue 20).

Each measurement runs in a fresh interpreter that first imports what the agent's run time
holds anyway (asyncio, ssl, sqlite3, paho-mqtt), then builds and serialises one result and
one status message (and reads one receipt) either with the contract's pydantic models or
with ``netmon.wire``; the figure is the RSS added (after ``gc`` and ``malloc_trim``), and
whether pydantic got loaded. Medians over ``--runs``.

    .venv/bin/python benchmarks/agent/wirecost.py [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_PROBE = r"""
import asyncio, ctypes, gc, json, ssl, sqlite3, sys, time, uuid
from datetime import UTC, datetime
import paho.mqtt.client

def rss_mb():
    gc.collect()
    ctypes.CDLL(None).malloc_trim(0)
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

base = rss_mb()
fields = dict(probe_id="ht-01x", link="fibre", access="fixed", isp="VNPT", method="iperf3",
              target="10.0.0.1", started_at=datetime.now(UTC), duration_s=10.1,
              agent_version="1")
metrics = {"download_mbps": 143.2, "upload_mbps": 95.1, "idle_rtt_ms": 3.2,
           "loaded_rtt_ms": 20.5, "bytes": 312000000.0}
status = {"schema": 1, "probe_id": "ht-01x", "state": "online", "agent_version": "1"}
receipt = json.dumps({"schema": 1, "probe_id": "ht-01x", "ids": [str(uuid.uuid4())]}).encode()
if sys.argv[1] == "wire":
    from netmon import wire
    def write():
        return wire.Result(metrics=wire.Metrics(metrics), **fields).to_json()
    wire.encode_status(status)
    wire.parse_receipt(receipt, "ht-01x")
else:
    from netmon import contract
    def write():
        return contract.ResultMessage(metrics=contract.Metrics(**metrics), **fields).to_json()
    contract.StatusMessage.model_validate(status).to_json()
    contract.parse_receipt(receipt, "ht-01x")
write()
added = rss_mb() - base
t0 = time.perf_counter()
for _ in range(500):
    write()
took = (time.perf_counter() - t0) / 500
print(json.dumps({"rss_mb": round(added, 2), "us_per_result": took * 1e6,
                  "pydantic": any(m.startswith("pydantic") for m in sys.modules)}))
"""


def measure(kind: str) -> dict[str, float | bool]:
    """One fresh interpreter's figures for ``kind`` (``wire`` or ``pydantic``)."""
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", _PROBE, kind], cwd=REPO,
                         capture_output=True, text=True, timeout=120, check=True)
    figures: dict[str, float | bool] = json.loads(out.stdout)
    return figures


def main() -> int:
    """Print the medians (and ratios) of both ways."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float | bool]]] = {"pydantic": [], "wire": []}
    for _ in range(args.runs):  # alternating, so load on the machine hits both alike
        for kind in runs:
            runs[kind].append(measure(kind))
    summary = {kind: {"rss_mb": statistics.median(float(r["rss_mb"]) for r in rs),
                      "us_per_result": round(statistics.median(
                          float(r["us_per_result"]) for r in rs)),
                      "pydantic_loaded": any(bool(r["pydantic"]) for r in rs)}
               for kind, rs in runs.items()}
    if args.json:
        print(json.dumps(summary))
        return 0
    for kind, s in summary.items():
        print(f"{kind:9} +{s['rss_mb']:.1f} MB RSS, {s['us_per_result']} us per result, "
              f"pydantic loaded: {s['pydantic_loaded']}")
    print(f"RSS pydantic / wire: {summary['pydantic']['rss_mb'] / summary['wire']['rss_mb']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
