"""Ingest benchmark: results/s end to end, MQTT (mosquitto) -> collector -> InfluxDB (influxd).

    python benchmarks/ingest/run.py                 # 3 runs x 30000 results, prints medians
    python benchmarks/ingest/run.py --n 50000 --runs 5 --json

Each run starts a fresh mosquitto and influxd on loopback (same machine: 2 cores shared by
broker, database, publisher and collector), then measures:

- ``backlog``: N valid results queued on the broker for the collector's persistent session
  while it is away; ``netmon-collector run`` (a subprocess, ``--workers`` processes) starts
  and drains them. Rate = points from the first ones seen in InfluxDB until the count
  equals N, over that time (so interpreter start-up is not counted). The final count must
  equal N exactly.
- ``live``: the collector is running; a separate publisher process sends N results as fast
  as it can (one Python paho publisher tops out near 10,000 msg/s here, so this figure is
  capped by the publisher). Time = first publish -> count in InfluxDB equals N.
- ``naive``: the same backlog drained by a one-HTTP-write-per-message consumer (paho
  auto-ack, validate, POST one line) - the design the batching writer replaces. Run on
  ``--naive-n`` results (default 3000) because it is slow.

The figure for the issue's goal (>= 10,000 results/s) is the median ``backlog`` and
``live`` rate.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.baseline import worktree
from collector.config import CollectorConfig, load
from collector.core.influx import InfluxClient
from collector.core.ingest import validate
from collector.core.registry import Registry
from devstack import services
from netmon.contract import Topics
from tests.helpers.collector import SITES, make_result, write_config

DB = "bench"
REPO = Path(__file__).resolve().parents[2]
#: A sitecustomize that measures the garbage collector's CPU (``--gc-stats``).
GC_STATS_DIR = Path(__file__).resolve().parent / "gcstats"


def payloads(n: int, offset: int = 0) -> list[tuple[str, bytes]]:
    """N distinct valid results spread over the registry's probes."""
    topics = Topics()
    out = []
    for i in range(offset, offset + n):
        m = make_result(i, probe_id=SITES[i % len(SITES)].probe_id)
        out.append((topics.results(m.probe_id), m.to_json()))
    return out


def publish(port: int, n: int, offset: int) -> None:
    """Publish N results at QoS 1 as fast as the broker acknowledges (child process)."""
    msgs = payloads(n, offset)
    acked = 0

    def on_publish(*_: object) -> None:
        nonlocal acked
        acked += 1

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{offset}",
                    protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.on_publish = on_publish
    c.connect("127.0.0.1", port)
    c.loop_start()
    print("ready", flush=True)
    sys.stdin.readline()  # parent says go
    for topic, payload in msgs:
        c.publish(topic, payload, qos=1)
    while acked < n:
        time.sleep(0.005)
    c.disconnect()
    c.loop_stop()


def spawn_publisher(port: int, n: int, offset: int) -> subprocess.Popen[str]:
    """Start a publisher process and wait until its payloads are built and it is connected."""
    proc = subprocess.Popen([sys.executable, __file__, "_publish", str(port), str(n),
                             str(offset)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout and proc.stdout.readline().strip() == "ready"
    return proc


def count(client: InfluxClient) -> int:
    """Points in ``results``."""
    res = client.query("SELECT count(download_mbps) FROM results")
    return int(res[0][0].values[0][1]) if res and res[0] else 0


def wait_count(client: InfluxClient, n: int, timeout: float) -> float:
    """Monotonic time when count reached n (polling every 50 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if count(client) >= n:
            return time.monotonic()
        time.sleep(0.05)
    raise TimeoutError(f"only {count(client)}/{n} points after {timeout}s")


class CollectorProc:
    """``netmon-collector run`` as a subprocess (its own interpreter, like production),
    from the source ``tree`` (default: this checkout)."""

    def __init__(self, cfg: Path, tree: Path = REPO, gc_stats: Path | None = None) -> None:
        self.log = cfg.parent / f"collector-{time.monotonic_ns()}.log"
        self.fh = open(self.log, "wb")  # noqa: SIM115
        env = {**os.environ, "PYTHONPATH": str(tree)}
        if gc_stats is not None:  # the garbage collector's CPU, written at exit
            env["PYTHONPATH"] += os.pathsep + str(GC_STATS_DIR)
            env["NETMON_GCSTATS"] = str(gc_stats)
        self.proc = subprocess.Popen([sys.executable, "-m", "collector.cli", "run", "--config",
                                      str(cfg), "--log-level", "INFO"], stdout=self.fh,
                                     stderr=subprocess.STDOUT, cwd=tree, env=env)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)
        self.fh.close()


def cpu_seconds(pid: int) -> float:
    """User+system CPU of a process and all its descendants (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, (0, 0.0))[1]
        todo += [c for c, (ppid, _) in stats.items() if ppid == p]
    return total


def drain_rate(client: InfluxClient, n: int, timeout: float,
               pids: tuple[int, ...] = ()) -> tuple[float, list[float]]:
    """Sustained rate from the first points seen to all n (process start-up excluded),
    and the CPU seconds each of ``pids`` used over the same span."""
    deadline = time.monotonic() + timeout
    c0, t0 = 0, 0.0
    cpu0: list[float] = []
    while time.monotonic() < deadline:
        c = count(client)
        if c0 == 0 and c > 0:
            c0, t0 = c, time.monotonic()
            cpu0 = [cpu_seconds(p) for p in pids]
        if c >= n:
            if c == c0:
                raise RuntimeError("poll too coarse: everything arrived in one step")
            cpu = [cpu_seconds(p) - c for p, c in zip(pids, cpu0, strict=True)]
            return (n - c0) / (time.monotonic() - t0), [x / (n - c0) for x in cpu]
        time.sleep(0.02)
    raise TimeoutError(f"only {count(client)}/{n} points after {timeout}s")


def run_once(n: int, naive_n: int, workers: int, tmp: Path) -> dict[str, float]:
    """One run of the three measurements on fresh services."""
    mq = services.start_mosquitto(tmp / "mq")
    ix = services.start_influxd(tmp / "ix")
    out: dict[str, float] = {}
    try:
        cfg_path = write_config(tmp / "c", mq.port, ix.port, database=DB,
                                client_id="bench-collector")
        text = cfg_path.read_text().replace("stats_interval_s = 1", "stats_interval_s = 3600")
        text = text.replace('client_id = "bench-collector"',
                            f'client_id = "bench-collector"\nworkers = {workers}')
        cfg_path.write_text(text)
        cfg = load(cfg_path)
        influx = InfluxClient(cfg.influxdb)
        # 1. backlog: create the sessions, go away, queue N, come back.
        col = CollectorProc(cfg_path)
        _wait_subscribed(col, workers)
        col.stop()
        pub = spawn_publisher(mq.port, n, 0)
        assert pub.stdin
        pub.stdin.write("go\n")
        pub.stdin.flush()
        pub.wait(600)
        col = CollectorProc(cfg_path)
        rate, cpu = drain_rate(influx, n, 600, (col.proc.pid, ix.proc.pid, mq.proc.pid))
        out["backlog"] = rate
        # CPU per result is what contention on a shared machine does not distort much:
        # 1e6 / us_per_result is what one core could sustain.
        out["collector_cpu_us"], out["influxd_cpu_us"], out["mosquitto_cpu_us"] = (
            x * 1e6 for x in cpu)
        assert count(influx) == n
        # 2. live: collector running, publisher sends N more.
        pub = spawn_publisher(mq.port, n, n)
        assert pub.stdin
        t0 = time.monotonic()
        pub.stdin.write("go\n")
        pub.stdin.flush()
        t1 = wait_count(influx, 2 * n, 600)
        pub.wait(60)
        out["live"] = n / (t1 - t0)
        col.stop()
        assert count(influx) == 2 * n, count(influx)
        # 3. naive: one HTTP write per message, backlog of naive_n.
        out["naive"] = naive(cfg, mq.port, naive_n, 2 * n, influx)
        assert count(influx) == 2 * n + naive_n
        influx.close()
    finally:
        mq.stop()
        ix.stop()
    return out


def backlog_only(n: int, tmp: Path, tree: Path, gc_stats: bool = False) -> dict[str, float]:
    """The backlog drain alone, by the collector in ``tree``, on fresh services: the
    figures ``--baseline`` compares (with ``gc_stats``, also ``gc_cpu_us``: the garbage
    collector's CPU over the drain process's life, start-up included, per result)."""
    mq = services.start_mosquitto(tmp / "mq")
    ix = services.start_influxd(tmp / "ix")
    try:
        cfg_path = write_config(tmp / "c", mq.port, ix.port, database=DB,
                                client_id="bench-collector")
        cfg_path.write_text(cfg_path.read_text().replace("stats_interval_s = 1",
                                                         "stats_interval_s = 3600"))
        influx = InfluxClient(load(cfg_path).influxdb)
        col = CollectorProc(cfg_path, tree)
        _wait_subscribed(col, 1)
        col.stop()
        pub = spawn_publisher(mq.port, n, 0)
        assert pub.stdin
        pub.stdin.write("go\n")
        pub.stdin.flush()
        pub.wait(600)
        stats_file = tmp / "gcstats.json"
        col = CollectorProc(cfg_path, tree, stats_file if gc_stats else None)
        rate, cpu = drain_rate(influx, n, 600, (col.proc.pid,))
        assert count(influx) == n
        col.stop()
        influx.close()
        out = {"backlog": rate, "collector_cpu_us": cpu[0] * 1e6}
        if gc_stats:
            gen = json.loads(stats_file.read_text())
            out["gc_cpu_us"] = sum(g["cpu_s"] for g in gen.values()) / n * 1e6
        return out
    finally:
        mq.stop()
        ix.stop()


def compare(rev: str, n: int, runs: int, as_json: bool, gc_stats: bool = False) -> int:
    """Backlog drains by this checkout's collector and by ``rev``'s, alternating, on the
    same machine in the same run; prints the medians and the ratio."""
    got: dict[str, list[dict[str, float]]] = {"current": [], "baseline": []}
    with worktree(rev) as base:
        for i in range(runs):
            for key, tree in (("baseline", base), ("current", REPO)):
                with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
                    r = backlog_only(n, Path(tmp), tree, gc_stats)
                got[key].append(r)
                gc_part = (f" (garbage collector {r['gc_cpu_us']:.0f})" if gc_stats else "")
                print(f"run {i + 1} {key}: backlog {r['backlog']:,.0f}/s, collector "
                      f"{r['collector_cpu_us']:.0f} us/result{gc_part}", file=sys.stderr)
    med = {k: {f: statistics.median(r[f] for r in rs) for f in rs[0]} for k, rs in got.items()}
    ratio = med["baseline"]["collector_cpu_us"] / med["current"]["collector_cpu_us"]
    if as_json:
        print(json.dumps({"n": n, "runs": runs, "baseline": rev, "median": med,
                          "cpu_baseline_over_current": ratio, "all": got}))
        return 0
    print(f"median over {runs} runs of {n} results (backlog drain, 1 worker): collector CPU "
          f"per result {med['current']['collector_cpu_us']:.0f} us (baseline {rev}: "
          f"{med['baseline']['collector_cpu_us']:.0f} us; {ratio:.2f}x less)"
          + (f", of which garbage collector {med['current']['gc_cpu_us']:.0f} us (baseline "
             f"{med['baseline']['gc_cpu_us']:.0f} us)" if gc_stats else "") + ", backlog "
          f"{med['current']['backlog']:,.0f}/s (baseline {med['baseline']['backlog']:,.0f}/s);"
          f" load average {os.getloadavg()[0]:.1f}")
    return 0


def _wait_subscribed(col: CollectorProc, workers: int) -> None:
    # The subscription must exist before the backlog is published, or nothing is queued.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = col.log.read_text(errors="replace")
        if text.count("MQTT subscribed") >= workers:
            return
        time.sleep(0.1)
    raise RuntimeError(f"collector did not subscribe: {col.log.read_text()}")


def naive(cfg: CollectorConfig, port: int, n: int, offset: int, influx: InfluxClient) -> float:
    """Drain a backlog with one POST per message (auto-ack after each write)."""
    registry = Registry.from_sites(SITES)
    topics = Topics()
    writer = InfluxClient(cfg.influxdb)

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        item = validate(msg.topic, msg.payload, topics, registry)
        if item.lines:
            writer.write_lines(item.lines, compress=False)

    def make() -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-naive",
                        protocol=mqtt.MQTTv5)
        c.on_message = on_message
        return c

    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c = make()
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.subscribe(topics.all_results(), qos=1)
    c.loop_start()
    time.sleep(0.5)
    c.disconnect()
    c.loop_stop()
    pub = spawn_publisher(port, n, offset)
    assert pub.stdin
    pub.stdin.write("go\n")
    pub.stdin.flush()
    pub.wait(600)
    c = make()
    t0 = time.monotonic()
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.loop_start()
    t1 = wait_count(influx, offset + n, 600)
    c.disconnect()
    c.loop_stop()
    writer.close()
    return n / (t1 - t0)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the medians."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_publish":
        publish(int(argv[1]), int(argv[2]), int(argv[3]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=30000, help="results per measurement")
    ap.add_argument("--naive-n", type=int, default=3000, help="results for the naive path")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1, help="collector processes (mqtt.workers)")
    ap.add_argument("--baseline", metavar="REV",
                    help="only the backlog drain, by this checkout's collector and by REV's "
                         "(a git revision), alternating; prints both and the ratio")
    ap.add_argument("--gc-stats", action="store_true",
                    help="with --baseline: also the garbage collector's CPU per result")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.baseline:
        return compare(args.baseline, args.n, args.runs, args.json, args.gc_stats)
    runs = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
            r = run_once(args.n, args.naive_n, args.workers, Path(tmp))
        runs.append(r)
        print(f"run {i + 1}: " + "  ".join(
            f"{k}={v:,.0f}" + ("" if k.endswith("_us") else "/s") for k, v in r.items()),
            file=sys.stderr)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    result = {"n": args.n, "runs": args.runs, "workers": args.workers, "median_results_per_s": med,
              "batched_vs_naive": med["backlog"] / med["naive"], "all": runs}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"median over {args.runs} runs of {args.n} results, {args.workers} worker(s): "
              f"backlog {med['backlog']:,.0f}/s, live {med['live']:,.0f}/s, "
              f"naive (1 POST/message) {med['naive']:,.0f}/s; "
              f"batched/naive = {result['batched_vs_naive']:.1f}x; CPU per result: "
              f"collector {med['collector_cpu_us']:.0f} us (= {1e6 / med['collector_cpu_us']:,.0f}"
              f"/s per core), influxd {med['influxd_cpu_us']:.0f} us, mosquitto "
              f"{med['mosquitto_cpu_us']:.0f} us; load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
