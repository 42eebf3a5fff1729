"""What checking a signed remote config costs the agent's run time: resident memory
after it and the wall time of ``RemoteConfig.handle`` (envelope, signature, plan).

    python benchmarks/agent/configcheck.py [--runs 5] [--baseline REV] [--json]

Each run is a fresh interpreter that builds the run time's ``RemoteConfig`` (with
``agent.runconfig``'s settings and the real ``plan_validator``), hands it one signed
config of one TCP test, and prints VmRSS after it, the time ``handle`` took and whether
pydantic is loaded. ``--baseline REV`` runs ``REV``'s code the same way, alternating;
medians and baseline/current ratios are printed (issue 20).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks.baseline import worktree  # noqa: E402

_RUN = """
import gc, json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from agent.remote_config import RemoteConfig, plan_validator
from agent.runconfig import RemoteConfig as Settings
work = Path(sys.argv[2])
settings = Settings(public_keys=(work / "noc.pub",), allowed_targets=("127.0.0.1",),
                    state_file=work / "remote.json")
(work / "remote.json").unlink(missing_ok=True)
rc = RemoteConfig("ht-kyanh-01", settings, plan_validator(["fibre"]))
payload = (work / "config.json").read_bytes()
t0 = time.perf_counter()
decision = rc.handle(payload)
took = time.perf_counter() - t0
assert decision.applied, decision
gc.collect()
rss = next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]
print(json.dumps({"rss_mb": int(rss) / 1024, "handle_s": took,
                  "pydantic": int("pydantic" in sys.modules)}))
"""


def _prepare(work: Path) -> None:
    from netmon.signing import load_private_key, sign, write_keypair

    write_keypair(work / "noc.key", work / "noc.pub")
    plan = {"tests": {"rtt": {"method": "tcp", "target": "127.0.0.1:1", "every_s": 10.0}}}
    (work / "config.json").write_bytes(sign(plan, probe_id="ht-kyanh-01", version=3,
                                            key=load_private_key(work / "noc.key")).to_json())


def one(tree: Path, work: Path) -> dict[str, float]:
    """One fresh interpreter running ``tree``'s code."""
    proc = subprocess.run([sys.executable, "-c", _RUN, str(tree), str(work)], cwd=tree,
                          capture_output=True, text=True, timeout=600, check=True)
    figures: dict[str, float] = json.loads(proc.stdout.splitlines()[-1])
    return figures


def main() -> int:
    """Print the medians (and ratios against ``--baseline``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", metavar="REV")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    got: dict[str, list[dict[str, float]]] = {"current": []}
    with tempfile.TemporaryDirectory(prefix="netmon-bench-") as tmp:
        work = Path(tmp)
        _prepare(work)
        trees: list[tuple[str, Path]] = [("current", REPO)]
        with worktree(args.baseline) if args.baseline else contextlib.nullcontext() as base:
            if base is not None:
                trees.insert(0, ("baseline", base))
                got["baseline"] = []
            for i in range(args.runs):
                for key, tree in trees:
                    got[key].append(one(tree, work))
                    print(f"run {i + 1} {key}: {got[key][-1]}", file=sys.stderr)
    med = {k: {f: statistics.median(r[f] for r in rs) for f in rs[0]} for k, rs in got.items()}
    out: dict[str, Any] = {"median": med, "runs": args.runs}
    if "baseline" in med:
        out["baseline"] = args.baseline
        out["baseline_over_current"] = {f: med["baseline"][f] / med["current"][f]
                                        for f in ("rss_mb", "handle_s")}
    if args.json:
        print(json.dumps(out))
        return 0
    for key, figures in med.items():
        print(f"{key:9} rss {figures['rss_mb']:6.1f} MB   handle {figures['handle_s']:5.2f} s"
              f"   pydantic loaded {bool(figures['pydantic'])}   (median of {args.runs})")
    if "baseline_over_current" in out:
        print("baseline / current: " + ", ".join(
            f"{k} {v:.2f}x" for k, v in out["baseline_over_current"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
