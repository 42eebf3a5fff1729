"""What the agent writes to its SD card: bytes per result and per day for the example plan
(``examples/agent.toml``), against real mosquitto, ``netmon-collector run`` (receipts on,
as deployed) and influxd on loopback.

    python benchmarks/agent/sdwrites.py [--runs 3] [--window-s 120] [--idle-s 310]
                                        [--baseline REV] [--dir DIR] [--json]

For each agent version (this checkout, and with ``--baseline REV`` that git revision in a
temporary worktree, measured in the same run on the same services):

* ``per_result_bytes``: ``netmon-agent run`` measures a compressed copy of the example
  plan's latency schedule (per link: tcp and "icmp" every 10 s, "dns" every 30 s, each
  with jitter, all as ``tcp`` connects to the broker's port, so one result at a time as on
  a probe; its heartbeat, which rewrites the state file, compressed alike to 10 s); over
  ``--window-s`` seconds, the agent's ``write_bytes`` minus
  ``cancelled_write_bytes`` (``/proc/PID/io``: pages it dirtied, less those deleted
  before they reached the disk), minus the idle rate below, over the results it made
  in that window (counted in InfluxDB).
  Spool (SQLite file, WAL, checkpoints) and state file are on the same disk, as on a
  probe (``state_dir`` unset).
* ``idle_bytes_per_s``: an agent with the example's heartbeat (300 s) and no test, over
  ``--idle-s`` seconds from just after its first heartbeat (the state file, the status
  heartbeat): what time alone costs. A version that rewrites an unchanged state file only
  every ``STATE_REFRESH_S`` (issue 20) adds that many rewrites a day, each
  ``state_rewrite_bytes`` (one asked for with SIGUSR1 after the idle window).
* ``ledger_flush_bytes``: with write-behind (``[spool] write_delay_s``, issue 20) the
  budget ledger and counters of receipted results wait in memory and are committed every
  ``LEDGER_FLUSH_S`` (an hour), which the window above does not see: a real ``Spool`` in
  a child process holds and receipts an hour of the example plan's results with their
  ledger, then flushes; the average ``write_bytes`` of 50 such flushes (checkpoints
  included). 0 for a version without write-behind (its ledger is in ``per_result``).
* ``budgeted_run_ledger_bytes``: the same child then stores 50 results of a throughput
  test on a link with a data budget, whose ledger is committed at once (each result held
  and receipted): bytes per such run; the example plan has
  :func:`example_budgeted_runs_per_day` of them (the SIM's hourly iperf3: 24).
* ``mb_per_day``: ``results_per_day * per_result_bytes + idle_bytes_per_s * 86400 +
  86400 / STATE_REFRESH_S * state_rewrite_bytes +
  86400 / LEDGER_FLUSH_S * ledger_flush_bytes + budgeted_runs_per_day *
  budgeted_run_ledger_bytes``, with ``results_per_day`` from the
  example plan (every test on every link it names at its nominal interval: 1,400 a day).

Prints medians over ``--runs`` and, with ``--baseline``, the ratio baseline / this
checkout. ``write_bytes`` counts what the kernel will write back for the process; the
filesystem's own journal (ext4 jbd2) comes on top and is not counted. Needs mosquitto and
influxd (Debian packages); ``--dir`` must be on a real disk (not a tmpfs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from receipts import PROBE, Stack, connected, influx_count, stop, wait  # noqa: E402

from agent.config import load  # noqa: E402
from benchmarks.baseline import worktree  # noqa: E402

EXAMPLE = REPO / "examples" / "agent.toml"
#: The idle agent is another probe (its own MQTT client id and receipts topic): sharing
#: the busy one's id, each connection would kick the other off the broker.
IDLE_PROBE = "huong-khe-01"


def io_bytes(pid: int) -> int:
    """Bytes the process dirtied for the disk, less those cancelled (deleted unwritten)."""
    fields = dict(line.split(": ") for line in
                  Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(fields["write_bytes"]) - int(fields["cancelled_write_bytes"])


def example_results_per_day() -> float:
    """Runs a day of the example plan: each test on each of its links at its interval."""
    cfg = load(EXAMPLE, check_files=False)
    links = list(cfg.links)
    return sum(86400 / spec.every_s * len(spec.links_on(links))
               for spec in cfg.plan().tests.values())


def config(path: Path, port: int, spool: Path, tests: str, probe: str = PROBE,
           heartbeat_s: float = 300) -> None:
    path.write_text(f"""probe_id = "{probe}"
heartbeat_s = {heartbeat_s}
[broker]
host = "127.0.0.1"
port = {port}
tls = false
[spool]
path = "{spool}"
[links.fibre]
access = "fixed"
isp = "VNPT"
[links.mobile]
access = "mobile"
isp = "Viettel"
{tests}
""")


#: The busy agent's schedule runs this much faster than the example plan's.
COMPRESSION = 30


def compressed_plan(port: int) -> str:
    """The example's latency tests at 1/30 of their intervals, as loopback tcp connects."""
    return "".join(f"""
[tests.{name}]
method = "tcp"
every_s = {every}
jitter_s = {jitter}
target = "127.0.0.1:{port}"
count = 1
""" for name, every, jitter in (("ping_gateway", 10, 1), ("tcp_portal", 10, 1),
                                ("dns", 30, 2)))


@contextlib.contextmanager
def agent(tree: Path, cfg: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``netmon-agent run`` from the source ``tree`` (cwd first on the import path)."""
    env = {**os.environ, "NETMON_CLOCK_ASSUME": "synced", "PYTHONPATH": str(tree)}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from agent.cli import main; sys.exit(main())",
             "run", "--config", str(cfg)], stdout=out, stderr=subprocess.STDOUT, env=env,
            cwd=tree)
    try:
        yield proc
    finally:
        stop(proc)


_FLUSHES = """
import sys
from pathlib import Path
from agent import spool as sp
from agent import runtime
refresh = getattr(runtime, "STATE_REFRESH_S", 0.0)
if not hasattr(sp.Spool, "flush_ledger"):
    print(0.0, 1.0, 0.0, refresh)
    raise SystemExit
def io():
    f = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(f["write_bytes"]) - int(f["cancelled_write_bytes"])
per_hour = int(float(sys.argv[2]) / 24) + 1
spool = sp.Spool(Path(sys.argv[1]), write_delay_s=3600)
spool.begin()
spool.set_holding(True)
total, n = 0, 0
for hour in range(60):
    for i in range(per_hour):
        rid = f"{hour:04d}-{i:06d}-0000-0000-000000000000"
        link = ("fibre", "mobile")[i % 2]
        spool.put([(rid, "netmon/v1/probes/p/results", b"x" * 700)], sp.LedgerUpdate(
            usage={(link, "2026-12"): 400.0}, estimates={},
            last_results={link: f"2026-12-03T{hour % 24:02d}:00:00.000Z"}))
        spool.mark_sent([e.seq for e in spool.peek()])
        spool.receipt([rid])
    before = io()
    spool.flush_ledger()
    if hour >= 10:  # after the file and WAL reached their steady size
        total += io() - before
        n += 1
# A run on a budgeted link (the SIM's speed test): its ledger is committed at once.
urgent = 0
for i in range(50):
    rid = f"urgent-{i:06d}-0000-0000-000000000000"
    before = io()
    spool.put([(rid, "netmon/v1/probes/p/results", b"x" * 900)], sp.LedgerUpdate(
        usage={("mobile", "2026-12"): 2e8}, estimates={("speed_iperf3", "mobile"): 2e8},
        last_results={"mobile": "2026-12-03T00:00:00.000Z"}, urgent=True))
    urgent += io() - before
    spool.receipt([rid])
print(total / n, sp.LEDGER_FLUSH_S, urgent / 50, refresh)
"""


def ledger_flush(tree: Path, work: Path) -> tuple[float, float, float, float]:
    """(bytes written per ledger flush, seconds between flushes, bytes per budgeted run's
    ledger, seconds between forced state-file rewrites or 0) for the agent in ``tree``;
    (0, 1, 0, 0) when it has no write-behind."""
    work.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([sys.executable, "-c", _FLUSHES, str(work / "ledger.db"),
                          str(example_results_per_day())], cwd=tree, check=True,
                         capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tree)}).stdout.split()
    return float(out[0]), float(out[1]), float(out[2]), float(out[3])


def state_refresh_s(tree: Path) -> float:
    """``STATE_REFRESH_S`` of the agent in ``tree`` (0: it rewrites the state file at
    every heartbeat, and knows no SIGUSR1)."""
    out = subprocess.run([sys.executable, "-c", "from agent import runtime; "
                          "print(getattr(runtime, 'STATE_REFRESH_S', 0.0))"], cwd=tree,
                         check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tree)}).stdout
    return float(out)


def example_budgeted_runs_per_day() -> float:
    """Throughput runs a day of the example plan on links with a data budget (each one's
    ledger is committed at once under write-behind)."""
    cfg = load(EXAMPLE, check_files=False)
    links, plan = list(cfg.links), cfg.plan()
    return sum(86400 / spec.every_s for spec in plan.tests.values()
               if spec.kind == "throughput" for link in spec.links_on(links)
               if plan.budget_bytes(link) is not None)


def measure(tree: Path, work: Path, window_s: float, idle_s: float) -> dict[str, float]:
    """One run for the agent in ``tree``: idle and steady agents side by side."""
    work.mkdir(parents=True)
    os.chmod(work, 0o755)  # mosquitto may drop to its own user
    stack = Stack(work / "stack")
    # The agents' logs go to memory: on a probe they go to journald, not the agent's I/O.
    logs = Path(tempfile.mkdtemp(prefix="netmon-sd-logs-", dir="/dev/shm"))
    try:
        idle_cfg, busy_cfg = work / "idle.toml", work / "busy.toml"
        config(idle_cfg, stack.broker.port, work / "idle" / "spool.db", "", IDLE_PROBE)
        spool = work / "busy" / "spool.db"
        # Compressed like the plan: a heartbeat (status message, state file) every
        # 5 minutes of the plan's time.
        config(busy_cfg, stack.broker.port, spool, compressed_plan(stack.broker.port),
               heartbeat_s=300 / COMPRESSION)
        refresh_s = state_refresh_s(tree)
        launched = time.time()
        with agent(tree, idle_cfg, logs / "idle.log") as idle, \
                agent(tree, busy_cfg, logs / "busy.log") as busy:
            wait(lambda: connected(logs / "idle.log") and connected(logs / "busy.log")
                 and spool.exists(), 60, "the agents connected")
            time.sleep(3.0)  # start-up writes (schema, reserve) settle
            io_idle, wall_idle = io_bytes(idle.pid), time.time()
            state = work / "idle" / "agent-state.json"
            # Results counted where they end up (InfluxDB, a second or so after they are
            # made): with write-behind the spool file does not see them.
            count = lambda: influx_count(stack.influx.port)  # noqa: E731
            t0, io0, n0 = time.monotonic(), io_bytes(busy.pid), count()
            time.sleep(window_s)
            io1, n1, t1 = io_bytes(busy.pid), count(), time.monotonic()
            stop(busy)
            # Idle from the first heartbeat on: it rewrites the state file (connected
            # since the one written at start), later ones only for news or hourly.
            # (A version that found no news at it writes nothing: 310 s after launch.)
            wait(lambda: state.stat().st_mtime > wall_idle or time.time() > launched + 310,
                 400, "the first heartbeat")
            time.sleep(1.0)
            t_idle, io_hb = time.monotonic(), io_bytes(idle.pid)
            rewrite = io_hb - io_idle
            time.sleep(idle_s)
            io_end = io_bytes(idle.pid)
            idle_rate = (io_end - io_hb) / (time.monotonic() - t_idle)
            if refresh_s:
                # What one rewrite of the state file costs (the hourly one): asked for
                # with SIGUSR1, as ``netmon-agent status`` does.
                idle.send_signal(signal.SIGUSR1)
                wait(lambda: io_bytes(idle.pid) > io_end, 30, "a state file rewrite")
                time.sleep(1.0)
                rewrite = io_bytes(idle.pid) - io_end
        n = n1 - n0
        per_result = max(0.0, (io1 - io0) - idle_rate * (t1 - t0)) / n
        flush_bytes, flush_every_s, urgent_bytes, _ = ledger_flush(tree, work / "ledger")
        # A version that skips unchanged state files still rewrites one every refresh_s.
        refreshes = 86400 / refresh_s * rewrite if refresh_s else 0.0
        per_day = example_results_per_day() * per_result + idle_rate * 86400 + \
            refreshes + 86400 / flush_every_s * flush_bytes + \
            example_budgeted_runs_per_day() * urgent_bytes
        return {"results": float(n), "per_result_bytes": per_result,
                "idle_bytes_per_s": idle_rate, "state_rewrite_bytes": float(rewrite),
                "state_refresh_s": refresh_s, "ledger_flush_bytes": flush_bytes,
                "budgeted_run_ledger_bytes": urgent_bytes, "mb_per_day": per_day / 1e6}
    finally:
        stack.close()
        shutil.rmtree(logs, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window-s", type=float, default=120.0)
    parser.add_argument("--idle-s", type=float, default=310.0,
                        help="idle window (at least one heartbeat, 300 s)")
    parser.add_argument("--baseline", metavar="REV",
                        help="also measure this git revision, same run, same services")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where spools go (a real disk, not a tmpfs)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        trees = {"current": REPO}
        if args.baseline:
            trees["baseline"] = stack.enter_context(worktree(args.baseline))
        runs: dict[str, list[dict[str, float]]] = {k: [] for k in trees}
        for i in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="netmon-sd-", dir=args.dir) as tmp:
                # Both versions at once: the same load, and half the wall time.
                out: dict[str, dict[str, float]] = {}

                def one(key: str, tree: Path, work: Path, into: dict[str, dict[str, float]]
                        ) -> None:
                    into[key] = measure(tree, work, args.window_s, args.idle_s)
                threads = [threading.Thread(target=one, args=(k, t, Path(tmp) / k, out))
                           for k, t in trees.items()]
                for th in threads:
                    th.start()
                for th in threads:
                    th.join()
            for key, figures in out.items():
                runs[key].append(figures)
                print(f"run {i + 1} {key}: " + ", ".join(
                    f"{k}={v:,.1f}" for k, v in figures.items()), file=sys.stderr)
    medians = {key: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
               for key, rs in runs.items() if rs}
    ratio = {k: medians["baseline"][k] / medians["current"][k]
             for k in ("per_result_bytes", "mb_per_day") if medians["current"][k]} \
        if "baseline" in medians else None
    if args.json:
        print(json.dumps({"results_per_day": example_results_per_day(), "runs": runs,
                          "median": medians, "baseline_over_current": ratio}))
        return 0
    print(f"example plan: {example_results_per_day():,.0f} results/day; medians of "
          f"{args.runs} run(s)")
    for key, fig in medians.items():
        print(f"{key:9} {fig['per_result_bytes'] / 1024:8.2f} KB/result  "
              f"{fig['idle_bytes_per_s']:8.1f} B/s idle  "
              f"{fig['ledger_flush_bytes'] / 1024:6.1f} KB/ledger flush  "
              f"{fig['mb_per_day']:7.2f} MB/day")
    if ratio:
        print("baseline / current: " + ", ".join(f"{k} {v:.1f}x" for k, v in ratio.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
