"""When each test runs (asyncio).

One job per (test, link). A single dispatcher loop starts jobs when they are due:

* **Jitter**: every run moves by a random amount in ``[-jitter_s, +jitter_s]`` and the
  first run comes at a random point of the first jitter window, so hundreds of probes
  booted by the same power restoration drift apart instead of hitting the server
  together.
* **No overlap of throughput tests**: at most one throughput job runs at a time on the
  probe (they would measure each other); latency jobs run alongside.
* **No bursts**: a run that is late (after a long test, a held clock, a suspend) runs
  once; the missed slots are dropped, never made up.
* **Budgets**: on a metered link the next throughput run is spaced by
  :func:`agent.budget.effective_intervals`, and skipped when the budget is spent.
  Because the spacing is uniform in time, peak hours (19:00-23:00) keep their share.
* **Clock**: no job starts while the wall clock is implausible (or, with policy
  ``hold``, unsynchronised); they wait and start once it is right.

The plan can be replaced while running (:meth:`Scheduler.apply_plan`): jobs that stay
keep their timing, running jobs finish, new jobs get a fresh jittered start.

The plan is the run time's (:class:`agent.runconfig.Plan`, no pydantic); a validated
:class:`netmon.plan.TestPlan` has the same attributes and is read the same way.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol
from zoneinfo import ZoneInfo

from agent.budget import Demand, effective_intervals, month_key, seconds_left_in_month
from agent.clock import Clock
from agent.runconfig import Plan, Spec
from netmon.planlinks import MB

log = logging.getLogger("netmon.agent.scheduler")

#: How often a job waiting for the clock looks again.
CLOCK_RECHECK_S = 30.0


class Ledger(Protocol):
    """Where the scheduler reads data usage (the spool database implements this)."""

    def usage(self, month: str) -> dict[str, float]: ...

    def estimate(self, test: str, link: str) -> float | None: ...


@dataclass
class Job:
    """One test on one link."""

    test: str
    link: str
    spec: Spec
    due: float
    runs: int = 0
    last_start: float | None = None
    running: bool = False
    budget_stopped: bool = False
    deferrals: int = 0  # postponed in a row because the line was busy

    @property
    def key(self) -> str:
        """``test@link``."""
        return f"{self.test}@{self.link}"

    @property
    def throughput(self) -> bool:
        """True for throughput tests (never two at once)."""
        return self.spec.kind == "throughput"


Execute = Callable[[Job], Awaitable[None]]
#: Called before a run; returns seconds to postpone it by (line busy), or None to run.
Precheck = Callable[[Job], Awaitable[float | None]]


class Scheduler:
    """Start jobs on time; see the module docstring."""

    def __init__(self, plan: Plan, links: list[str], execute: Execute, ledger: Ledger,
                 clock: Clock | None = None, rng: random.Random | None = None,
                 timezone: str = "Asia/Ho_Chi_Minh",
                 clock_ok: Callable[[], bool] = lambda: True,
                 reserve_pct: Callable[[str], float] = lambda link: 5.0,
                 precheck: Precheck | None = None) -> None:
        self.links = list(links)
        self.execute = execute
        self.ledger = ledger
        self.clock = clock or Clock()
        self.rng = rng or random.Random()
        self.tz = ZoneInfo(timezone)
        self.clock_ok = clock_ok
        self.reserve_pct = reserve_pct
        self.precheck = precheck
        self.deferred = 0
        self.jobs: dict[str, Job] = {}
        self.plan = Plan()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._throughput_busy = False
        self.budget_skips = 0
        self.apply_plan(plan)

    # ------------------------------------------------------------------ plan

    def apply_plan(self, plan: Plan) -> None:
        """Switch to ``plan`` atomically (one synchronous step on the event loop)."""
        now = self.clock.monotonic()
        jobs: dict[str, Job] = {}
        for name, spec in plan.tests.items():
            if not spec.enabled:
                continue
            for link in spec.links_on(self.links):
                key = f"{name}@{link}"
                old = self.jobs.get(key)
                if old is not None and old.spec == spec:
                    jobs[key] = old
                else:
                    jobs[key] = Job(name, link, spec, now + self.rng.uniform(0, spec.jitter))
                    if old is not None:  # keep its rhythm, take the new settings
                        jobs[key].due, jobs[key].last_start = old.due, old.last_start
                        jobs[key].running = old.running
        self.jobs = jobs
        self.plan = plan
        self._wake.set()

    # ------------------------------------------------------------------ budget

    def effective_every(self, job: Job) -> float | None:
        """The interval the job runs at now; None when its link's budget is spent."""
        budget = self.plan.budget_bytes(job.link)
        if not job.throughput or budget is None:
            return job.spec.every_s
        wall = self.clock.wall()
        used = self.ledger.usage(month_key(wall, self.tz)).get(job.link, 0.0)
        demands = []
        for other in self.jobs.values():
            if other.link == job.link and other.throughput:
                demands.append(Demand(other.key, self._bytes_per_run(other),
                                      other.spec.every_s))
        out = effective_intervals(budget, self.reserve_pct(job.link), used, demands,
                                  seconds_left_in_month(wall, self.tz))
        return out.get(job.key, job.spec.every_s)

    def _bytes_per_run(self, job: Job) -> float:
        est = self.ledger.estimate(job.test, job.link)
        if est is not None:
            return est
        return (job.spec.expected_mb or 0.0) * MB

    # ------------------------------------------------------------------ loop

    async def run(self) -> None:
        """Dispatch until cancelled; cancelling also cancels the running jobs."""
        try:
            while True:
                self._dispatch()
                await self._sleep_until_next()
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    def _dispatch(self) -> None:
        now = self.clock.monotonic()
        clock_ok = None
        for job in sorted(self.jobs.values(), key=lambda j: j.due):
            if job.running or job.due > now:
                continue
            if clock_ok is None:
                clock_ok = self.clock_ok()
            if not clock_ok:
                job.due = now + CLOCK_RECHECK_S
                continue
            if job.throughput and self._throughput_busy:
                continue  # starts when the running one ends
            every = self.effective_every(job)
            if every is None:
                if not job.budget_stopped:
                    log.warning("%s: monthly data budget of link %s spent; throughput tests "
                                "stop until next month (latency tests continue)",
                                job.test, job.link)
                job.budget_stopped = True
                self.budget_skips += 1
                job.due = self._next_due(job.due, job.spec.every_s, job.spec.jitter, now)
                continue
            job.budget_stopped = False
            self._start(job, now)
            job.due = self._next_due(job.due, every, job.spec.jitter, now)

    def _next_due(self, due: float, every: float, jitter: float, now: float) -> float:
        # A late run (long test before it, clock held, suspend) does not pull the next one
        # in: at least half an interval follows, and missed slots are dropped.
        nominal = max(due + every, now + every / 2)
        return max(now, nominal + self.rng.uniform(-jitter, jitter))

    def _start(self, job: Job, now: float) -> None:
        job.running = True
        job.runs += 1
        job.last_start = now
        if job.throughput:
            self._throughput_busy = True
        task = asyncio.create_task(self._run_job(job), name=f"test {job.key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_job(self, job: Job) -> None:
        try:
            if self.precheck is not None:
                delay = await self.precheck(job)
                if delay is not None:
                    # Not a run: try again after ``delay`` (sooner than the next slot).
                    job.deferrals += 1
                    job.runs -= 1
                    self.deferred += 1
                    job.due = min(job.due, self.clock.monotonic() + delay)
                    return
            job.deferrals = 0
            await self.execute(job)
        except asyncio.CancelledError:
            raise
        except Exception:  # the runtime turns failures into results; this is a bug
            log.exception("test %s crashed", job.key)
        finally:
            job.running = False
            if job.throughput:
                self._throughput_busy = False
            self._wake.set()

    async def _sleep_until_next(self) -> None:
        now = self.clock.monotonic()
        waiting = [j.due for j in self.jobs.values()
                   if not j.running and not (j.throughput and self._throughput_busy)]
        timeout = max(0.0, min(waiting) - now) if waiting else 3600.0
        if timeout == 0:
            await asyncio.sleep(0)
            return
        self._wake.clear()
        sleeper = asyncio.ensure_future(self.clock.sleep(timeout))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in (sleeper, waker):
                fut.cancel()
            # gather, not ``suppress(CancelledError): await fut``: that also swallowed a
            # cancellation of this task arriving here, and the scheduler then slept on
            # (the runtime's stop hung for an hour, seen once in CI).
            await asyncio.gather(sleeper, waker, return_exceptions=True)
