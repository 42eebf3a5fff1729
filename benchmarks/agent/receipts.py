"""What end-to-end receipts cost the probe: broker messages, agent CPU and spool writes
per result, with receipts (``[spool] receipts = true``) and without (PUBACK only), in the
same run, against real mosquitto, ``netmon-collector run`` and influxd on loopback.

    python benchmarks/agent/receipts.py [--runs 3] [--results 5000] [--steady-s 20] [--json]

Two scenarios, each in both modes, medians over ``--runs``:

* **drain**: the spool holds ``--results`` results (written by this script, so their
  inserts are not the agent's I/O); ``netmon-agent run`` starts, publishes them, the
  collector writes them to InfluxDB (and, with receipts, receipts them); the run ends
  when InfluxDB holds them all and the spool is empty. The agent's start-up (measured in
  a run with an empty spool) is subtracted.
* **steady**: the agent measures (five ``tcp`` tests every second) for ``--steady-s``
  seconds; counted from the moment it is connected, over the results it spooled
  meanwhile (inserts included).

Figures per result:

* ``broker_packets``: MQTT packets the broker received plus sent (PUBLISH, PUBACK, …;
  ``$SYS/broker/messages/received`` + ``sent``, ``sys_interval 1``);
* ``broker_publishes``: PUBLISH packets only (``$SYS/broker/publish/messages/…``);
* ``agent_cpu_ms``: the agent's user + system CPU (``/proc/PID/stat``);
* ``spool_write_bytes``: bytes the agent wrote to storage (``write_bytes`` of
  ``/proc/PID/io``; the state file lives on a tmpfs so this is the spool alone).

Needs mosquitto and influxd (Debian packages); the spool goes on the disk of
``--dir`` (default: the system temporary directory, which must not be a tmpfs for
``spool_write_bytes`` to mean anything).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from agent.spool import Spool  # noqa: E402
from devstack import services  # noqa: E402
from netmon.contract import Metrics, ResultMessage, Topics, now_utc  # noqa: E402
from tests.helpers.collector import write_config as collector_config  # noqa: E402

PROBE = "ky-anh-01"  # in the helpers' site registry
DB = "netmon"
HZ = os.sysconf("SC_CLK_TCK")
AGENT = [sys.executable, "-c", "import sys; from agent.cli import main; sys.exit(main())"]


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def sys_counters(port: int) -> dict[str, int]:
    """The broker's retained $SYS message counters, read by a short-lived client."""
    names = ("messages/received", "messages/sent", "publish/messages/received",
             "publish/messages/sent")
    got: dict[str, int] = {}
    done = threading.Event()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        key = msg.topic.removeprefix("$SYS/broker/")
        if key in names:
            got[key] = int(msg.payload)
            if len(got) == len(names):
                done.set()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sys-{uuid.uuid4().hex[:6]}")
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    for name in names:
        c.subscribe(f"$SYS/broker/{name}", qos=0)
    c.loop_start()
    if not done.wait(10):
        raise SystemExit(f"broker $SYS counters missing: {got}")
    c.loop_stop()
    c.disconnect()
    return got


def influx_count(port: int) -> int:
    q = urllib.parse.urlencode({"db": DB, "q": f"SELECT count(result_id) FROM results "
                                               f"WHERE probe = '{PROBE}'"})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/query?{q}", timeout=10) as r:
        series = json.load(r)["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


def agent_config(path: Path, port: int, spool: Path, state: Path, receipts: bool,
                 tests: str = "") -> None:
    path.write_text(f"""probe_id = "{PROBE}"
heartbeat_s = 300
state_dir = "{state}"
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
[links.fibre]
access = "fixed"
isp = "VNPT"
{tests}
""")


def fill_spool(path: Path, n: int) -> None:
    """N results a millisecond apart (a probe makes at most a few per millisecond per
    series; thousands in the same millisecond could share a point by the collector's
    identity offset, see docs/schema.md)."""
    topic = Topics().results(PROBE)
    t0 = now_utc() - timedelta(milliseconds=n)
    with Spool(path, max_results=10 * n, max_bytes=10**10) as spool:
        for start in range(0, n, 1000):
            spool.put([(str(m.id), topic, m.to_json()) for m in (
                ResultMessage(probe_id=PROBE, link="fibre", access="fixed", isp="VNPT",
                              method="tcp", target="127.0.0.1:443",
                              started_at=t0 + timedelta(milliseconds=i),
                              duration_s=0.5, agent_version="bench",
                              metrics=Metrics(rtt_ms=1.0 + i % 7, loss_pct=0.0, samples=3))
                for i in range(start, min(start + 1000, n)))])


def spool_counts(path: Path) -> tuple[int, int]:
    """(rows now, rows ever spooled)."""
    with Spool(path, readonly=True) as spool:
        st = spool.stats()
        return st.depth, st.spooled


def wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)


def connected(log: Path) -> bool:
    """The agent logged its connection to the broker."""
    try:
        return "connected to 127.0.0.1" in log.read_text(errors="replace")
    except OSError:
        return False


class Stack:
    """mosquitto (``sys_interval 1``), influxd and the collector for one scenario."""

    def __init__(self, work: Path) -> None:
        port = services.free_port()
        conf = services.mosquitto_config(work / "mosquitto", port, extra="sys_interval 1\n")
        self.broker = services.start_mosquitto(work / "mosquitto", port=port, config=conf)
        self.influx = services.start_influxd(work / "influxd")
        cfg = collector_config(work / "collector", self.broker.port, self.influx.port,
                               database=DB)
        self.log = open(work / "collector.log", "wb")  # noqa: SIM115
        self.collector = subprocess.Popen([sys.executable, "-m", "collector.cli", "run",
                                           "--config", str(cfg)], stdout=self.log,
                                          stderr=subprocess.STDOUT, cwd=REPO)
        wait(lambda: "MQTT subscribed" in (work / "collector.log").read_text(errors="replace"),
             60, "the collector")

    def close(self) -> None:
        self.collector.send_signal(signal.SIGTERM)
        self.collector.wait(30)
        self.log.close()
        self.influx.stop()
        self.broker.stop()


AGENTS: list[subprocess.Popen[bytes]] = []


def run_agent(work: Path, name: str, cfg: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NETMON_CLOCK_ASSUME": "synced"}
    with open(work / f"{name}.log", "ab") as out:
        proc = subprocess.Popen([*AGENT, "run", "--config", str(cfg)], stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=REPO)
    AGENTS.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sys_after(port: int) -> dict[str, int]:
    time.sleep(2.5)  # two $SYS updates after the end
    return sys_counters(port)


def per_result(before: dict[str, int], after: dict[str, int], n: int) -> dict[str, float]:
    d = {k: after[k] - before[k] for k in before}
    return {"broker_packets": (d["messages/received"] + d["messages/sent"]) / n,
            "broker_publishes": (d["publish/messages/received"] + d["publish/messages/sent"])
            / n}


def drain(work: Path, n: int, receipts: bool) -> dict[str, float]:
    mode = "on" if receipts else "off"
    stack = Stack(work / f"drain-{mode}")
    state = Path(tempfile.mkdtemp(prefix="netmon-state-", dir="/dev/shm"))
    try:
        # Start-up cost: an empty spool, until connected and settled.
        empty = work / f"empty-{mode}.db"
        cfg = work / f"empty-{mode}.toml"
        agent_config(cfg, stack.broker.port, empty, state, receipts)
        proc = run_agent(work, f"empty-{mode}", cfg)
        wait(lambda: connected(work / f"empty-{mode}.log"), 60, "the agent connected")
        time.sleep(1.0)
        base_ticks, base_io = cpu_ticks(proc.pid), write_bytes(proc.pid)
        stop(proc)

        spool = work / f"drain-{mode}.db"
        fill_spool(spool, n)
        cfg = work / f"drain-{mode}.toml"
        agent_config(cfg, stack.broker.port, spool, state, receipts)
        before = sys_counters(stack.broker.port)
        t0 = time.monotonic()
        proc = run_agent(work, f"drain-{mode}", cfg)
        wait(lambda: influx_count(stack.influx.port) >= n, 600, "every point in InfluxDB")
        if receipts:
            wait(lambda: spool_counts(spool)[0] == 0, 600, "every result receipted")
        else:
            wait(lambda: spool_counts(spool)[0] == 0, 600, "every result acknowledged")
        seconds = time.monotonic() - t0
        ticks, io = cpu_ticks(proc.pid) - base_ticks, write_bytes(proc.pid) - base_io
        stop(proc)
        after = sys_after(stack.broker.port)
        stored = influx_count(stack.influx.port)
        return {**per_result(before, after, n), "agent_cpu_ms": ticks / HZ * 1000 / n,
                "spool_write_bytes": io / n, "results_per_s": n / seconds,
                "stored": float(stored)}
    finally:
        for proc in AGENTS:
            stop(proc)
        stack.close()


def steady(work: Path, seconds: float, receipts: bool) -> dict[str, float]:
    mode = "on" if receipts else "off"
    stack = Stack(work / f"steady-{mode}")
    state = Path(tempfile.mkdtemp(prefix="netmon-state-", dir="/dev/shm"))
    try:
        tests = "".join(f"""
[tests.t{i}]
method = "tcp"
every_s = 1
jitter_s = 0
target = "127.0.0.1:{stack.broker.port}"
count = 1
""" for i in range(5))
        spool = work / f"steady-{mode}.db"
        cfg = work / f"steady-{mode}.toml"
        agent_config(cfg, stack.broker.port, spool, state, receipts, tests)
        proc = run_agent(work, f"steady-{mode}", cfg)
        wait(lambda: connected(work / f"steady-{mode}.log") and spool.exists(), 60,
             "the agent connected")
        time.sleep(2.0)
        before = sys_counters(stack.broker.port)
        ticks0, io0 = cpu_ticks(proc.pid), write_bytes(proc.pid)
        spooled0 = spool_counts(spool)[1]
        time.sleep(seconds)
        ticks, io = cpu_ticks(proc.pid) - ticks0, write_bytes(proc.pid) - io0
        n = spool_counts(spool)[1] - spooled0
        after = sys_counters(stack.broker.port)
        stop(proc)
        return {**per_result(before, after, n), "agent_cpu_ms": ticks / HZ * 1000 / n,
                "spool_write_bytes": io / n, "results": float(n)}
    finally:
        for proc in AGENTS:
            stop(proc)
        stack.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--results", type=int, default=5000)
    parser.add_argument("--steady-s", type=float, default=20.0)
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the spools go (a real disk, not a tmpfs)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {}
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="netmon-receipts-", dir=args.dir) as tmp:
            work = Path(tmp)
            os.chmod(work, 0o755)  # mosquitto may drop to its own user
            for receipts in (False, True):
                mode = "receipts" if receipts else "puback_only"
                for scenario in ("drain", "steady"):
                    figures = drain(work, args.results, receipts) if scenario == "drain" \
                        else steady(work, args.steady_s, receipts)
                    runs.setdefault(f"{scenario}/{mode}", []).append(figures)
                    print(f"run {i + 1} {scenario}/{mode}: " + ", ".join(
                        f"{k}={v:.3f}" for k, v in figures.items()), file=sys.stderr)
    medians = {key: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
               for key, rs in runs.items()}
    if args.json:
        print(json.dumps({"runs": runs, "median": medians}))
        return 0
    cols = ["broker_packets", "broker_publishes", "agent_cpu_ms", "spool_write_bytes"]
    print(f"{'per result (median of ' + str(args.runs) + ')':28}" +
          "".join(f"{c:>19}" for c in cols))
    for key, fig in medians.items():
        print(f"{key:28}" + "".join(f"{fig[c]:19.3f}" for c in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
