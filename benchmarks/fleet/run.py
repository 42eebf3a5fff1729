"""Remote-config cost on a probe: how long the agent's event loop is busy per config.

    python benchmarks/fleet/run.py            # medians over 5 runs
    python benchmarks/fleet/run.py --json

Measures, per config message of a realistic plan (12 tests):

- ``verify_ms``: parse + Ed25519 signature check (``netmon.signing.verify``);
- ``handle_ms``: everything the agent does for a new version: verify, plan validation
  with the agent's models, allowlist, atomic persist (write, fsync, rename, fsync of the
  folder) — the fsync dominates and depends on the disk (an SD card is slower than this
  machine's disk);
- ``redelivery_us``: the retained config redelivered on reconnect (recognised, ignored).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.remote_config import RemoteConfig, RemoteConfigSettings, plan_validator
from netmon.signing import sign, verify
from tests.helpers.fleet import make_keys

PROBE = "ht-kyanh-01"


def plan() -> dict[str, object]:
    """Twelve tests on two links, a budget: a large but realistic commune plan."""
    tests: dict[str, object] = {}
    for i in range(6):
        tests[f"rtt-{i}"] = {"method": "tcp", "target": f"10.20.0.{i + 1}:443",
                             "every_s": 300, "count": 10}
        tests[f"dns-{i}"] = {"method": "dns", "target": f"10.20.1.{i + 1}", "every_s": 900}
    return {"tests": tests, "budgets_mb": {"4g": 30000}}


def one_run(n: int) -> dict[str, float]:
    """One measurement round; returns medians."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _, pub, key = make_keys(folder / "keys")
        settings = RemoteConfigSettings(public_keys=[pub], allowed_targets=["10.20.0.0/16"],
                                        state_file=folder / "state" / "remote.json")
        rc: RemoteConfig[object] = RemoteConfig(
            PROBE, settings, plan_validator(("fibre", "4g")),
            apply=lambda p, v: None)
        payloads = [sign(plan(), probe_id=PROBE, version=v + 1, key=key).to_json()
                    for v in range(n)]
        keys = [key.public_key()]
        t_verify = []
        for p in payloads:
            t0 = time.perf_counter()
            verify(p, keys)
            t_verify.append(time.perf_counter() - t0)
        t_handle = []
        for p in payloads:
            t0 = time.perf_counter()
            d = rc.handle(p)
            t_handle.append(time.perf_counter() - t0)
            assert d.applied, d
        t_redeliver = []
        for _ in range(n):
            t0 = time.perf_counter()
            assert rc.handle(payloads[-1]).outcome == "unchanged"
            t_redeliver.append(time.perf_counter() - t0)
    return {"verify_ms": statistics.median(t_verify) * 1e3,
            "handle_ms": statistics.median(t_handle) * 1e3,
            "redelivery_us": statistics.median(t_redeliver) * 1e6,
            "payload_bytes": float(len(payloads[-1]))}


def main() -> int:
    """Run and print the medians over runs."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--n", type=int, default=200, help="configs per run")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    runs = [one_run(args.n) for _ in range(args.runs)]
    out = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
    out["runs"] = args.runs
    if args.json:
        print(json.dumps(out))
    else:
        print(f"per config ({int(out['payload_bytes'])} bytes, 12 tests), median of "
              f"{args.runs} runs x {args.n}: verify {out['verify_ms']:.3f} ms, "
              f"full handle incl. fsync {out['handle_ms']:.3f} ms, "
              f"redelivery {out['redelivery_us']:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
