"""The crash stack shared by tests/collector/test_chaos.py and benchmarks/chaos/run.py:
mosquitto with the deployed persistence settings, influxd, ``netmon-collector run`` as a
subprocess, and test probes that follow the agent's receipt protocol (docs/protocol.md,
"Receipts"): a result is kept until a receipt names it and published again when no
receipt came within ``resend_after_s``."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devstack import services
from netmon.contract import Topics, parse_receipt
from tests.conftest import Influx
from tests.helpers.collector import make_result, write_config

T = Topics()
DB = "netmon"
REPO = Path(__file__).resolve().parents[2]
PROBES = ("ky-anh-01", "huong-khe-01")


class ReceiptProbe:
    """A probe that forgets a result only on its receipt (the agent's protocol)."""

    def __init__(self, probe_id: str, port: int, resend_after_s: float) -> None:
        self.probe_id = probe_id
        self.resend_after_s = resend_after_s
        self.lock = threading.Lock()
        self.pending: dict[str, tuple[bytes, float]] = {}   # id -> (payload, last sent)
        self.made: set[str] = set()
        self.receipted: set[str] = set()
        self.resent = 0
        #: While set, nothing is resent (to see what a crash lost before it comes back).
        self.hold = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=probe_id,
                             protocol=mqtt.MQTTv5)
        self.c.max_inflight_messages_set(100)
        self.c.max_queued_messages_set(0)
        self.c.reconnect_delay_set(1, 2)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600    # receipts queue for us while we are away
        self.c.connect_async("127.0.0.1", port, clean_start=False, properties=props)
        self.c.loop_start()
        self._stop = threading.Event()
        self._resender = threading.Thread(target=self._resend_loop, daemon=True)
        self._resender.start()

    def _on_connect(self, c: mqtt.Client, *a: object) -> None:
        c.subscribe(T.receipts(self.probe_id), qos=1)

    def _on_message(self, c: object, u: object, m: mqtt.MQTTMessage) -> None:
        ids = {str(i) for i in parse_receipt(bytes(m.payload), self.probe_id).ids}
        with self.lock:
            for rid in ids:
                self.pending.pop(rid, None)
            self.receipted |= ids

    def make(self, i: int) -> None:
        """Measure one result: spool it, publish it."""
        msg = make_result(i, probe_id=self.probe_id)
        payload = msg.to_json()
        with self.lock:
            self.pending[str(msg.id)] = (payload, time.monotonic())
            self.made.add(str(msg.id))
        self.c.publish(T.results(self.probe_id), payload, qos=1)  # never under self.lock

    def _resend_loop(self) -> None:
        while not self._stop.wait(0.5):
            if self.hold.is_set():
                continue
            now = time.monotonic()
            with self.lock:
                due = [(rid, p) for rid, (p, t) in self.pending.items()
                       if now - t >= self.resend_after_s]
                for rid, p in due:
                    self.pending[rid] = (p, now)
                self.resent += len(due)
            for _, payload in due:
                self.c.publish(T.results(self.probe_id), payload, qos=1)

    def unreceipted(self) -> int:
        with self.lock:
            return len(self.pending)

    def close(self) -> None:
        self._stop.set()
        self._resender.join(5)
        self.c.disconnect()
        self.c.loop_stop()


class CollectorProc:
    """``netmon-collector run`` in its own interpreter, as systemd runs it."""

    def __init__(self, cfg: Path) -> None:
        self.cfg = cfg
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.cfg.parent / f"collector-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "run", "--config", str(self.cfg),
             "--log-level", "INFO"], stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        log.close()

    def stats_seen(self) -> bool:
        """True once the running collector has logged self-metrics (it is subscribed
        and working: stats_interval_s = 1 in the test config)."""
        log = self.cfg.parent / f"collector-{self.starts}.log"
        return log.exists() and "stats [" in log.read_text(errors="replace")

    def kill(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, "collector died"
        self.proc.kill()
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)


class Stack:
    """Broker (deployed persistence settings), influxd, collector, two probes."""

    def __init__(self, tmp: Path, resend_after_s: float) -> None:
        self.tmp = tmp
        self.broker_dir = tmp / "mosquitto"
        self.broker = services.start_mosquitto(self.broker_dir)
        self.influx_dir = tmp / "influxd"
        self.influxd = services.start_influxd(self.influx_dir)
        self.influx = Influx(self.influxd)
        cfg = write_config(tmp / "collector", self.broker.port, self.influxd.port)
        self.collector = CollectorProc(cfg)
        self.collector.start()
        self.probes = [ReceiptProbe(p, self.broker.port, resend_after_s) for p in PROBES]
        self.made = 0

    def produce(self, seconds: float, rate: float) -> None:
        """``rate`` results per second (spread over the probes) for ``seconds``."""
        t0 = time.monotonic()
        start = self.made
        while time.monotonic() - t0 < seconds:
            self.probes[self.made % len(self.probes)].make(self.made)
            self.made += 1
            time.sleep(max(0.0, t0 + (self.made - start) / rate - time.monotonic()))

    def restart_broker(self) -> None:
        self.broker = services.start_mosquitto(self.broker_dir, self.broker.port)

    def saves(self) -> int:
        """"Saving in-memory database" lines in the broker's log so far."""
        log = self.broker_dir / "mosquitto.log"
        return log.read_text(errors="replace").count("Saving in-memory database")

    def stable_unreceipted(self, quiet_s: float = 5.0, timeout: float = 180) -> int:
        """Results without a receipt once that number has not changed for ``quiet_s``
        (and the collector is running)."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            n = sum(p.unreceipted() for p in self.probes)
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since >= quiet_s and self.collector.stats_seen():
                return n
            time.sleep(0.2)
        raise AssertionError(f"unreceipted count never settled (last {last})")

    def settle(self, timeout: float = 300) -> None:
        """Until every probe has a receipt for every result it made."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(p.unreceipted() == 0 for p in self.probes):
                return
            time.sleep(0.5)
        left = {p.probe_id: p.unreceipted() for p in self.probes}
        raise AssertionError(f"results still without a receipt after {timeout:.0f}s: {left}")

    def stored_ids(self) -> list[str]:
        res = self.influx.query("SELECT result_id FROM results", db=DB)
        series = res["results"][0].get("series") or []  # type: ignore[index, union-attr]
        return [v[1] for s in series for v in s["values"]]

    def assert_exactly_once(self) -> None:
        made = set().union(*(p.made for p in self.probes))
        assert len(made) == self.made
        ids = self.stored_ids()
        assert len(ids) == self.made, (len(ids), self.made)
        assert set(ids) == made

    def close(self) -> None:
        for p in self.probes:
            p.close()
        self.collector.stop()
        self.broker.stop()
        self.influxd.stop()


    def counts(self) -> dict[str, int]:
        """Produced / stored / lost / doubled, per result id, as InfluxDB holds them now."""
        made = set().union(*(p.made for p in self.probes))
        points = Counter(self.stored_ids())
        return {"produced": len(made), "stored": len(set(points) & made),
                "lost": len(made - set(points)),
                "doubled": sum(n - 1 for n in points.values() if n > 1)}
