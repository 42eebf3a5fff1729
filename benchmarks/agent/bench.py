"""Agent footprint and spool drain rate, against real local services.

    python benchmarks/agent/bench.py [--runs 3] [--results 20000] [--json]

Prints (medians over ``--runs``):

* ``idle_rss_mb``: resident memory of ``netmon-agent run`` connected to a local
  mosquitto with latency tests scheduled but none running (goal <= 35 MB, issue 20), and
  ``idle_anon_mb`` the private part of it (``RssAnon``; the rest is shared libraries);
* ``deployed_rss_mb``: the idle agent configured as the probe role deploys it, with
  remote configuration (a NOC public key) and agent updates (``[update] root``) on;
* ``test_rss_mb``: peak resident memory (VmHWM) of the agent across an iperf3 test
  against a local iperf3 server and tcp latency tests (the iperf3 child not counted);
* ``idle_cpu_pct``: CPU used by the idle agent over 20 s (percent of one core);
* ``drain_results_per_s``: results published and acknowledged per second when the
  agent starts with ``--results`` results spooled during an "outage" (goal >= 2000),
  counted at a subscriber from the first to the last message, and from agent start to
  an empty spool (``drain_total_s``, includes start-up). No collector runs here, so the
  drain uses ``[spool] receipts = false`` (the PUBACK deletes); what receipts add is
  measured by ``benchmarks/agent/receipts.py``.

Runs as any user; needs mosquitto and iperf3 (Debian packages).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from agent.spool import Spool  # noqa: E402
from benchmarks.baseline import worktree  # noqa: E402
from devstack import services  # noqa: E402
from netmon.contract import Metrics, ResultMessage, Topics, now_utc  # noqa: E402

PROBE = "bench-probe-01"


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def write_config(path: Path, port: int, spool: Path, tests: str,
                 receipts: bool = True, extra: str = "") -> None:
    path.write_text(f"""probe_id = "{PROBE}"
heartbeat_s = 300
[broker]
host = "127.0.0.1"
port = {port}
tls = false
max_inflight = 200
[spool]
path = "{spool}"
max_results = 1000000
max_mb = 1000
receipts = {'true' if receipts else 'false'}
[links.lo]
access = "fixed"
isp = "Loopback"
{tests}
{extra}
""")


def tcp_test(port: int, every_s: int, jitter_s: int) -> str:
    """A ``[tests.tcp]`` section: 3 connects to ``port`` (the broker's, which is open)."""
    return f"""
[tests.tcp]
method = "tcp"
every_s = {every_s}
jitter_s = {jitter_s}
target = "127.0.0.1:{port}"
count = 3
"""


@contextlib.contextmanager
def running_agent(config: Path, log: Path, tree: Path = REPO
                  ) -> Iterator[subprocess.Popen[bytes]]:
    """``netmon-agent run`` (from the source ``tree``) for the block, stopped (SIGTERM,
    then SIGKILL) on leaving it."""
    env = {**os.environ, "NETMON_CLOCK_ASSUME": "synced", "PYTHONPATH": str(tree)}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from agent.cli import main; sys.exit(main())",
             "run", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT, env=env,
            cwd=tree)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def footprint(work: Path, tree: Path = REPO) -> dict[str, float]:
    broker = services.start_mosquitto(work / "mosquitto")
    iperf = services.start_iperf3(work / "iperf3")
    try:
        # Idle: latency tests every 10 minutes, first one within 5 s.
        cfg = work / "idle.toml"
        write_config(cfg, broker.port, work / "idle-spool.db", tcp_test(broker.port, 600, 5))
        with running_agent(cfg, work / "idle.log", tree) as agent:
            time.sleep(10)  # started, connected, first test done
            ticks0, t0 = cpu_ticks(agent.pid), time.monotonic()
            time.sleep(20)
            ticks1, t1 = cpu_ticks(agent.pid), time.monotonic()
            idle_rss = rss_kb(agent.pid) / 1024
            # Of which private (heap, objects); the rest is file-backed (shared libraries,
            # clean pages the kernel can drop and read again).
            idle_anon = rss_kb(agent.pid, "RssAnon") / 1024
            hz = os.sysconf("SC_CLK_TCK")
            idle_cpu = (ticks1 - ticks0) / hz / (t1 - t0) * 100
        # As deployed: remote configuration and updates on (signature checks loaded).
        from netmon.signing import write_keypair

        write_keypair(work / "noc.key", work / "noc.pub", overwrite=True)
        (work / "releases").mkdir(exist_ok=True)
        cfg = work / "deployed.toml"
        write_config(cfg, broker.port, work / "deployed-spool.db",
                     tcp_test(broker.port, 600, 5),
                     extra=f"""[remote_config]
public_keys = ["{work / 'noc.pub'}"]
[update]
root = "{work / 'releases'}"
""")
        with running_agent(cfg, work / "deployed.log", tree) as agent:
            time.sleep(15)  # started, connected, first test done
            deployed_rss = rss_kb(agent.pid) / 1024
        # During a test: an iperf3 run (5 s each way) and tcp tests.
        cfg = work / "busy.toml"
        write_config(cfg, broker.port, work / "busy-spool.db", f"""
[tests.speed]
method = "iperf3"
every_s = 600
jitter_s = 0
target = "127.0.0.1"
port = {iperf.port}
duration_s = 5
omit_s = 0
direction = "both"
loaded_latency = false
""" + tcp_test(broker.port, 1, 0))
        with running_agent(cfg, work / "busy.log", tree) as agent:
            time.sleep(16)
            test_rss = rss_kb(agent.pid, "VmHWM") / 1024
        return {"idle_rss_mb": idle_rss, "idle_anon_mb": idle_anon, "idle_cpu_pct": idle_cpu,
                "deployed_rss_mb": deployed_rss, "test_rss_mb": test_rss}
    finally:
        iperf.stop()
        broker.stop()


def drain(work: Path, n: int) -> dict[str, float]:
    spool_path = work / "drain-spool.db"
    topic = Topics().results(PROBE)
    with Spool(spool_path, max_results=10 * n, max_bytes=10**10) as spool:
        batch = []
        for i in range(n):
            msg = ResultMessage(
                probe_id=PROBE, link="lo", access="fixed", isp="Loopback", method="tcp",
                target="127.0.0.1:443", started_at=now_utc(), duration_s=0.5,
                metrics=Metrics(rtt_ms=1.0 + i % 7, loss_pct=0.0, samples=10),
                agent_version="bench", id=uuid.uuid4())
            batch.append((str(msg.id), topic, msg.to_json()))
            if len(batch) == 1000:
                spool.put(batch)
                batch = []
        spool.put(batch)
    broker = services.start_mosquitto(work / "mosquitto-drain")
    got: list[float] = []
    done = threading.Event()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        got.append(time.monotonic())
        if len(got) >= n:
            done.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub")
    sub.on_message = on_message
    sub.connect(broker.host, broker.port)
    sub.subscribe(topic, qos=1)
    sub.loop_start()
    time.sleep(0.5)
    cfg = work / "drain.toml"
    write_config(cfg, broker.port, spool_path, "", receipts=False)
    t0 = time.monotonic()
    try:
        with running_agent(cfg, work / "drain.log"):
            if not done.wait(300):
                raise SystemExit(f"drain: only {len(got)} of {n} results arrived")
            while True:
                with Spool(spool_path, readonly=True) as ro:
                    if ro.depth() == 0:
                        break
                time.sleep(0.02)
            total = time.monotonic() - t0
    finally:
        sub.loop_stop()
        broker.stop()
    spool_path.unlink(missing_ok=True)
    return {"drain_results_per_s": (n - 1) / (got[-1] - got[0]), "drain_total_s": total}


def compare(rev: str, runs: int, as_json: bool) -> int:
    """Footprints of this checkout's agent and ``rev``'s, alternating in the same run."""
    got: dict[str, list[dict[str, float]]] = {"baseline": [], "current": []}
    with worktree(rev) as base:
        for i in range(runs):
            for key, tree in (("baseline", base), ("current", REPO)):
                with tempfile.TemporaryDirectory(prefix="netmon-bench-") as tmp:
                    os.chmod(tmp, 0o755)  # mosquitto may drop to its own user
                    figures = footprint(Path(tmp), tree)
                got[key].append(figures)
                print(f"run {i + 1} {key}: " + ", ".join(f"{k}={v:.2f}"
                                                         for k, v in figures.items()),
                      file=sys.stderr)
    med = {k: {f: statistics.median(r[f] for r in rs) for f in rs[0]} for k, rs in got.items()}
    ratio = {f: med["baseline"][f] / med["current"][f]
             for f in ("idle_rss_mb", "deployed_rss_mb", "test_rss_mb")}
    if as_json:
        print(json.dumps({"baseline": rev, "median": med, "baseline_over_current": ratio,
                          "runs": got}))
        return 0
    for key in ("idle_rss_mb", "idle_anon_mb", "deployed_rss_mb", "test_rss_mb",
                "idle_cpu_pct"):
        print(f"{key:15} current {med['current'][key]:7.2f}   baseline {rev} "
              f"{med['baseline'][key]:7.2f}   (median of {runs})")
    print("baseline / current: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratio.items()))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--results", type=int, default=20000)
    parser.add_argument("--baseline", metavar="REV",
                        help="footprint only (no drain), of this checkout and of REV (a git "
                             "revision) in turn; prints both medians and the ratio")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.baseline:
        return compare(args.baseline, args.runs, args.json)
    runs: list[dict[str, float]] = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="netmon-bench-") as tmp:
            work = Path(tmp)
            os.chmod(work, 0o755)  # mosquitto may drop to its own user
            figures = footprint(work) | drain(work, args.results)
            runs.append(figures)
            print(f"run {i + 1}: " + ", ".join(f"{k}={v:.2f}" for k, v in figures.items()),
                  file=sys.stderr)
    medians = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    if args.json:
        print(json.dumps({"runs": runs, "median": medians}))
    else:
        for key, value in medians.items():
            print(f"{key:22} {value:10.2f}   (median of {len(runs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
