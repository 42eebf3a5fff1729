"""The run time's modules that are already free of pydantic stay so (issue 20: the run
time reaches 35 MB only without it; ``benchmarks/agent/pydantic_imports.py`` lists every
module). Each is imported in a fresh interpreter that then lists what it loaded."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO

FREE = ("agent.publisher", "agent.remote_config", "agent.update", "agent.enroll",
        "agent.allowlist", "agent.validate_child", "agent.runconfig", "netmon.release",
        "netmon.wire")

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
