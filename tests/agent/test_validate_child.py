"""Remote plans and release manifests are validated with the full models in a
short-lived child process (:mod:`agent.validate_child`) that prints the validated JSON,
so the run time never loads pydantic for them (issue 20). The child's answers equal the
models' own, every problem is named, and the caller's interpreter loads no pydantic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent import handoff, runconfig, validate_child
from netmon.contract import ReleaseManifest
from netmon.plan import TestPlan
from tests.helpers import REPO

PLAN: dict[str, Any] = {
    "tests": {
        "lat": {"method": "tcp", "target": "192.0.2.1:443", "every_s": 60, "count": 3},
        "speed": {"method": "iperf3", "target": "192.0.2.10", "links": ["mobile"],
                  "every_s": 7200, "expected_mb": 50, "direction": "upload"},
    },
    "budgets_mb": {"mobile": 1500},
}

MANIFEST: dict[str, Any] = {
    "schema": 1, "serial": 3, "version": "0.2.0", "issued_at": "2026-12-01T08:00:00Z",
    "base_url": "https://noc.example/releases/0.2.0/",
    "wheels": [{"name": "hatinh_netmon-0.2.0-py3-none-any.whl", "sha256": "a" * 64,
                "size": 123456}],
    "percent": 50, "key_id": "0123456789abcdef", "signature": "c2ln",
}


def test_a_plan_validated_in_the_child_equals_the_models_plan() -> None:
    value = validate_child.validate("plan", json.dumps(PLAN).encode(), ["fibre", "mobile"])
    plan = runconfig.plan_from_json(value)
    model = TestPlan.model_validate(PLAN)
    assert plan.budgets_mb == model.budgets_mb
    assert plan.budget_bytes("mobile") == model.budget_bytes("mobile") == 1_500_000_000
    assert set(plan.tests) == set(model.tests)
    for name, spec in model.tests.items():
        got = plan.tests[name]
        assert got.kind == spec.kind and got.jitter == spec.jitter, name
        assert got.links_on(["fibre", "mobile"]) == spec.links_on(["fibre", "mobile"])
        for key in ("method", "every_s", "expected_mb", "enabled", "defer_s", "defer_max"):
            assert getattr(got, key) == getattr(spec, key), (name, key)
        assert {k: getattr(got.options, k) for k in type(spec.options).model_fields} == \
            handoff.plain(spec.options.model_dump()), name


@pytest.mark.parametrize(("change", "named"), [
    (lambda p: p["tests"]["lat"].update(count=0), "tests.lat: count:"),
    (lambda p: p["tests"]["lat"].update(method="nope"), "unknown method 'nope'"),
    (lambda p: p["tests"]["speed"].update(links=["wifi"]), "tests.speed.links: unknown link"),
    (lambda p: p["budgets_mb"].update(mobile=-1), "budgets_mb"),
    (lambda p: p.update(extra=1), "extra: unknown key"),
])
def test_an_invalid_plan_is_refused_naming_the_key(change: Any, named: str) -> None:
    plan = json.loads(json.dumps(PLAN))
    change(plan)
    with pytest.raises(validate_child.Refused) as err:
        validate_child.validate("plan", json.dumps(plan).encode(), ["fibre", "mobile"])
    assert any(named in p for p in err.value.problems), err.value.problems


def test_a_manifest_validated_in_the_child_equals_the_model() -> None:
    value = validate_child.validate("manifest", json.dumps(MANIFEST).encode())
    model = ReleaseManifest.model_validate(MANIFEST)
    assert value == json.loads(model.model_dump_json(by_alias=True))
    assert ReleaseManifest.model_validate(value) == model
    bad = MANIFEST | {"percent": 101}
    with pytest.raises(validate_child.Refused) as err:
        validate_child.validate("manifest", json.dumps(bad).encode())
    assert any(p.startswith("percent:") for p in err.value.problems), err.value.problems
    with pytest.raises(validate_child.Refused, match=r"(?i)invalid JSON"):
        validate_child.validate("manifest", b"{not json")


_CALLER = """
import json, sys
from agent import runconfig, validate_child
plan = runconfig.plan_from_json(validate_child.validate("plan", sys.argv[1].encode(), ["mobile"]))
assert plan.tests["lat"].options.count == 3
print(json.dumps(sorted(m for m in sys.modules if m.startswith("pydantic"))))
"""


def test_the_caller_loads_no_pydantic() -> None:
    proc = subprocess.run([sys.executable, "-c", _CALLER, json.dumps(PLAN)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


# --------------------------------------------------------------------------- wired in


def _remote(tmp_path: Path, applied: list[Any]) -> tuple[Any, Any]:
    from agent.remote_config import RemoteConfig, plan_validator
    from tests.helpers.fleet import make_keys

    _, pub, key = make_keys(tmp_path / "keys")
    # The run time's settings (agent.runconfig), duck-typed like the model.
    settings = runconfig.RemoteConfig(public_keys=(pub,), allowed_targets=("192.0.2.0/24",),
                                      state_file=Path("remote.json"))
    rc = RemoteConfig[Any]("ht-kyanh-01", settings, plan_validator(["fibre", "mobile"]),
                           apply=lambda plan, v: applied.append(plan), state_dir=tmp_path)
    return rc, key


def test_a_signed_remote_plan_is_validated_in_the_child(tmp_path: Path) -> None:
    from netmon.signing import sign

    applied: list[Any] = []
    rc, key = _remote(tmp_path, applied)
    d = rc.handle(sign(PLAN, probe_id="ht-kyanh-01", version=3, key=key).to_json())
    assert d.applied and isinstance(d.plan, runconfig.Plan) and applied == [d.plan]
    model = TestPlan.model_validate(PLAN)
    assert d.plan.tests["speed"].options.direction == model.tests["speed"].options.direction
    assert d.plan.budget_bytes("mobile") == model.budget_bytes("mobile")
    bad = json.loads(json.dumps(PLAN))
    bad["tests"]["lat"]["count"] = 0
    d = rc.handle(sign(bad, probe_id="ht-kyanh-01", version=4, key=key).to_json())
    assert d.reason == "invalid_plan" and "tests.lat: count:" in (d.detail or ""), d.detail
    assert rc.version == 3 and "config version 4 rejected: invalid_plan" in (rc.error or "")


def test_a_child_that_cannot_answer_refuses_the_plan_and_keeps_the_running_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from netmon.signing import sign

    applied: list[Any] = []
    rc, key = _remote(tmp_path, applied)
    # A real process that fails (/bin/false as the interpreter), not a stand-in object.
    monkeypatch.setattr(validate_child.sys, "executable", "/bin/false")
    d = rc.handle(sign(PLAN, probe_id="ht-kyanh-01", version=3, key=key).to_json())
    assert d.reason == "validation_failed" and "exited 1" in (d.detail or ""), d.detail
    assert applied == [] and rc.version is None and not (tmp_path / "remote.json").exists()


def test_a_manifest_is_validated_in_the_child_then_its_signature_checked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.update import Manifest, UpdateRefused, parse_manifest
    from netmon.release import sign_manifest
    from tests.helpers.fleet import make_keys

    _, _, key = make_keys(tmp_path / "a")
    _, _, other = make_keys(tmp_path / "b")
    wheels = [{"name": "hatinh_netmon-0.2.0-py3-none-any.whl", "sha256": "a" * 64,
               "size": 123456}]
    payload = sign_manifest(serial=3, version="0.2.0", base_url="https://noc.example/r",
                            wheels=wheels, key=key, percent=50)
    got = parse_manifest(payload, [key.public_key()])
    model = ReleaseManifest.model_validate_json(payload)
    assert got == Manifest.from_json(json.loads(model.model_dump_json(by_alias=True)))
    assert (got.serial, got.version, got.percent, got.wheels[0].size) == (3, "0.2.0", 50, 123456)
    obj = json.loads(payload)
    cases = [
        (json.dumps(obj | {"percent": 101}).encode(), "malformed", "percent:"),
        (json.dumps({k: v for k, v in obj.items() if k != "signature"}).encode(), "unsigned",
         "no signature"),
        (payload, "unknown_key", "not a trusted NOC key"),
    ]
    for data, reason, text in cases:
        with pytest.raises(UpdateRefused) as err:
            parse_manifest(data, [other.public_key()] if reason == "unknown_key"
                           else [key.public_key()])
        assert err.value.reason == reason and text in str(err.value), str(err.value)
    monkeypatch.setattr(validate_child.sys, "executable", "/bin/false")
    with pytest.raises(UpdateRefused) as err:
        parse_manifest(payload, [key.public_key()])
    assert err.value.reason == "validation_failed"
