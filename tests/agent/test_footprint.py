"""What the agent loads is what its configuration needs (issue 20): the measurement
methods it does not run, and cryptography without remote configuration or enrollment,
stay out of the process, so the idle probe's resident memory stays small. Checked in a
fresh interpreter (the real config loader and runtime constructor, and the service
command itself against a real broker), since this test process has imported everything
already. And the runtime's heap trim does give freed memory back."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from agent import config, handoff
from devstack.services import Service
from netmon.contract import ResultMessage
from tests.helpers import REPO
from tests.helpers.agent import (
    Listener,
    Subscriber,
    agent_config,
    agent_env,
    kill,
    tcp_test,
    write_config,
)

#: Loads the config, runs every configured test once without publishing (the runtime
#: the service uses), prints the loaded modules.
_SCRIPT = """
import asyncio, json, sys
from pathlib import Path
from agent import config
from agent.runtime import Runtime
cfg = config.load(Path(sys.argv[1]))
results = asyncio.run(Runtime(cfg, publish=False).run_once())
assert results, "no test ran"
print(json.dumps(sorted(sys.modules)))
"""

#: Modules only methods other than tcp (or remote configuration) need; uvloop is the HTTP
#: engine's loop only.
HEAVY = ("agent.methods.http", "agent.methods.common.httpengine", "agent.methods.speedtest",
         "agent.methods.iperf3", "speedtest", "netmon.signing", "cryptography", "uvloop")


#: ``netmon-agent run`` as the service runs it, writing the modules it had loaded to
#: argv[1] when it exits (SIGTERM ends the runtime normally, so atexit runs).
_SERVICE = """
import atexit, json, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
from agent.cli import main
sys.exit(main())
"""


def loaded_modules(config: Path) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(config)], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout))


def test_a_latency_only_probe_loads_only_its_method_and_no_cryptography(
        tmp_path: Path) -> None:
    cfg = write_config(tmp_path, agent_config(tmp_path, None, {"t": tcp_test(1)}))
    mods = loaded_modules(cfg)
    assert "agent.methods.tcp" in mods
    assert sorted(m for m in mods if m.startswith(HEAVY)) == []


def test_a_configured_method_and_remote_config_are_loaded_without_cryptography(
        tmp_path: Path) -> None:
    key = tmp_path / "noc.pub"
    from netmon.signing import write_keypair  # the NOC tools' own key generator

    write_keypair(tmp_path / "noc.key", key)
    data = agent_config(tmp_path, None, {"t": tcp_test(1),
                                         "speed": {"method": "iperf3", "target": "127.0.0.1:1",
                                                   "every_s": 3600, "duration_s": 1}},
                        remote_config={"public_keys": [str(key)]})
    mods = loaded_modules(write_config(tmp_path, data))
    # The NOC key is read (netmon.sigcheck); nothing signed was checked yet, so neither
    # netmon.signing's envelope model nor cryptography is loaded.
    assert {"agent.methods.iperf3", "netmon.sigcheck", "netmon.ed25519"} <= mods
    assert "netmon.signing" not in mods
    assert "agent.methods.http" not in mods
    # Signatures are checked without cryptography (netmon.ed25519): ~10 MB less.
    assert sorted(m for m in mods if m.startswith("cryptography")) == []


def service_modules(tmp_path: Path, broker: Service, cfg: Path) -> set[str]:
    """The modules the real ``netmon-agent run`` (start stage, then the run-time image it
    execs) holds when it stops after publishing a result to ``broker``."""
    dump = tmp_path / "modules.json"
    sub = Subscriber(broker.host, broker.port, "netmon/v1/probes/+/results")
    try:
        with open(tmp_path / "agent.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-c", _SERVICE, str(dump), "run",
                                     "--config", str(cfg)], stdout=log,
                                    stderr=subprocess.STDOUT, env=agent_env(), cwd=REPO)
        try:
            sub.wait(lambda: len(sub.results()) >= 1, 120, "a published result")
        finally:
            code = kill(proc, signal.SIGTERM, timeout=60)
    finally:
        sub.close()
    assert code == 0, (tmp_path / "agent.log").read_text()[-3000:]
    return set(json.loads(dump.read_text()))


def test_the_service_of_a_probe_without_enrollment_loads_no_cryptography(
        tmp_path: Path, broker: Service) -> None:
    # The whole ``run`` path (enrollment check, config, runtime, publisher, a test run and
    # published): the enrollment check once imported netmon.signing before looking at
    # whether the probe enrols, which put cryptography (~10 MB) in every probe.
    cfg = write_config(tmp_path, agent_config(tmp_path, broker, {"t": tcp_test(broker.port)}))
    mods = service_modules(tmp_path, broker, cfg)
    assert {"agent.runtime", "agent.publisher", "agent.methods.tcp"} <= mods
    assert sorted(m for m in mods if m.startswith(HEAVY)) == []


def test_the_service_as_deployed_runs_without_pydantic(tmp_path: Path, broker: Service
                                                       ) -> None:
    # As the probe role configures it: remote configuration (a NOC key) and updates on.
    # The start stage validates with the models, then execs the run time, which must not
    # load them again: pydantic and the models were ~15 MB of the probe's ~43 (issue 20).
    from netmon.signing import write_keypair  # the NOC tools' own key generator

    write_keypair(tmp_path / "noc.key", tmp_path / "noc.pub")
    (tmp_path / "releases").mkdir()
    cfg = write_config(tmp_path, agent_config(
        tmp_path, broker, {"t": tcp_test(broker.port)},
        remote_config={"public_keys": [str(tmp_path / "noc.pub")]},
        update={"root": str(tmp_path / "releases")}))
    mods = service_modules(tmp_path, broker, cfg)
    assert {"agent.runtime", "agent.publisher", "agent.remote_config", "agent.update",
            "netmon.wire"} <= mods
    models = ("pydantic", "pydantic_core", "pydantic_settings", "netmon.contract",
              "netmon.methods", "netmon.plan", "netmon.settings", "agent.config")
    assert sorted(m for m in mods if m in models or m.startswith(tuple(f"{x}." for x in models))
                  ) == []


#: Frees 80 MB of 4 KB buffers between 600-byte ones that stay (so free() alone cannot
#: shrink the heap from its top), then prints RssAnon (kB) before and after trim_heap().
_TRIM = """
from agent.runtime import trim_heap

def anon_kb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])

keep, drop = [], []
for i in range(20000):
    drop.append(bytes(4000) + i.to_bytes(4, "little"))
    keep.append(bytes(600) + i.to_bytes(4, "little"))
del drop
before = anon_kb()
assert trim_heap(), "no malloc_trim in this C library"
print(before, anon_kb())
"""


#: The run time's own path with pydantic made unimportable: the config from the start
#: stage's hand-over (argv[1]), the scheduler's plan, every test run once by its method
#: on the link's binding, each result written as published. Prints the payloads and
#: the loaded modules.
_NO_PYDANTIC = """
import asyncio, json, sys

class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pydantic", "pydantic_core", "pydantic_settings"):
            raise ImportError(f"{name} is blocked in the run time")

sys.meta_path.insert(0, Blocked())
from agent import runconfig
from agent.methods import registry
from agent.methods.base import MethodContext
from agent.scheduler import Scheduler

cfg = runconfig.from_handoff(json.load(open(sys.argv[1])))
plan = cfg.plan()

class NoLedger:
    def usage(self, month):
        return {}
    def estimate(self, test, link):
        return None

async def main():
    scheduler = Scheduler(plan, list(cfg.links), lambda job: asyncio.sleep(0), NoLedger())
    payloads = []
    for job in scheduler.jobs.values():
        ctx = MethodContext(cfg.probe_id, "test", cfg.bindings()[job.link])
        for result in await registry.get(job.spec.method)().run(ctx, job.spec.options):
            payloads.append(result.to_json().decode())
    return payloads

print(json.dumps({"payloads": asyncio.run(main()), "modules": sorted(sys.modules)}))
"""


def test_the_run_time_measures_and_writes_results_without_pydantic(tmp_path: Path) -> None:
    # Issue 20: the run time's config, plan, scheduler, methods and results are its own
    # plain types; pydantic (~15 MB) is for validation only. (The publisher, remote
    # configuration and updates are checked by the footprint of the service itself.)
    listener = Listener()
    try:
        cfg = config.load(write_config(tmp_path, agent_config(
            tmp_path, None, {"t": tcp_test(listener.port), "v6": {
                "method": "ipv6", "target": "::1", "v4_target": "127.0.0.1", "count": 1,
                "probe_timeout_s": 0.5, "every_s": 60}})))
        doc = tmp_path / "handoff.json"
        doc.write_bytes(handoff.encode(cfg))  # what the start stage hands over
        proc = subprocess.run([sys.executable, "-c", _NO_PYDANTIC, str(doc)],
                              capture_output=True, text=True, cwd=REPO, timeout=120)
    finally:
        listener.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert sorted(m for m in out["modules"] if m.startswith("pydantic")) == []
    assert {"agent.runconfig", "agent.scheduler", "agent.methods.tcp", "netmon.wire"} \
        <= set(out["modules"])
    results = [ResultMessage.model_validate_json(p) for p in out["payloads"]]
    assert sorted(r.method for r in results) == ["ipv6", "tcp"]
    assert all(r.ok for r in results), [r.error for r in results]
    assert listener.accepted == 1  # the tcp test really connected, once
    # The contract's own bytes for what the run time wrote.
    assert [r.to_json().decode() for r in results] == out["payloads"]


def test_trim_heap_gives_freed_heap_pages_back_to_the_kernel() -> None:
    # A fresh interpreter: the pages freed here must be the test's own. Without the trim
    # these 80 MB stay resident (glibc keeps freed pages below the heap's top).
    proc = subprocess.run([sys.executable, "-c", _TRIM], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    before, after = map(int, proc.stdout.split())
    assert before - after > 40_000, (before, after)
