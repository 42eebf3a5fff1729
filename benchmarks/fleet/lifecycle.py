"""A probe's life without SSH (issue 18), timed with the real components of the tests:
mosquitto with the fleet ACL and the enrollment listener, real agent processes, the NOC
functions behind ``probes enroll approve`` and ``probes update push``.

    python benchmarks/fleet/lifecycle.py              # 3 rounds, medians
    python benchmarks/fleet/lifecycle.py --rounds 5 --json

Per round:

- ``request_s``: agent start (blank probe) -> its request retained on the broker;
- ``approve_s``: ``approve`` (claim lookup, mosquitto_passwd, broker reload, registry,
  sealed signed answer);
- ``enrolled_s``: approve returned -> the first result published as the new probe;
- ``update_s``: manifest pushed -> the status says the new version passed its health
  check (download, thin venv, pip install of one wheel, switch, restart, first result);
- ``download_bytes``: counted on the probe's link for that update.

The wheel is this project at a bumped version, built once offline (not timed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from collector.config import load as load_collector_config
from collector.fleet.enroll import approve
from collector.fleet.noc_client import NocClient
from collector.fleet.update import push
from netmon.contract import Topics
from netmon.enrollment import new_claim_code
from tests.fleet.test_enrollment import EnrolFleet
from tests.fleet.test_updates import GOOD, A, UpdateFleet, _build


def _wait(check: Any, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"timed out: {what}")
        time.sleep(0.05)
    return time.monotonic() - t0


def enrol_round(tmp: Path) -> dict[str, float]:
    """One blank probe enrolled."""
    tmp.mkdir(parents=True)
    f = EnrolFleet(tmp)
    try:
        probe = f.probe("blank")
        t0 = time.monotonic()
        probe.start()
        request = probe.enroll_dir / "request.json"
        _wait(request.exists, 120, "request file")
        rid = json.loads(request.read_text())["request_id"]
        cfg = load_collector_config(f.noc_config)
        topics = Topics()
        with NocClient(cfg.mqtt) as client:
            _wait(lambda: bool(client.collect_retained(topics.enroll_request(rid),
                                                       expect=[topics.enroll_request(rid)],
                                                       quiet_s=0.1)), 120, "request")
            request_s = time.monotonic() - t0
            from collector.config import unit_map

            t1 = time.monotonic()
            approve(client, topics, cfg.enrollment, f.key, probe.claim,
                    {"probe_id": "ht-bench-01", "name": "Trạm Y tế xã Hương Khê",
                     "commune_code": "18496", "latitude": 18.17, "longitude": 105.71,
                     "site_type": "health_station"}, cfg.registry.path,
                    unit_map(cfg, f.noc_config))
            approve_s = time.monotonic() - t1
        t2 = time.monotonic()
        _wait(lambda: bool(f.results_of("ht-bench-01")), 120, "first result")
        return {"request_s": request_s, "approve_s": approve_s,
                "enrolled_s": time.monotonic() - t2}
    finally:
        f.close()


def update_round(tmp: Path, wheel: Path) -> dict[str, float]:
    """One probe updated to a good version."""
    tmp.mkdir(parents=True)
    f = UpdateFleet(tmp)
    try:
        f.probe(A)
        _wait(lambda: bool(f.statuses(A)), 120, "probe online")
        served = f.publish_wheel(wheel)
        cfg = load_collector_config(f.noc_config)
        t0 = time.monotonic()
        with NocClient(cfg.mqtt) as client:
            push(client, Topics(), f.key, version=GOOD, wheels=[served],
                 base_url=f.site.url + "wheels/", probes=[A], percent=100,
                 health_timeout_s=120)
        _wait(lambda: any(s.agent_version == GOOD and s.update and s.update.trial is None
                          and "updated to" in (s.update.last_event or "")
                          for s in f.statuses(A)), 300, "updated")
        update_s = time.monotonic() - t0
        used = max(s.links[0].data_used_bytes for s in f.statuses(A))
        return {"update_s": update_s, "download_bytes": float(used)}
    finally:
        f.close()


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print medians."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        base.chmod(0o755)
        wheel = _build(base, GOOD)
        for i in range(args.rounds):
            row = enrol_round(base / f"enrol-{i}")
            row |= update_round(base / f"update-{i}", wheel)
            rows.append(row)
    keys = list(rows[0])
    med = {k: round(statistics.median(r[k] for r in rows), 3) for k in keys}
    out = {"rounds": args.rounds, "median": med, "runs": rows,
           "claim_code_example": new_claim_code()}
    if args.json:
        print(json.dumps(out))
    else:
        for k in keys:
            print(f"{k:16} median {med[k]:>12}   runs {[round(r[k], 3) for r in rows]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
