"""The run time's modules that are already free of pydantic stay so (issue 20: the run
time reaches 35 MB only without it; ``benchmarks/agent/pydantic_imports.py`` lists every
module). Each is imported in a fresh interpreter that then lists what it loaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

FREE = ("agent.publisher", "agent.remote_config", "agent.update", "agent.enroll",
        "agent.allowlist", "agent.validate_child", "agent.runconfig", "netmon.release",
        "netmon.sigcheck", "netmon.wire")

_PROBE = """
import json, sys
__import__(sys.argv[1])
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in
                        ("pydantic", "pydantic_core", "pydantic_settings"))))
"""


@pytest.mark.parametrize("module", FREE)
def test_importing_it_loads_no_pydantic(module: str) -> None:
    proc = subprocess.run([sys.executable, "-c", _PROBE, module], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == [], module


def test_the_old_import_paths_still_give_the_settings_models() -> None:
    from agent import config, enroll, remote_config, update

    assert remote_config.RemoteConfigSettings is config.RemoteConfigSettings
    assert update.UpdateSettings is config.UpdateSettings
    assert enroll.EnrollmentSettings is config.EnrollmentSettings
    with pytest.raises(AttributeError):
        _ = remote_config.NoSuchThing


_MANIFEST = """
import json, sys
from pathlib import Path
from agent.update import parse_manifest
from netmon.sigcheck import load_public_key
m = parse_manifest(Path(sys.argv[1]).read_bytes(), [load_public_key(Path(sys.argv[2]))])
assert (m.serial, m.version, m.percent) == (4, "0.3.0", 20), m
print(json.dumps(sorted(x for x in sys.modules if x.split(".")[0] in
                        ("pydantic", "pydantic_core", "pydantic_settings", "cryptography"))))
"""


def test_a_release_manifest_is_checked_without_pydantic(tmp_path: Path) -> None:
    """Validated in the child, its signature checked by netmon.sigcheck: the caller (the
    run time) loads neither pydantic nor cryptography."""
    from netmon.release import sign_manifest
    from tests.helpers.fleet import make_keys

    _, pub, key = make_keys(tmp_path / "keys")
    payload = tmp_path / "manifest.json"
    payload.write_bytes(sign_manifest(
        serial=4, version="0.3.0", base_url="https://noc.example/r", key=key, percent=20,
        wheels=[{"name": "hatinh_netmon-0.3.0-py3-none-any.whl", "sha256": "b" * 64,
                 "size": 1000}]))
    proc = subprocess.run([sys.executable, "-c", _MANIFEST, str(payload), str(pub)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == []


_CONFIG = """
import json, sys
from importlib.abc import MetaPathFinder

class Blocked(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pydantic", "pydantic_core", "pydantic_settings",
                                  "cryptography"):
            raise ImportError(f"{name} is blocked in this run time")
        return None

sys.meta_path.insert(0, Blocked())
from pathlib import Path
from agent.remote_config import RemoteConfig, plan_validator
from agent.runconfig import RemoteConfig as Settings

state = Path(sys.argv[2])
settings = Settings(public_keys=(Path(sys.argv[3]),), allowed_targets=("127.0.0.1",),
                    state_file=state)
applied = []
rc = RemoteConfig("ht-kyanh-01", settings, plan_validator(["fibre"]),
                  apply=lambda plan, version: applied.append((sorted(plan.tests), version)))
decision = rc.handle(Path(sys.argv[1]).read_bytes())
assert decision.applied and applied == [(["rtt"], 3)], (decision, applied)
again = RemoteConfig("ht-kyanh-01", settings, plan_validator(["fibre"])).restore()
assert again.applied and again.version == 3, again
tampered = json.loads(state.read_bytes()) | {"version": 4}
refused = rc.handle(json.dumps(tampered).encode())
assert (refused.outcome, refused.reason) == ("rejected", "bad_signature"), refused
print(json.dumps(sorted(x for x in sys.modules if x.split(".")[0] in
                        ("pydantic", "pydantic_core", "pydantic_settings", "cryptography"))))
"""


def test_a_signed_config_is_verified_and_applied_without_pydantic(tmp_path: Path) -> None:
    """The remote-config path of every deployed probe (a config message, then the
    persisted one at the next start) with pydantic and cryptography blocked: the envelope
    and plan shapes are checked in the validation child, the signature by
    netmon.sigcheck."""
    from netmon.signing import sign
    from tests.helpers.fleet import make_keys, tcp_plan

    _, pub, key = make_keys(tmp_path / "keys")
    payload = tmp_path / "config.json"
    payload.write_bytes(sign(tcp_plan("127.0.0.1:1"), probe_id="ht-kyanh-01", version=3,
                             key=key).to_json())
    proc = subprocess.run([sys.executable, "-c", _CONFIG, str(payload),
                           str(tmp_path / "remote.json"), str(pub)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == []
