"""Remote plans and release manifests are validated with the full models in a
short-lived child process (:mod:`agent.validate_child`) that prints the validated JSON,
so the run time never loads pydantic for them (issue 20). The child's answers equal the
models' own, every problem is named, and the caller's interpreter loads no pydantic."""

from __future__ import annotations

import json
import subprocess
import sys
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
