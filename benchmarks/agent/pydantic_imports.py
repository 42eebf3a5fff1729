"""Which of the agent's run-time modules still load pydantic, and through which import.

    python benchmarks/agent/pydantic_imports.py [--json] [MODULE ...]

For each module (default: every module ``netmon-agent run``'s run time imports, see
:data:`RUN_TIME`), a fresh interpreter imports it with pydantic blocked and prints the
first-party import chain that reached ``pydantic``/``pydantic_core``/
``pydantic_settings`` first, or "free". The run time reaches the 35 MB goal of issue 20
only once every one of them is free (benchmarks/agent/README.md, "What remains").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: What the run time imports (agent/commands.py's run path, agent/runtime.py and what
#: they import on a probe with remote configuration and updates on, every method). The
#: models (netmon.contract, netmon.methods, netmon.plan, netmon.settings, agent.config)
#: are validation's: the start stage and the validation child load them, the run time
#: must not.
RUN_TIME = (
    "agent.commands", "agent.handoff", "agent.runconfig", "agent.validate_child",
    "agent.runtime", "agent.publisher", "agent.scheduler", "agent.spool", "agent.clock",
    "agent.budget", "agent.remote_config", "agent.allowlist", "agent.update", "agent.enroll",
    "agent.methods.base", "agent.methods.registry", "agent.methods.common.radio",
    "agent.methods.common.router", "agent.methods.common.router_poll",
    *(f"agent.methods.{name}" for name in (
        "iperf3", "speedtest", "http", "responsiveness", "icmp", "tcp", "dns",
        "http_latency", "ipv6", "reachability")),
    "netmon.mqtt", "netmon.mqttclient", "netmon.configfile", "netmon.contractbase",
    "netmon.declarations", "netmon.planlinks", "netmon.wire", "netmon.jsonutil",
    "netmon.sigcheck",
)

#: Run in the child: block pydantic, import argv[1], print the chain as JSON.
_CHILD = """
import json, sys, traceback
REPO = sys.argv[2]
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pydantic", "pydantic_core", "pydantic_settings"):
            chain = [f"{f.filename[len(REPO) + 1:]}:{f.lineno}"
                     for f in traceback.extract_stack()
                     if f.filename.startswith(REPO + "/") and "benchmarks" not in f.filename]
            print(json.dumps(chain))
            sys.exit(0)
        return None
sys.meta_path.insert(0, Block())
__import__(sys.argv[1])
print(json.dumps(None))
"""


def chain(module: str) -> list[str] | None:
    """The import chain (``file:line``, outermost first) by which ``module`` loads
    pydantic, or None when it does not."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, module, str(REPO)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=True)
    out: list[str] | None = json.loads(proc.stdout.splitlines()[-1])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(RUN_TIME))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    found = {m: chain(m) for m in args.modules}
    if args.json:
        print(json.dumps(found, indent=1))
    else:
        for module, via in found.items():
            print(f"{module:32} " + ("free" if via is None else "pydantic via " +
                                     " -> ".join(via)))
        print(f"{sum(v is None for v in found.values())} of {len(found)} free")
    return 0


if __name__ == "__main__":
    sys.exit(main())
