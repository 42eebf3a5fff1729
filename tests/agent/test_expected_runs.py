"""``expected_runs_per_day`` in the status message: per link, the runs per day the current
plan schedules, budgets included (a real Runtime and SQLite ledger, virtual wall clock)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent import config
from agent.budget import month_key, seconds_left_in_month
from agent.runtime import Runtime
from netmon.plan import MB, TestPlan
from tests.helpers.agent import (
    FakeClock,
    TestOnlyLatencyMethod,
    TestOnlyThroughputMethod,
    agent_config,
)

START = datetime(2026, 6, 10, 5, 0, tzinfo=UTC)


def runtime(tmp_path: Path, tests: dict[str, Any]) -> Runtime:
    data = agent_config(tmp_path, None, tests, links={
        "lo": {"access": "fixed", "isp": "Loopback"},
        "lte": {"access": "mobile", "isp": "Viettel", "budget_mb": 1000.0,
                "budget_reserve_pct": 0.0}})
    return Runtime(config.load(None, data=data, check_files=False),
                   clock=FakeClock(START), publish=False)


def test_sum_of_86400_over_every_per_link_disabled_not_counted(tmp_path: Path,
                                                               register_method: Any) -> None:
    register_method(TestOnlyLatencyMethod)
    rt = runtime(tmp_path, {
        "ping": {"method": "test_only_latency", "target": "a", "every_s": 600},
        "ping2": {"method": "test_only_latency", "target": "a", "every_s": 900,
                  "links": ["lo"]},
        "off": {"method": "test_only_latency", "target": "a", "every_s": 60,
                "enabled": False}})
    assert rt.expected_runs_per_day() == {"lo": 144.0 + 96.0, "lte": 144.0}
    status = rt.status_message()
    assert status["expected_runs_per_day"] == {"lo": 240.0, "lte": 144.0}
    # A remote plan changes it at once.
    rt.apply_plan(TestPlan.model_validate(
        {"tests": {"p": {"method": "test_only_latency", "target": "a", "every_s": 3600}}}))
    assert rt.status_message()["expected_runs_per_day"] == {"lo": 24.0, "lte": 24.0}
    assert rt.status_message("offline")["expected_runs_per_day"] is None


def test_budget_stretch_and_stop_lower_the_throughput_share(tmp_path: Path,
                                                            register_method: Any) -> None:
    register_method(TestOnlyLatencyMethod)
    register_method(TestOnlyThroughputMethod)
    rt = runtime(tmp_path, {})
    left = seconds_left_in_month(rt.clock.wall(), rt.scheduler.tz)
    # Runs that would want twice the 1000 MB budget: the interval stretches by 2.
    per_run_mb = 2 * 1000.0 * 3600 / left
    rt.apply_plan(TestPlan.model_validate({
        "tests": {"ping": {"method": "test_only_latency", "target": "a", "every_s": 600,
                           "links": ["lte"]},
                  "speed": {"method": "test_only_throughput", "target": "a",
                            "every_s": 3600, "links": ["lte"], "expected_mb": per_run_mb}},
        "budgets_mb": {"lte": 1000.0}}))
    got = rt.expected_runs_per_day()
    assert got["lo"] == 0.0
    assert abs(got["lte"] - (144.0 + 12.0)) < 0.01, got  # 86400/7200 = 12 speed runs
    # Budget spent: the throughput test stops, latency tests go on.
    rt.spool.add_usage("lte", month_key(rt.clock.wall(), rt.scheduler.tz), 1000 * MB)
    assert rt.expected_runs_per_day()["lte"] == 144.0
