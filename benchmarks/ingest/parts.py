"""The collector's per-result parts in-process, in thread CPU time per result.

    python benchmarks/ingest/parts.py                      # this checkout
    python benchmarks/ingest/parts.py --baseline 8c9a0b2   # and REV's, alternating
    python benchmarks/ingest/parts.py --json

- ``validate``: ``collector.core.ingest.validate`` on 5,000 valid results (decode,
  contract, bounds, registry, line protocol, digest);
- ``result_line``: the line protocol alone, on the parsed results;
- ``mqtt_read``: the paho client the collector uses (the read-ahead one where it exists)
  reading 10,000 QoS 1 PUBLISH packets from a socket pair into an ``on_message`` that
  only counts (its network loop, as in the service).

Each figure is the fastest of 7 repetitions (the least disturbed by other load), and the
median of ``--runs`` processes per checkout is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import timeit
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def _best(fn: Any, n: int) -> float:
    return min(timeit.repeat(fn, number=1, repeat=7, timer=time.thread_time)) / n * 1e6


def _publish_packet(topic: bytes, mid: int, payload: bytes) -> bytes:
    body = struct.pack("!H", len(topic)) + topic + struct.pack("!H", mid) + b"\x00" + payload
    n, length = len(body), bytearray()
    while True:
        n, digit = divmod(n, 128)
        length.append(digit | (128 if n else 0))
        if not n:
            return bytes([0x32]) + bytes(length) + body


def measure() -> dict[str, float]:
    """The figures for the checkout on ``sys.path`` (run in a child process)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    from benchmarks.ingest.run import payloads
    from collector.core.ingest import validate
    from collector.core.registry import Registry
    from collector.core.schema import result_line
    from netmon.contract import Topics, parse_result
    from tests.helpers.collector import SITES

    registry, topics = Registry.from_sites(SITES), Topics()
    msgs = payloads(5000)
    out = {"validate": _best(lambda: [validate(t, p, topics, registry) for t, p in msgs],
                             len(msgs))}
    parsed = [parse_result(p) for _, p in msgs]
    sites = [registry.get(m.probe_id, m.started_at) for m in parsed]
    out["result_line"] = _best(lambda: [result_line(m, s) for m, s in
                                        zip(parsed, sites, strict=True)], len(parsed))
    try:
        from collector.core.mqttread import ReadAheadClient, ReadAheadSocket
        cls: type[mqtt.Client] = ReadAheadClient
    except ImportError:  # a checkout from before the read-ahead client
        cls, ReadAheadSocket = mqtt.Client, None  # type: ignore[misc,assignment]
    data = b"".join(_publish_packet(t.encode(), i % 65000 + 1, p)
                    for i, (t, p) in enumerate(msgs)) * 2
    total = 2 * len(msgs)

    def read_all() -> None:
        a, b = socket.socketpair()
        a.setblocking(False)
        client = cls(CallbackAPIVersion.VERSION2, client_id="bench",
                     protocol=MQTTProtocolVersion.MQTTv5, manual_ack=True)
        got = [0]

        def on_message(*_: object) -> None:
            got[0] += 1

        client.on_message = on_message
        client._sock = ReadAheadSocket(a) if ReadAheadSocket is not None else a
        client._state = mqtt._ConnectionState.MQTT_CS_CONNECTED
        sender = threading.Thread(target=b.sendall, args=(data,))
        sender.start()
        deadline = time.monotonic() + 300
        while got[0] < total and time.monotonic() < deadline:
            client._loop(1.0)
        sender.join()
        a.close()
        b.close()
        assert got[0] == total, got

    out["mqtt_read"] = _best(read_all, total)
    return out


def _child(tree: Path) -> dict[str, float]:
    res = subprocess.run([sys.executable, __file__, "_measure"], cwd=tree, check=True,
                         capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tree)})
    return dict(json.loads(res.stdout))


def main(argv: list[str] | None = None) -> int:
    """Measure, print medians (and ratios with ``--baseline``)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["_measure"]:
        sys.path.insert(0, os.getcwd())
        print(json.dumps(measure()))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--baseline", metavar="REV", help="also REV's figures (a git revision)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from benchmarks.baseline import worktree

    got: dict[str, list[dict[str, float]]] = {"current": [], "baseline": []}
    with worktree(args.baseline or "HEAD") as base:
        for _ in range(args.runs):
            if args.baseline:
                got["baseline"].append(_child(base))
            got["current"].append(_child(REPO))
    med = {k: {f: statistics.median(r[f] for r in rs) for f in rs[0]}
           for k, rs in got.items() if rs}
    if args.json:
        print(json.dumps({"runs": args.runs, "baseline": args.baseline, "median": med,
                          "all": got}))
        return 0
    for part, us in med["current"].items():
        line = f"{part:12s} {us:6.1f} us per result"
        if "baseline" in med:
            old = med["baseline"][part]
            line += f"   (baseline {args.baseline}: {old:.1f} us; {old / us:.2f}x less)"
        print(line)
    print(f"medians of {args.runs} runs; load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
