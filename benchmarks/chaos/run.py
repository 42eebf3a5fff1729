"""Exactly once under crashes, as figures: per scenario, results produced / stored / lost /
doubled, with end-to-end receipts and with the PUBACK-only path (the probe forgets a result
when the broker acknowledges it), in the same run, against real mosquitto (the deployed
persistence settings), influxd and ``netmon-collector run`` on loopback.

    python benchmarks/chaos/run.py [--outage-s 60] [--rate 40] [--skip-overhead] [--json]

Scenarios (the tests in tests/collector/test_chaos.py assert the same with exact counts):

* ``broker_sigkill``: the collector is stopped, the broker saves its store, takes two more
  seconds of results and is killed -9; then broker and collector restart.
* ``collector_sigkill_x2``: the collector is killed -9 twice while results flow.
* ``influxd_outage``: influxd is stopped for ``--outage-s`` seconds while results flow.

"PUBACK only" is the same test probe with resends switched off: what it would have lost
is what the receipts bring back. The receipt overhead per result (broker packets, agent
CPU, spool writes, receipts against PUBACK only) comes from
``benchmarks/agent/receipts.py`` run once with small sizes (``--skip-overhead`` skips it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.helpers.chaos import Stack  # noqa: E402


def _broker_sigkill(s: Stack, rate: float, outage_s: float) -> None:
    s.produce(5, rate)
    s.collector.stop()
    saves = s.saves()
    deadline = time.monotonic() + 60
    while s.saves() == saves and time.monotonic() < deadline:
        s.produce(0.5, rate)
    s.produce(2, rate)
    s.broker.kill()
    s.restart_broker()
    s.collector.start()


def _collector_sigkill_twice(s: Stack, rate: float, outage_s: float) -> None:
    for _ in range(2):
        s.produce(6, rate)
        s.collector.kill()
        s.produce(2, rate)
        s.collector.start()
    s.produce(5, rate)


def _influxd_outage(s: Stack, rate: float, outage_s: float) -> None:
    from devstack import services

    s.produce(5, rate)
    port = s.influxd.port
    s.influxd.stop()
    s.produce(outage_s, rate)
    s.influxd = services.start_influxd(s.influx_dir, port)
    s.produce(5, rate)


SCENARIOS: dict[str, Callable[[Stack, float, float], None]] = {
    "broker_sigkill": _broker_sigkill,
    "collector_sigkill_x2": _collector_sigkill_twice,
    "influxd_outage": _influxd_outage,
}


def _stored_settles(s: Stack, quiet_s: float = 30.0, timeout: float = 600) -> None:
    """Until the number of stored results has not changed for ``quiet_s`` (the collector
    may be backing off from a write failure; what it still holds must not count as lost)."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = len(s.stored_ids())
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet_s and s.collector.stats_seen():
            return
        time.sleep(1.0)


def run_scenario(name: str, receipts: bool, rate: float, outage_s: float,
                 workdir: Path) -> dict[str, int | float]:
    """One scenario on a fresh stack; counts once every result is receipted (receipts) or
    once nothing more arrives (PUBACK only)."""
    t0 = time.monotonic()
    s = Stack(workdir, resend_after_s=10.0)
    try:
        # Results published before the collector's first subscription are queued for
        # nobody: only resends would bring them, so PUBACK-only would count them lost.
        log = workdir / "collector" / "collector-1.log"
        deadline = time.monotonic() + 120
        while "MQTT subscribed" not in (log.read_text(errors="replace")
                                        if log.exists() else ""):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the collector never subscribed: see {log}")
            time.sleep(0.2)
        if not receipts:
            for p in s.probes:
                p.hold.set()          # never resend: the broker's PUBACK was the end of it
        SCENARIOS[name](s, rate, outage_s)
        if receipts:
            s.settle(timeout=600)
        else:
            _stored_settles(s)
        counts: dict[str, int | float] = dict(s.counts())
        counts["resent"] = sum(p.resent for p in s.probes)
        counts["wall_s"] = round(time.monotonic() - t0, 1)
        return counts
    finally:
        s.close()


def receipt_overhead() -> dict[str, object]:
    """The median figures of benchmarks/agent/receipts.py, one small run."""
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "agent" / "receipts.py"),
                          "--runs", "1", "--results", "1000", "--steady-s", "10", "--json"],
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    return dict(json.loads(out.strip().splitlines()[-1])["median"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=40.0, help="results per second")
    parser.add_argument("--outage-s", type=float, default=60.0, help="influxd outage")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS),
                        help="run only these (repeatable)")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows: dict[str, dict[str, dict[str, int | float]]] = {}
    for name in args.scenario or list(SCENARIOS):
        rows[name] = {}
        for mode, receipts in (("receipts", True), ("puback_only", False)):
            with tempfile.TemporaryDirectory(prefix=f"chaos-{name}-") as tmp:
                print(f"running {name} ({mode}) ...", file=sys.stderr, flush=True)
                rows[name][mode] = run_scenario(name, receipts, args.rate, args.outage_s,
                                                Path(tmp))
    overhead = None if args.skip_overhead else receipt_overhead()
    if args.json:
        print(json.dumps({"scenarios": rows, "receipt_overhead": overhead}))
        return 0
    cols = ("produced", "stored", "lost", "doubled", "resent", "wall_s")
    print(f"{'scenario':22}{'mode':13}" + "".join(f"{c:>10}" for c in cols))
    for name, modes in rows.items():
        for mode, fig in modes.items():
            print(f"{name:22}{mode:13}" + "".join(f"{fig[c]:>10}" for c in cols))
    if overhead is not None:
        print("\nreceipt overhead per result (benchmarks/agent/receipts.py, one small run):")
        print(json.dumps(overhead, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
