"""Broker persistence: how many acknowledged messages a mosquitto crash loses, and what
each persistence setting costs.

    python benchmarks/broker/persistence.py                      # every setting, 3 runs each
    python benchmarks/broker/persistence.py --rate 100 --seconds 20 --runs 3 --json
    python benchmarks/broker/persistence.py --setting interval=30 --setting changes=1000

For each setting, each run:

1. starts a fresh mosquitto 2.0.11 (devstack's ``mosquitto_config`` with that setting);
2. a "collector" subscriber makes a persistent session (clean_start = False, session
   expiry one day, QoS 1 on ``netmon/v1/probes/+/results``) and disconnects: the
   collector is stopped, so every result queues on the broker, as in issue 14's test;
   the broker is restarted cleanly (which saves), so the session is on disk as a
   long-standing collector's is;
3. a publisher sends result-sized messages (QoS 1) at ``--rate`` per second for
   ``--seconds`` plus a random 0-2 s (so the kill lands anywhere between two saves) and
   counts the broker's PUBACKs;
4. mosquitto is killed with SIGKILL while the publisher is still sending; just before
   that its CPU time (/proc/PID/stat) and bytes written to disk (/proc/PID/io
   ``write_bytes``) are read;
5. mosquitto is started again on the same persistence file, the subscriber resumes its
   session and takes everything queued (until nothing new for 3 s);
6. ``lost`` = acknowledged messages that did not come back.

Printed per setting: the medians of ``acked``, ``lost``, ``lost_s`` (lost / rate: the
loss window in seconds of traffic), broker CPU µs per message and disk bytes per message.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devstack import services

#: name -> (autosave_interval, autosave_on_changes)
SETTINGS = {
    "interval=300": (300, False),   # what the Ansible role deployed before issue 14
    "interval=30": (30, False),
    "interval=5": (5, False),
    "interval=1": (1, False),
    "changes=1000": (1000, True),
    "changes=100": (100, True),
    "changes=1": (1, True),
}
TOPIC = "netmon/v1/probes/bench-probe-01/results"
FILTER = "netmon/v1/probes/+/results"
#: About the size of a real result message (JSON, ~600 bytes).
PAD = b"x" * 560


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _write_bytes(pid: int) -> int:
    for ln in Path(f"/proc/{pid}/io").read_text().splitlines():
        if ln.startswith("write_bytes:"):
            return int(ln.split()[1])
    return 0


class Subscriber:
    """The collector's persistent session, as MqttIngest makes it."""

    def __init__(self, port: int) -> None:
        self.seen: set[int] = set()
        self.last = time.monotonic()
        self.ready = threading.Event()
        self.port = port
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-collector",
                             protocol=mqtt.MQTTv5)
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.on_connect = self._on_connect

    def _on_connect(self, client: mqtt.Client, *a: object) -> None:
        client.subscribe(FILTER, qos=1)

    def _on_message(self, client: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        self.seen.add(int(msg.payload.split(b" ", 1)[0]))
        self.last = time.monotonic()

    def connect(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 86400
        self.ready.clear()
        self.c.connect("127.0.0.1", self.port, clean_start=False, properties=props)
        self.c.loop_start()
        if not self.ready.wait(30):
            raise RuntimeError("subscriber: no SUBACK")

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def run_once(setting: str, rate: float, seconds: float, workdir: Path) -> dict[str, float]:
    """One crash; returns acked, lost and the cost figures."""
    interval, on_changes = SETTINGS[setting]
    port = services.free_port()
    conf = services.mosquitto_config(workdir, port, autosave_interval=interval,
                                     autosave_on_changes=on_changes)
    broker = services.start_mosquitto(workdir, port, config=conf)
    sub = Subscriber(port)
    sub.connect()
    sub.close()  # the collector is stopped: its session queues everything
    # A clean stop saves the store: the session is on disk, as a long-standing
    # collector's is, so what a crash loses is only the messages.
    broker.stop()
    broker = services.start_mosquitto(workdir, port, config=conf)

    # (seq, MQTTMessageInfo): is_published() turns true on the broker's PUBACK. (No lock
    # around publish(): paho calls on_publish holding its own, which would deadlock.)
    sent: list[tuple[int, mqtt.MQTTMessageInfo]] = []
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-probe-01",
                      protocol=mqtt.MQTTv5)
    pub.max_inflight_messages_set(100)
    pub.max_queued_messages_set(0)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    pid = broker.proc.pid
    cpu0, wb0 = _cpu_s(pid), _write_bytes(pid)
    t0 = time.monotonic()
    seq = 0
    # A random extra 0-2 s: a fixed message count can line up with a save every N
    # changes and hide the window.
    seconds += random.uniform(0.0, 2.0)
    while time.monotonic() - t0 < seconds:
        sent.append((seq, pub.publish(TOPIC, b"%d " % seq + PAD, qos=1)))
        seq += 1
        time.sleep(max(0.0, t0 + seq / rate - time.monotonic()))
    cpu, wb = _cpu_s(pid) - cpu0, _write_bytes(pid) - wb0
    broker.kill()  # mid-stream: the publisher is still sending
    pub.loop_stop()
    acked_ids = {s for s, info in sent if info.is_published()}
    n_acked = len(acked_ids)

    broker = services.start_mosquitto(workdir, port, config=conf)
    try:
        sub = Subscriber(port)
        sub.connect()
        while time.monotonic() - sub.last < 3.0:
            time.sleep(0.2)
        sub.close()
    finally:
        broker.stop()
    lost = len(acked_ids - sub.seen)
    return {"acked": n_acked, "lost": lost, "lost_s": lost / rate,
            "cpu_us_per_msg": 1e6 * cpu / max(n_acked, 1),
            "disk_bytes_per_msg": wb / max(n_acked, 1)}


def main(argv: list[str] | None = None) -> int:
    """Run every selected setting ``--runs`` times and print the medians."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setting", action="append", choices=sorted(SETTINGS),
                    help="only this setting (repeatable); default: all")
    ap.add_argument("--rate", type=float, default=100.0, help="messages per second")
    ap.add_argument("--seconds", type=float, default=15.0, help="load before the kill")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    services.require_binary("mosquitto")
    out: dict[str, dict[str, float]] = {}
    for name in args.setting or list(SETTINGS):
        runs = []
        for i in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="bench-persist-") as tmp:
                runs.append(run_once(name, args.rate, args.seconds, Path(tmp) / f"m{i}"))
        out[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        out[name]["lost_max"] = max(r["lost"] for r in runs)
        if not args.json:
            r = out[name]
            print(f"{name:<14} acked {r['acked']:6.0f}  lost {r['lost']:6.0f} "
                  f"(max {r['lost_max']:.0f}, {r['lost_s']:5.1f} s of traffic)  "
                  f"broker CPU {r['cpu_us_per_msg']:7.0f} µs/msg  "
                  f"disk {r['disk_bytes_per_msg']:9.0f} B/msg", flush=True)
    if args.json:
        print(json.dumps({"rate": args.rate, "seconds": args.seconds, "runs": args.runs,
                          "loadavg": os.getloadavg(), "settings": out}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
