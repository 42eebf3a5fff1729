"""Scheduler: jitter, no overlapping throughput tests, monthly data budgets (fake clock
where a month would pass, the real broker still used), peak-hour share, no bursts,
clock hold, plan replacement."""

from __future__ import annotations

import asyncio
import itertools
import random
import statistics
import time as systime
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent import config
from agent.budget import Demand, effective_intervals, seconds_left_in_month
from agent.methods.base import Method
from agent.runtime import Runtime
from agent.scheduler import Job, Scheduler
from devstack.services import Service
from netmon.plan import TestPlan, TestSpec
from tests.helpers.agent import (
    FakeClock,
    Subscriber,
    TestOnlyLatencyMethod,
    TestOnlyThroughputMethod,
    agent_config,
)

TZ = ZoneInfo("Asia/Ho_Chi_Minh")


def in_peak(wall: datetime, tz: ZoneInfo, start: time, end: time) -> bool:
    """True when ``wall`` falls in the peak window (local time of ``tz``)."""
    local = wall.astimezone(tz).time()
    if start <= end:
        return start <= local < end
    return local >= start or local < end


@pytest.fixture(autouse=True)
def test_only_methods(register_method: Callable[[type[Method[Any]]], None]
                      ) -> Iterator[None]:
    register_method(TestOnlyThroughputMethod)
    register_method(TestOnlyLatencyMethod)
    TestOnlyThroughputMethod.RUNS.clear()
    yield
    TestOnlyThroughputMethod.clock = None


def spec(kind: str, every_s: float, jitter_s: float = 0.0, **opts: Any) -> TestSpec:
    return TestSpec.model_validate(
        {"method": f"test_only_{kind}", "every_s": every_s, "jitter_s": jitter_s,
         "target": opts.pop("target", kind), **opts})


class MemLedger:
    """In-memory usage ledger for pure scheduler tests."""

    def __init__(self) -> None:
        self.used: dict[str, dict[str, float]] = {}
        self.est: dict[tuple[str, str], float] = {}

    def usage(self, month: str) -> dict[str, float]:
        return self.used.get(month, {})

    def estimate(self, test: str, link: str) -> float | None:
        return self.est.get((test, link))


async def run_for(sched: Scheduler, clock: FakeClock, seconds: float) -> None:
    """Run the dispatcher until the fake clock advanced ``seconds``."""
    end = clock.monotonic() + seconds
    task = asyncio.create_task(sched.run())
    while clock.monotonic() < end:
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# --------------------------------------------------------------------------- jitter


def test_jitter_spreads_probes_and_runs() -> None:
    firsts: list[float] = []
    gaps: list[float] = []

    async def one_probe(seed: int) -> None:
        clock = FakeClock()
        starts: list[float] = []

        async def execute(job: Job) -> None:
            starts.append(clock.monotonic())

        plan = TestPlan(tests={"speed": spec("latency", 3600, 300)})
        sched = Scheduler(plan, ["lo"], execute, MemLedger(), clock=clock,
                          rng=random.Random(seed))
        await run_for(sched, clock, 20 * 3600)
        firsts.append(starts[0] - 1000.0)
        gaps.extend(b - a for a, b in itertools.pairwise(starts))

    async def main() -> None:
        for seed in range(40):
            await one_probe(seed)

    asyncio.run(main())
    # 40 probes started together: first runs spread over the jitter window, not one second
    assert len({round(f) for f in firsts}) >= 35
    assert max(firsts) - min(firsts) > 200
    # later runs: interval +- up to 2 jitters, mean stays the interval
    assert all(3600 - 600 - 1e-6 <= g <= 3600 + 600 + 1e-6 for g in gaps)
    assert statistics.pstdev(gaps) > 60
    assert abs(statistics.mean(gaps) - 3600) < 60


# --------------------------------------------------------------------------- overlap


def test_throughput_tests_never_overlap_latency_runs_alongside() -> None:
    spans: list[tuple[str, str, float, float]] = []

    async def execute(job: Job) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.sleep(0.15)
        spans.append((job.spec.kind, job.key, t0, loop.time()))

    async def main() -> None:
        plan = TestPlan(tests={
            "a": spec("throughput", 1), "b": spec("throughput", 1),
            "c": spec("throughput", 1), "ping": spec("latency", 1)})
        sched = Scheduler(plan, ["fibre", "mobile"], execute, MemLedger(),
                          rng=random.Random(1))
        task = asyncio.create_task(sched.run())
        await asyncio.sleep(3.2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    tput = sorted((s, e, k) for kind, k, s, e in spans if kind == "throughput")
    assert len({k for _, _, k in tput}) == 6  # 3 tests x 2 links all got their turn
    for (_s1, e1, k1), (s2, _e2, k2) in itertools.pairwise(tput):
        assert s2 >= e1 - 1e-3, f"{k1} and {k2} overlapped"
    lat = [(s, e) for kind, _k, s, e in spans if kind == "latency"]
    overlapped = any(ls < e and s < le for ls, le in lat for s, e, _ in tput)
    assert overlapped, "latency tests should run alongside throughput tests"


# --------------------------------------------------------------------------- budget


def test_effective_intervals_arithmetic() -> None:
    month = 30 * 86400.0
    d = [Demand("a", 100e6, 3600)]
    # plenty of budget: configured interval
    assert effective_intervals(1e12, 5, 0, d, month) == {"a": 3600}
    # 950 MB usable for 720 wanted runs of 100 MB: stretched so 9.5 runs fit the month
    eff = effective_intervals(1e9, 5, 0, d, month)["a"]
    assert eff is not None and month / eff == pytest.approx(9.5)
    # next run would cut into the reserve: stop
    assert effective_intervals(1e9, 5, 900e6, d, month) == {"a": None}
    # months are local (Asia/Ho_Chi_Minh, UTC+7): 16:00Z on 30 June is 23:00 there
    assert seconds_left_in_month(datetime(2026, 6, 30, 16, 0, tzinfo=UTC), TZ) == 3600


def test_budget_spreads_then_stops_throughput_latency_continues(
        tmp_path: Path, mosquitto: Service) -> None:
    clock = FakeClock(datetime(2026, 6, 1, tzinfo=TZ).astimezone(UTC))
    TestOnlyThroughputMethod.clock = clock
    data = agent_config(
        tmp_path, mosquitto,
        tests={"speed": {"method": "test_only_throughput", "every_s": 3600, "jitter_s": 300,
                         "target": "speed", "bytes": 100e6, "expected_mb": 100},
               "ping": {"method": "test_only_latency", "every_s": 7200, "jitter_s": 300,
                        "target": "ping", "bytes": 1000}},
        links={"lo": {"access": "mobile", "isp": "Viettel", "budget_mb": 1000}})
    cfg = config.load(None, data=data)
    sub = Subscriber(mosquitto.host, mosquitto.port, "netmon/v1/probes/+/results")
    month_end = datetime(2026, 6, 30, 23, 0, tzinfo=TZ).astimezone(UTC)
    clock.frozen_at = month_end  # no July (a new budget) while the spool drains

    async def main() -> Runtime:
        runtime = Runtime(cfg, clock=clock, rng=random.Random(7))

        async def stop_at_month_end() -> None:
            while clock.wall() < month_end:
                await asyncio.sleep(0)
            assert runtime.publisher is not None
            await runtime.publisher.drain(30)
            runtime.request_stop()

        stopper = asyncio.create_task(stop_at_month_end())
        await runtime.run()
        await stopper
        return runtime

    runtime = asyncio.run(main())
    speed = [TestOnlyThroughputMethod.RUNS[i] for i in range(len(TestOnlyThroughputMethod.RUNS))
             if TestOnlyThroughputMethod.RUNS[i][0] == "throughput"]
    # 950 MB usable (5 % reserve): at most 9 runs of 100 MB, and the budget is not idle
    assert 7 <= len(speed) <= 9
    starts = [clock.start_wall + timedelta(seconds=s - clock.start_mono) for _, _, s, _ in speed]
    # spread over the month, not spent in the first hours
    assert starts[-1] - starts[0] > timedelta(days=18)
    assert max(b - a for a, b in itertools.pairwise(starts)) < timedelta(days=8)
    job = runtime.scheduler.jobs["speed@lo"]
    assert job.budget_stopped and runtime.scheduler.budget_skips > 0
    ping = runtime.scheduler.jobs["ping@lo"]
    assert ping.runs >= 340  # every 2 h for 30 days: latency never stopped
    # every result went through the real broker
    sub.wait(lambda: len(sub.results()) == len(speed) + ping.runs, 30, "all results")
    used = sum(r["metrics"].get("bytes", 0) for r in sub.results())
    assert used <= 950e6 + ping.runs * 1000
    sub.close()


def test_peak_hours_keep_their_share_under_a_budget() -> None:
    peak = total = 0
    for seed in range(5):
        clock = FakeClock(datetime(2026, 6, 1, tzinfo=TZ).astimezone(UTC))
        ledger = MemLedger()
        runs: list[datetime] = []

        async def execute(job: Job, clock: FakeClock = clock, ledger: MemLedger = ledger,
                          runs: list[datetime] = runs) -> None:
            runs.append(clock.wall())
            month = clock.wall().astimezone(TZ).strftime("%Y-%m")
            used = ledger.used.setdefault(month, {})
            used["lte"] = used.get("lte", 0) + 100e6
            ledger.est[(job.test, job.link)] = 100e6

        plan = TestPlan(tests={"speed": spec("throughput", 600, 60)},
                               budgets_mb={"lte": 6000})
        sched = Scheduler(plan, ["lte"], execute, ledger, clock=clock,
                          rng=random.Random(seed))
        asyncio.run(run_for(sched, clock, 29 * 86400))
        assert 50 <= len(runs) <= 57  # 5700 MB usable / 100 MB, stretched from 4320 wanted
        total += len(runs)
        peak += sum(in_peak(r, TZ, time(19), time(23)) for r in runs)
    share = peak / total
    assert 0.09 <= share <= 0.25, f"peak share {share:.2f}, expected about 4/24"


# --------------------------------------------------------------------------- no burst


def test_no_burst_of_missed_runs_after_a_long_test_or_suspend() -> None:
    clock = FakeClock()
    starts: list[float] = []

    async def execute(job: Job) -> None:
        if job.test == "long":
            clock.advance(3 * 3600)  # a hung test / a suspended machine: 3 hours pass
        else:
            starts.append(clock.monotonic())

    plan = TestPlan(tests={"ping": spec("latency", 60),
                                  "long": spec("throughput", 30 * 86400)})
    sched = Scheduler(plan, ["lo"], execute, MemLedger(), clock=clock, rng=random.Random(3))
    asyncio.run(run_for(sched, clock, 4 * 3600))
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 30 - 1e-6, "missed runs were made up in a burst"
    assert len(starts) < 4 * 60 - 150  # three hours of slots were dropped, not replayed


# --------------------------------------------------------------------------- clock hold


def test_no_test_while_the_clock_is_wrong() -> None:
    clock = FakeClock()
    ok = {"value": False}
    starts: list[float] = []

    async def execute(job: Job) -> None:
        starts.append(clock.monotonic())

    plan = TestPlan(tests={"ping": spec("latency", 60)})
    sched = Scheduler(plan, ["lo"], execute, MemLedger(), clock=clock,
                      clock_ok=lambda: ok["value"])

    async def main() -> None:
        task = asyncio.create_task(sched.run())
        end = clock.monotonic() + 600
        while clock.monotonic() < end:
            await asyncio.sleep(0)
        assert starts == []
        ok["value"] = True
        end = clock.monotonic() + 600
        while clock.monotonic() < end:
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert 9 <= len(starts) <= 11


# --------------------------------------------------------------------------- plan changes


def test_apply_plan_keeps_rhythm_adds_and_removes() -> None:
    clock = FakeClock()
    seen: list[str] = []

    async def execute(job: Job) -> None:
        seen.append(job.test)

    sched = Scheduler(TestPlan(tests={"a": spec("latency", 60)}), ["lo"], execute,
                      MemLedger(), clock=clock)

    async def main() -> None:
        task = asyncio.create_task(sched.run())
        end = clock.monotonic() + 125
        while clock.monotonic() < end:
            await asyncio.sleep(0)
        due_a = sched.jobs["a@lo"].due
        sched.apply_plan(TestPlan(tests={"a": spec("latency", 60),
                                                "b": spec("latency", 60)}))
        assert sched.jobs["a@lo"].due == due_a  # unchanged test keeps its timing
        end = clock.monotonic() + 120
        while clock.monotonic() < end:
            await asyncio.sleep(0)
        seen.clear()
        sched.apply_plan(TestPlan(tests={"b": spec("latency", 60)}))
        end = clock.monotonic() + 300
        while clock.monotonic() < end:
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert seen and set(seen) == {"b"}


def test_throughput_test_postponed_while_the_line_is_busy(tmp_path: Path) -> None:
    import socket
    import threading

    # Users' traffic on the link's interface (loopback here): a UDP flood.
    stop = threading.Event()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))

    def flood() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            blob = b"x" * 8000
            while not stop.is_set():
                for _ in range(100):
                    out.sendto(blob, sink.getsockname())

    data = agent_config(
        tmp_path, None,
        tests={"speed": {"method": "test_only_throughput", "every_s": 3600, "jitter_s": 0,
                         "target": "speed", "defer_when_busy_mbps": 5, "defer_s": 1,
                         "defer_max": 2}},
        links={"lo": {"access": "fixed", "isp": "Loopback", "interface": "lo"}})
    cfg = config.load(None, data=data)
    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()

    async def main() -> Runtime:
        runtime = Runtime(cfg, publish=False)
        task = asyncio.create_task(runtime.run())
        deadline = systime.monotonic() + 120  # two deferrals of 1 s, generously on a busy host
        while not TestOnlyThroughputMethod.RUNS and systime.monotonic() < deadline:
            await asyncio.sleep(0.05)
        runtime.request_stop()
        await task
        return runtime

    try:
        runtime = asyncio.run(main())
    finally:
        stop.set()
        flooder.join()
        sink.close()
    job = runtime.scheduler.jobs["speed@lo"]
    # postponed twice (defer_max), then run anyway rather than never
    assert runtime.scheduler.deferred == 2
    assert job.runs == 1 and len(TestOnlyThroughputMethod.RUNS) == 1
