"""check-config says no to configs that cannot run, and run refuses them the same way,
before anything starts (issue 15): exit 2 and the key named, for both commands of both
programs. Real processes, real files; no broker or database is needed, because nothing
may be contacted before the config is known good."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

AGENT = """probe_id = "ky-anh-01"
[broker]
host = "127.0.0.1"
port = 1
tls = false
[spool]
path = "{spool}"
[links.fibre]
access = "fixed"
isp = "VNPT"
[tests.rtt]
method = "tcp"
target = "127.0.0.1:1"
"""
COLLECTOR = """[mqtt]
host = "127.0.0.1"
port = 1
topic_prefix = "{prefix}"
[influxdb]
url = "{url}"
[registry]
path = "{sites}"
[dead_letters]
path = "{dead}"
"""


def _run(prog: str, *args: str,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    code = f"import sys; from {prog}.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, text=True,
                          capture_output=True, timeout=120, env=(os.environ | (env or {})))


def _collector(tmp_path: Path, **kw: str) -> Path:
    (tmp_path / "afile").write_text("not a folder")
    values = {"prefix": "netmon/v1", "url": "http://127.0.0.1:1",
              "sites": str(REPO / "examples" / "sites.toml"),
              "dead": str(tmp_path / "dl" / "dead.jsonl")} | kw
    cfg = tmp_path / "collector.toml"
    cfg.write_text(COLLECTOR.format(**values), encoding="utf-8")
    return cfg


@pytest.mark.parametrize(("override", "needle"), [
    ({"prefix": "netmon/#"}, "mqtt.topic_prefix: Value error, 'netmon/#' must be MQTT"),
    ({"prefix": "netmon//v1"}, "mqtt.topic_prefix"),
    ({"url": "htp://127.0.0.1:8086"}, "influxdb.url: 'htp://127.0.0.1:8086' must start with"),
    ({"url": "http://"}, "influxdb.url: 'http://' has no host"),
    ({"dead": "{tmp}/afile/dead.jsonl"}, "dead_letters.path: {tmp}/afile/dead.jsonl cannot "
                                         "be created: {tmp}/afile is not a folder"),
])
def test_collector_configs_that_cannot_run(tmp_path: Path, override: dict[str, str],
                                           needle: str) -> None:
    cfg = _collector(tmp_path, **{k: v.format(tmp=tmp_path) for k, v in override.items()})
    needle = needle.format(tmp=tmp_path)
    check = _run("collector", "check-config", "--config", str(cfg))
    assert check.returncode == 2 and needle in check.stderr, check.stderr
    run = _run("collector", "run", "--config", str(cfg))
    assert run.returncode == 2 and needle in run.stderr, run.stderr
    assert "Traceback" not in run.stderr + check.stderr


def test_the_good_collector_config_passes(tmp_path: Path) -> None:
    check = _run("collector", "check-config", "--config", str(_collector(tmp_path)))
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_agent_spool_under_a_file(tmp_path: Path, command: str) -> None:
    (tmp_path / "afile").write_text("x")
    cfg = tmp_path / "agent.toml"
    cfg.write_text(AGENT.format(spool=tmp_path / "afile" / "spool.db"), encoding="utf-8")
    out = _run("agent", command, "--config", str(cfg))
    assert out.returncode == 2, out.stderr
    assert (f"spool.path: {tmp_path}/afile/spool.db cannot be created: {tmp_path}/afile is "
            "not a folder") in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(("prog", "var", "value", "needle"), [
    ("agent", "NETMON_BROKER", "not-json{", "broker: environment variable NETMON_BROKER is "
                                            "not JSON"),
    ("collector", "NETMON_INFLUXDB", "[1, 2]", "influxdb: environment variable "
                                               "NETMON_INFLUXDB must be a JSON object"),
])
@pytest.mark.parametrize("command", ["check-config", "run"])
def test_environment_overrides_that_do_not_parse_are_named(
        tmp_path: Path, prog: str, var: str, value: str, needle: str, command: str) -> None:
    if prog == "agent":
        cfg = tmp_path / "agent.toml"
        cfg.write_text(AGENT.format(spool=tmp_path / "spool.db"), encoding="utf-8")
    else:
        cfg = _collector(tmp_path)
    out = _run(prog, command, "--config", str(cfg), env={var: value})
    assert out.returncode == 2 and needle in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_units_do_not_restart_loop_on_a_config_error() -> None:
    for unit in ("netmon-agent.service", "netmon-collector.service"):
        text = (REPO / "deploy" / "systemd" / unit).read_text()
        assert "RestartPreventExitStatus=2" in text, unit
