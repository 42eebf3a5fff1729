"""Resident memory of the run time's own path, on its plain types vs the pydantic models
(issue 20, part A: config, plan, scheduler, methods and results without pydantic).

Each measurement is a fresh interpreter that imports what every run time holds anyway
(asyncio with ssl, sqlite3, paho-mqtt, the spool), then takes the config the start stage
hands over (the JSON of :func:`agent.handoff.encode`), builds the scheduler's jobs, runs
the plan's tcp test once against a loopback listener and writes its result as published:

* ``plain``: :func:`agent.runconfig.from_handoff`, ``netmon.wire`` results, pydantic made
  unimportable (what ``netmon-agent run``'s run time does now);
* ``models``: :func:`agent.config.from_handoff` and the contract's ``ResultMessage`` (what
  it did before: the models and pydantic loaded).

The figure is VmRSS after ``gc`` and ``malloc_trim`` (the agent trims after a test). The
publisher, remote configuration and updates are not in either (they still load pydantic
at this commit; ``bench.py`` measures the whole agent). Medians over ``--runs``.

    .venv/bin/python benchmarks/agent/plainrun.py [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

_PROBE = r"""
import asyncio, ctypes, gc, json, ssl, sqlite3, sys
kind, handoff_file = sys.argv[1], sys.argv[2]
if kind == "plain":
    class Blocked:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("pydantic", "pydantic_core", "pydantic_settings"):
                raise ImportError(name + " is blocked")
    sys.meta_path.insert(0, Blocked())
import paho.mqtt.client
import agent.spool
from agent.methods import registry
from agent.methods.base import MethodContext
from agent.scheduler import Scheduler

doc = json.load(open(handoff_file))
if kind == "plain":
    from agent.runconfig import from_handoff
    cfg = from_handoff(doc)
else:
    from agent.config import from_handoff
    from netmon.contract import ErrorInfo, Metrics, ResultMessage
    cfg = from_handoff(doc)

class NoLedger:
    def usage(self, month):
        return {}
    def estimate(self, test, link):
        return None

async def main():
    scheduler = Scheduler(cfg.plan(), list(cfg.links), lambda job: asyncio.sleep(0), NoLedger())
    out = []
    for job in scheduler.jobs.values():
        ctx = MethodContext(cfg.probe_id, "bench", cfg.bindings()[job.link])
        options = job.spec.options
        for r in await registry.get(job.spec.method)().run(ctx, options):
            if kind == "models":  # the result as the model, as the methods made it before
                r = ResultMessage(
                    probe_id=r.probe_id, link=r.link, access=r.access, isp=r.isp,
                    method=r.method, target=r.target, started_at=r.started_at,
                    duration_s=r.duration_s, agent_version=r.agent_version,
                    metrics=Metrics(**r.metrics.values()), flags=r.flags,
                    error=ErrorInfo(code=r.error.code, message=r.error.message)
                    if r.error else None)
            out.append(r.to_json())
    return out

assert asyncio.run(main())
gc.collect()
ctypes.CDLL(None).malloc_trim(0)
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS"))
print(json.dumps({"rss_mb": round(rss / 1024, 2),
                  "pydantic": any(m.startswith("pydantic") for m in sys.modules)}))
"""


def handoff_doc(directory: Path, port: int) -> Path:
    """The start stage's JSON for a one-link probe running a tcp test to ``port``."""
    from agent import config, handoff

    cfg = config.load(None, data={
        "probe_id": "bench-probe-01",
        "broker": {"host": "127.0.0.1", "port": 1, "tls": False},
        "spool": {"path": str(directory / "spool.db")},
        "links": {"lo": {"access": "fixed", "isp": "Loopback"}},
        "tests": {"rtt": {"method": "tcp", "target": f"127.0.0.1:{port}", "count": 3,
                          "interval_s": 0.01, "every_s": 60}}}, check_files=False)
    path = directory / "handoff.json"
    path.write_bytes(handoff.encode(cfg))
    return path


def measure(kind: str, doc: Path) -> dict[str, float | bool]:
    """One fresh interpreter's figures for ``kind`` (``plain`` or ``models``)."""
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", _PROBE, kind, str(doc)],
                         cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    figures: dict[str, float | bool] = json.loads(out.stdout)
    return figures


def main() -> int:
    """Print the medians (and their ratio) of both ways."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with socket.create_server(("127.0.0.1", 0)) as server, \
            tempfile.TemporaryDirectory() as tmp:
        def accept() -> None:
            while True:
                try:
                    server.accept()[0].close()
                except OSError:
                    return
        threading.Thread(target=accept, daemon=True).start()
        doc = handoff_doc(Path(tmp), server.getsockname()[1])
        runs: dict[str, list[dict[str, float | bool]]] = {"models": [], "plain": []}
        for _ in range(args.runs):
            for kind in runs:  # alternating, so both see the same machine
                runs[kind].append(measure(kind, doc))
    medians = {kind: statistics.median(float(r["rss_mb"]) for r in rs)
               for kind, rs in runs.items()}
    report = {"rss_mb": medians,
              "pydantic_loaded": {kind: any(bool(r["pydantic"]) for r in rs)
                                  for kind, rs in runs.items()},
              "models_over_plain": round(medians["models"] / medians["plain"], 2),
              "runs": runs}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for kind in runs:
            print(f"{kind:7} {medians[kind]:6.2f} MB  pydantic loaded: "
                  f"{report['pydantic_loaded'][kind]}")
        print(f"models / plain: {report['models_over_plain']}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
