"""Agent config: every bad key named (file and CLI), env overrides, the shipped example."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent import config
from netmon.plan import TestPlan
from netmon.settings import ConfigError
from tests.helpers.agent import REPO, agent_config, cli, tcp_test, write_config


def base(tmp_path: Path, **top: Any) -> dict[str, Any]:
    return agent_config(tmp_path, None, {"lat": tcp_test(443)}, **top)


def problems_of(tmp_path: Path, data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        config.load(write_config(tmp_path, data))
    return err.value.report()


def test_valid_config_loads(tmp_path: Path) -> None:
    cfg = config.load(write_config(tmp_path, base(tmp_path)))
    assert cfg.probe_id == "test-probe-01"
    spec = cfg.plan().tests["lat"]
    assert spec.kind == "latency" and spec.options.target == "127.0.0.1:443"
    assert spec.every_s == 1.0


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda d: d.update(probe_id="Bad Probe"), "probe_id: String should match pattern"),
    (lambda d: d["broker"].update(port=70000), "broker.port: Input should be less than or "
                                               "equal to 65535 (got 70000)"),
    (lambda d: d["broker"].update(colour="red"), "broker.colour: unknown key"),
    (lambda d: d["links"]["lo"].update(access="satellite"), "links.lo.access"),
    (lambda d: d["links"]["lo"].update(source_address="10.0.0.300"),
     "links.lo.source_address"),
    (lambda d: d["links"]["lo"].update(budget_mb=-5), "links.lo.budget_mb"),
    (lambda d: d["tests"]["lat"].update(method="carrier-pigeon"),
     "tests.lat.method: unknown method 'carrier-pigeon'; known:"),
    (lambda d: d["tests"]["lat"].update(every_s=0), "tests.lat.every_s"),
    (lambda d: d["tests"]["lat"].update(jitter_s=5, every_s=6), "tests.lat"),
    (lambda d: d["tests"]["lat"].update(count=0), "tests.lat.count: Input should be greater"),
    (lambda d: d["tests"]["lat"].update(cuont=3), "tests.lat.cuont: unknown key"),
    (lambda d: d["tests"]["lat"].pop("target"), "tests.lat.target: Field required"),
    (lambda d: d["tests"]["lat"].update(links=["lte"]),
     "tests.lat.links: unknown link 'lte' (known: lo)"),
    (lambda d: d["spool"].update(max_mb=0), "spool.max_mb"),
    (lambda d: d["clock"].update(policy="guess") if "clock" in d else
     d.update(clock={"policy": "guess"}), "clock.policy"),
    (lambda d: d.update(schedule={"timezone": "Mars/Olympus"}), "schedule.timezone: unknown "
                                                               "time zone 'Mars/Olympus'"),
    (lambda d: d["broker"].update(password_file="/nonexistent/pw"),
     "broker.password_file: no such file"),
    (lambda d: d.update(links={}), "links: Dictionary should have at least 1 item"),
])
def test_bad_key_is_named(tmp_path: Path, mutate: Any, expected: str) -> None:
    data = base(tmp_path)
    mutate(data)
    assert expected in problems_of(tmp_path, data)


def test_every_bad_key_named_at_once_and_secrets_not_echoed(tmp_path: Path) -> None:
    data = base(tmp_path)
    data["broker"].update(port=0, password="hunter2-secret", password_file="/x")
    data["tests"]["lat"].update(count=-1)
    text = problems_of(tmp_path, data)
    assert "broker.port" in text and "tests.lat.count" in text
    assert "hunter2" not in text


def test_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETMON_BROKER__HOST", "mqtt.example.org")
    monkeypatch.setenv("NETMON_LINKS__LO__BUDGET_MB", "1500")
    cfg = config.load(write_config(tmp_path, base(tmp_path)))
    assert cfg.broker.host == "mqtt.example.org"
    assert cfg.plan().budget_bytes("lo") == 1_500_000_000


def test_test_plan_model_is_reusable(tmp_path: Path) -> None:
    cfg = config.load(write_config(tmp_path, base(tmp_path)))
    plan = TestPlan.model_validate(
        {"tests": {"x": tcp_test(80, links=["mobile"])}, "budgets_mb": {"sat": 5}})
    assert plan.problems(cfg.links) == [
        "tests.x.links: unknown link 'mobile' (known: lo)",
        "budgets_mb.sat: unknown link 'sat' (known: lo)"]
    with pytest.raises(ValueError, match="count"):
        TestPlan.model_validate({"tests": {"x": tcp_test(80, count=0)}})


def test_check_config_cli_exit_codes(tmp_path: Path) -> None:
    good = write_config(tmp_path, base(tmp_path), "good.toml")
    res = cli("check-config", "--config", str(good))
    assert res.returncode == 0, res.stderr
    assert "ok" in res.stdout
    data = base(tmp_path)
    data["tests"]["lat"]["count"] = 0
    data["broker"]["port"] = 0
    bad = write_config(tmp_path, data, "bad.toml")
    res = cli("check-config", "--config", str(bad))
    assert res.returncode == 2
    assert "tests.lat.count" in res.stderr and "broker.port" in res.stderr
    res = cli("check-config", "--config", str(bad), "--json")
    assert res.returncode == 2
    verdict = json.loads(res.stdout)
    assert verdict["ok"] is False and len(verdict["problems"]) == 2
    res = cli("check-config", "--config", str(tmp_path / "missing.toml"))
    assert res.returncode == 2 and "file not found" in res.stderr


def test_run_refuses_invalid_config(tmp_path: Path) -> None:
    data = base(tmp_path)
    data["tests"]["lat"]["method"] = "nope"
    res = cli("run", "--config", str(write_config(tmp_path, data)))
    assert res.returncode == 2
    assert "tests.lat" in res.stderr and "unknown method 'nope'" in res.stderr


def test_shipped_example_is_valid() -> None:
    res = cli("check-config", "--skip-files", "--json", "--config",
              str(REPO / "examples" / "agent.toml"))
    assert res.returncode == 0, res.stdout + res.stderr
    verdict = json.loads(res.stdout)
    assert verdict["links"] == ["fibre", "mobile"]
    cfg = config.load(REPO / "examples" / "agent.toml", check_files=False)
    assert cfg.links["mobile"].access == "mobile" and cfg.links["fibre"].access == "fixed"
    assert cfg.plan().budget_bytes("mobile") == 20_000_000_000
