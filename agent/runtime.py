"""The running agent: wires config, clock, scheduler, methods, spool and publisher.

A result's life: a method returns it -> clock flags are checked -> it is committed to the
spool (with its bytes counted against the link's month) -> the publisher sends it -> the
PUBACK marks it sent -> the collector's receipt deletes it (``[spool] receipts = false``:
the PUBACK deletes it). Nothing between "measured" and "receipted" lives only in memory
except the measurement in progress.

A spool that cannot be written (full disk, read-only medium) does not stop the agent: a
result that cannot be stored is counted (``spool_lost``) and logged, ``spool_error`` says
why in the status message, what is already spooled keeps being delivered, and the first
successful write clears the error. Only when no write has succeeded for
``[spool] unusable_exit_s`` does :meth:`Runtime.run` raise :class:`SpoolError` (the CLI
exits 1 and systemd restarts the agent).

Remote configuration (issue 10) calls :meth:`Runtime.apply_plan` with a plan validated by
:class:`netmon.plan.TestPlan`; it takes effect at once, without a restart, and the next
status message carries ``config_version`` / ``config_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import logging
import os
import random
import signal
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from agent import runconfig
from agent.budget import month_key
from agent.clock import Clock, ClockState, clock_state
from agent.methods import registry
from agent.methods.base import MethodContext, make_result
from agent.methods.common import linkstats, radio, router_poll
from agent.publisher import Publisher
from agent.remote_config import RemoteConfig, plan_targets, plan_validator
from agent.scheduler import Job, Scheduler
from agent.spool import LEDGER_FLUSH_S, LedgerUpdate, Spool, SpoolError, UncleanStop
from netmon import __version__
from netmon.contractbase import EXIT_RESTART, SCHEMA_VERSION, Topics
from netmon.jsonutil import format_time
from netmon.wire import Result, encode_status

if TYPE_CHECKING:
    from agent.config import AgentConfig
    from agent.runconfig import Plan, RunConfig, Spec
    from netmon.plan import TestPlan

_T = TypeVar("_T")
log = logging.getLogger("netmon.agent")

#: A method gets its own timeout plus this before the runtime gives up on it.
GRACE_S = 15.0
#: The heartbeat rewrites a state file in which only times and progress counters changed
#: at most this often (``netmon-agent status`` asks for a fresh one with SIGUSR1): a
#: block an hour on the SD card, not one every heartbeat_s (issue 20).
STATE_REFRESH_S = 3600.0
#: What changes with every result or every second: progress, not news. The state file
#: is not rewritten at a heartbeat for these alone.
_PROGRESS = {
    "": ("written_at", "results", "jobs", "spool_memory"),
    "status": ("at", "uptime_s", "spool_depth", "awaiting_receipt", "last_result_at",
               "links", "oldest_waiting_at"),
    "broker": ("published", "acked", "resent", "receipts", "receipted"),
}


def _unchanged(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether two state files differ in progress only (see :data:`_PROGRESS`)."""
    def news(data: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in data.items() if k not in _PROGRESS[""]}
        for section in ("status", "broker"):
            out[section] = {k: v for k, v in (data.get(section) or {}).items()
                            if k not in _PROGRESS[section]}
        return out
    return bool(old) and news(old) == news(new)
#: While the spool is failing, it is tried this often (to notice that space returned even
#: when no test is due, and to apply ``unusable_exit_s``).
SPOOL_WATCH_S = 2.0
#: At most one "results lost" error line this often (each loss is counted regardless).
LOSS_LOG_EVERY_S = 60.0
#: After a test the heap is trimmed (:func:`trim_heap`) at most this often: a full
#: collection costs milliseconds on a Pi, and probes may run a latency test every second.
TRIM_EVERY_S = 60.0
#: The contract's ceiling for ``expected_runs_per_day`` (a link running tests every second).
MAX_RUNS_PER_DAY = 100_000.0


def sd_notify(state: str) -> bool:
    """Send ``state`` (e.g. ``READY=1``, ``WATCHDOG=1``) to systemd's notify socket; a
    no-op outside systemd. Returns True when sent."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):  # abstract namespace
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(addr)
            sock.sendall(state.encode())
    except OSError as exc:
        log.debug("sd_notify failed: %s", exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Half the systemd watchdog period (seconds), or None without a watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.5, int(usec) / 2_000_000)
    except ValueError:
        return None


def trim_heap() -> bool:
    """Collect garbage and hand the C heap's free pages back to the kernel (glibc's
    ``malloc_trim``); False where the C library has none (e.g. musl).

    Start-up (TOML, validation schemas, the first connection) and each test leave freed
    memory that malloc keeps resident; on an idle probe it would stay so for hours
    (issue 20: about 1 MB measured)."""
    gc.collect()
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim(0)
    return True


#: How long the interface counters are watched before a throughput test.
BUSY_SAMPLE_S = 1.0


async def interface_mbps(iface: str, seconds: float) -> float | None:
    """The busier direction's rate on ``iface`` over ``seconds`` (Mb/s), None when the
    interface has no counters."""
    first = linkstats.read_counters(iface)
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    second = linkstats.read_counters(iface)
    if first is None or second is None:
        return None
    elapsed = max(time.monotonic() - t0, 1e-3)
    return max(second.rx_bytes - first.rx_bytes,
               second.tx_bytes - first.tx_bytes) * 8 / elapsed / 1e6


def with_radio(results: list[Result], metrics: dict[str, float]) -> list[Result]:
    """``results`` carrying the link's radio context (read just after the test, on the
    cell that served it), failed ones too: a failure on weak signal says something."""
    if not metrics:
        return results
    return [r.with_metrics(metrics) for r in results]


class Runtime:
    """One agent process's state and tasks."""

    def __init__(self, cfg: RunConfig | AgentConfig, clock: Clock | None = None,
                 rng: random.Random | None = None, publish: bool = True,
                 announce: bool = True) -> None:
        if not isinstance(cfg, runconfig.RunConfig):
            # Validated in this process (``once``, the one-process mode, tests): the run
            # time takes it through the start stage's JSON, as after the hand-over.
            cfg = runconfig.from_validated(cfg)
        self.cfg = cfg
        self.clock = clock or Clock()
        self.rng = rng or random.Random()
        self.topics = Topics(cfg.topic_prefix)
        # Write-behind only in the service (it receives the receipts); ``once`` commits
        # every result before publishing, as the service will deliver what it leaves.
        self.spool = Spool(cfg.spool.path if publish else None, max_results=cfg.spool.max_results,
                           max_bytes=int(cfg.spool.max_mb * 1_000_000),
                           write_delay_s=cfg.spool.write_delay_s if publish and announce
                           else 0.0)
        #: What the previous run's marker said when it did not stop cleanly (set by run).
        self.unclean_stop: UncleanStop | None = None
        #: The last state file written, and when (monotonic).
        self._state_same: dict[str, Any] = {}
        self._state_at = 0.0
        self.bindings = cfg.bindings()
        self.plan: Plan = cfg.plan()
        self.config_version: int | None = None
        self.config_error: str | None = None
        self.started_wall = self.clock.wall()
        self.started_mono = time.monotonic()
        self.last_result_at: datetime | None = None
        self.results_made = 0
        #: Results that could not be spooled since start (counted, logged, never silent).
        self.spool_lost = 0
        self._loss_logged_at = -LOSS_LOG_EVERY_S
        self._fatal: SpoolError | None = None
        self._episode_lost_base: int | None = None  # spool_lost when failures began
        self.publisher: Publisher | None = None
        if publish:
            # Only the service subscribes to receipts: ``once`` (announce=False) leaves its
            # results marked sent for the service, which receives their receipts.
            receipts = self.topics.receipts(cfg.probe_id) \
                if cfg.spool.receipts and announce else None
            self.publisher = Publisher(cfg.broker, cfg.probe_id,
                                       self.topics.status(cfg.probe_id), self.spool,
                                       self.status_message, rng=self.rng, announce=announce,
                                       client_id=None if announce else
                                       f"{cfg.broker.client_id or cfg.probe_id}-once-{os.getpid()}",
                                       spool_cfg=cfg.spool,
                                       receipts=cfg.spool.receipts,
                                       receipts_topic=receipts)
        self.scheduler = Scheduler(
            self.plan, list(cfg.links), self.execute, self.spool, clock=self.clock,
            rng=self.rng, timezone=cfg.schedule.timezone, clock_ok=self._clock_ok,
            reserve_pct=lambda link: cfg.links[link].budget_reserve_pct,
            precheck=self.line_busy)
        self._clock_state: ClockState | None = None
        self._holding = False
        self._trimmed_at = -TRIM_EVERY_S  # the first test trims what start-up left
        self.remote: RemoteConfig[TestPlan] | None = None
        self._stop = asyncio.Event()
        #: What ``netmon-agent run`` exits with: EXIT_RESTART after an update switched
        #: versions or a new version failed its health check.
        self.exit_code = 0
        self.updater: Any = None  # agent.update.Updater when [update] root is set
        self.trial_health: Any = None  # agent.update.TrialHealth while on trial
        self.board_model: str | None = None

    # ------------------------------------------------------------------ plan

    def apply_plan(self, plan: Plan | TestPlan, version: int | None = None) -> list[str]:
        """Check ``plan`` against this probe's links and switch to it atomically (a
        validated :class:`netmon.plan.TestPlan` becomes the run time's plain one).

        Returns the problems (and changes nothing) when it does not fit; the problems are
        also kept as ``config_error`` for the status message.
        """
        if not isinstance(plan, runconfig.Plan):
            plan = runconfig.plan_from_validated(plan)
        problems = plan.problems(self.cfg.links)
        if problems:
            self.config_error = "; ".join(problems)[:2000]
            return problems
        self.plan = plan
        self.scheduler.apply_plan(plan)
        self.config_version = version
        self.config_error = None
        log.info("test plan applied (version %s): %d test(s)", version, len(plan.tests))
        return []

    def set_config_error(self, text: str | None) -> None:
        """Record why a remote plan was refused (shown in the next status message)."""
        self.config_error = text[:2000] if text else None

    # ------------------------------------------------------------------ clock

    def clock_state(self) -> ClockState:
        """The clock's state now (cached per call site by the caller if needed)."""
        state = clock_state(self.cfg.clock.not_before, self.clock.wall())
        if self._clock_state is not None and state != self._clock_state:
            log.info("clock state: plausible=%s synced=%s", state.plausible, state.synced)
        self._clock_state = state
        return state

    def _clock_ok(self) -> bool:
        state = self.clock_state()
        ok = state.plausible and (state.synced or self.cfg.clock.policy == "flag")
        if not ok and not self._holding:
            log.warning("system clock reads %s (%s): holding tests until it is synchronised",
                        format_time(self.clock.wall()),
                        "unsynchronised" if state.plausible else
                        f"before {self.cfg.clock.not_before}")
        self._holding = not ok
        return ok

    # ------------------------------------------------------------------ tests

    async def execute(self, job: Job) -> None:
        """Run one job and store its results (the scheduler's callback)."""
        results = await self.measure(job.test, job.spec, job.link)
        self.store(results, job.test, job.spec)
        now = time.monotonic()
        if now - self._trimmed_at >= TRIM_EVERY_S:
            self._trimmed_at = now
            trim_heap()

    async def line_busy(self, job: Job) -> float | None:
        """Seconds to postpone a throughput test because the link's interface already
        carries more than ``defer_when_busy_mbps`` (users' traffic would both disturb the
        measurement and be disturbed by it); None to run now. After ``defer_max``
        postponements in a row the test runs anyway (flagged by the method if busy).
        A link with a router counter source is judged by the router's counters (the
        office's users), falling back to the interface when the router does not answer."""
        spec = job.spec
        binding = self.bindings[job.link]
        iface = binding.interface
        if (spec.kind != "throughput" or spec.defer_when_busy_mbps is None
                or not (iface or binding.router) or job.deferrals >= spec.defer_max):
            return None
        mbps = None
        if binding.router is not None:
            mbps = await router_poll.line_mbps(binding.router)
        if mbps is None and iface:
            mbps = await interface_mbps(iface, BUSY_SAMPLE_S)
        if mbps is None or mbps <= spec.defer_when_busy_mbps:
            return None
        log.info("%s on %s postponed %g s: line busy (%.1f Mb/s > %g)", job.test, job.link,
                 spec.defer_s, mbps, spec.defer_when_busy_mbps)
        return spec.defer_s

    async def measure(self, test: str, spec: Spec, link: str) -> list[Result]:
        """Run ``spec`` on ``link`` and return its results; failures become results."""
        flags = self.clock_state().flags
        ctx = MethodContext(probe_id=self.cfg.probe_id, agent_version=__version__,
                            link=self.bindings[link], flags=flags)
        plugin = registry.get(spec.method)()
        started, t0 = self.clock.wall(), time.monotonic()
        target = spec.options.target
        try:
            results = await asyncio.wait_for(plugin.run(ctx, spec.options),
                                             spec.options.timeout_s + GRACE_S)
        except TimeoutError:
            results = [make_result(ctx, spec.method, target, started, time.monotonic() - t0,
                                   error=("timeout", f"{test}: no result after "
                                                     f"{spec.options.timeout_s + GRACE_S:g} s"))]
        except asyncio.CancelledError:
            # Shutdown: record the interruption (honest data), then let the cancel through.
            self.store([make_result(ctx, spec.method, target, started,
                                    time.monotonic() - t0,
                                    error=("aborted", f"{test}: agent stopped during the test"))],
                       test, spec)
            raise
        except Exception as exc:
            log.exception("method %s crashed", spec.method)
            results = [make_result(ctx, spec.method, target, started, time.monotonic() - t0,
                                   error=("internal", f"{type(exc).__name__}: {exc}"))]
        modem = self.bindings[link].modem
        if modem is not None and spec.kind == "throughput":
            results = with_radio(results, await radio.read(modem))
        if flags:  # a method that forgot the context's flags still gets them
            results = [r if set(flags) <= set(r.flags) else r.with_flags(flags)
                       for r in results]
        return results

    def store(self, results: Iterable[Result], test: str, spec: Spec) -> None:
        """Commit results to the spool, count their bytes, wake the publisher."""
        results = list(results)
        if not results:
            return
        topic = self.topics.results(self.cfg.probe_id)
        self.results_made += len(results)
        for r in results:
            self.last_result_at = max(self.last_result_at or r.started_at, r.started_at)
        month = month_key(self.clock.wall(), self.scheduler.tz)
        by_link: dict[str, float] = {}
        last: dict[str, str] = {}
        for r in results:
            by_link[r.link] = by_link.get(r.link, 0.0) + \
                float(r.metrics.values().get("bytes", 0))
            last[r.link] = format_time(r.started_at)
        ledger = LedgerUpdate(
            usage={(link, month): nbytes for link, nbytes in by_link.items()},
            estimates={(test, link): nbytes for link, nbytes in by_link.items()
                       if spec.kind == "throughput" and nbytes > 0},
            last_results=last,
            # Data moved on a budgeted link: committed at once even while results wait in
            # memory for their receipts (write-behind), so a power cut cannot make the
            # agent forget what the SIM has used.
            urgent=any(nbytes > 0 and self.plan.budget_bytes(link) is not None
                       for link, nbytes in by_link.items()))
        try:
            # Results and ledger in one transaction: a lost result is not counted
            # against the budget either (it is counted in spool_lost).
            self.spool.put(((str(r.id), topic, r.to_json()) for r in results), ledger)
        except SpoolError as exc:
            self._lost(len(results), exc)
            return
        if self.publisher is not None:
            self.publisher.notify()
        # No state file rewrite per result: on a probe each one is a block written to the
        # SD card (1,400 a day for the example plan); the heartbeat rewrites it.

    def _lost(self, n: int, exc: SpoolError) -> None:
        first = self.spool_lost == 0 or time.monotonic() - self._loss_logged_at > \
            LOSS_LOG_EVERY_S
        if self._episode_lost_base is None:
            self._episode_lost_base = self.spool_lost
        self.spool_lost += n
        if first:
            self._loss_logged_at = time.monotonic()
            log.error("%s: %d result(s) lost (%d since start). Free space there: the agent "
                      "recovers by itself when writes succeed again, and exits 1 after "
                      "[spool] unusable_exit_s = %g s of failures", exc, n, self.spool_lost,
                      self.cfg.spool.unusable_exit_s)

    def expected_runs_per_day(self) -> dict[str, float]:
        """Per link, the test runs per day the current plan schedules: the sum over its
        jobs (enabled tests on that link) of 86400 / interval. The interval is the one the
        scheduler uses now: a metered link's throughput tests stretched by the budget, 0
        runs for a job stopped because the budget is spent. Busy-line deferrals and a held
        clock are not subtracted (a deferred run still happens, later)."""
        out = {name: 0.0 for name in self.cfg.links}
        for job in self.scheduler.jobs.values():
            if job.budget_stopped:
                continue
            try:
                every = self.scheduler.effective_every(job)
            except Exception:  # a ledger read failing must not break the status message
                every = job.spec.every_s
            if every:
                out[job.link] = out.get(job.link, 0.0) + 86400.0 / every
        # Rounded (the collector needs no more) and capped at the contract's limit.
        return {k: min(round(v, 3), MAX_RUNS_PER_DAY) for k, v in out.items()}

    # ------------------------------------------------------------------ status

    def status_message(self, state: str = "online") -> dict[str, Any]:
        """The status message now (also the last will, with ``state=offline``): the
        contract's ``StatusMessage`` fields as plain data, written by
        :func:`netmon.wire.encode_status` (no pydantic in the run time, issue 20)."""
        wall = self.clock.wall()
        month = month_key(wall, self.scheduler.tz)
        usage = self.spool.usage(month) if state == "online" else {}
        last = self.spool.last_results() if state == "online" else {}
        stats = self.spool.stats() if state == "online" else None
        links = [
            {"name": name, "access": link.access, "isp": link.isp,
             "data_used_bytes": int(usage.get(name, 0)),
             "data_budget_bytes": self.plan.budget_bytes(name),
             "last_result_at": last.get(name)}
            for name, link in self.cfg.links.items()]
        plausible = wall.date() >= self.cfg.clock.not_before
        return {
            "schema": SCHEMA_VERSION, "probe_id": self.cfg.probe_id, "state": state,
            "at": wall if plausible else None, "agent_version": __version__,
            "started_at": self.started_wall if plausible else None,
            "uptime_s": round(time.monotonic() - self.started_mono, 3),
            "spool_depth": stats.depth if stats else 0,
            "spool_evicted": stats.evicted if stats else 0,
            "last_result_at": self.last_result_at,
            "clock_synced": self._clock_state.synced if self._clock_state else None,
            "links": links, "config_version": self.config_version,
            "config_error": self.config_error,
            "awaiting_receipt": stats.awaiting_receipt if stats and self.cfg.spool.receipts
            else None,
            "spool_lost": self.spool_lost if state == "online" else None,
            "results_maybe_lost": self.unclean_stop.results_maybe_lost
            if state == "online" and self.unclean_stop is not None else None,
            "spool_error": self.spool.error[:2000] if state == "online" and self.spool.error
            else None,
            "expected_runs_per_day": self.expected_runs_per_day() if state == "online"
            else None,
            "update": self._update_status() if state == "online" else None,
            "oldest_waiting_at": datetime.fromtimestamp(stats.oldest_spooled_at, UTC)
            if stats and stats.oldest_spooled_at and plausible else None,
            "board_model": self.board_model or None}

    def _update_status(self) -> Any:
        if self.updater is None:
            return None
        try:
            return self.updater.status()
        except (OSError, ValueError) as exc:  # a broken state file must not stop status
            log.warning("update state unreadable: %s", exc)
            return None

    def _spooled_total(self) -> int | None:
        try:
            return self.spool.stats().spooled
        except sqlite3.Error:
            return None

    def write_state(self, force: bool = True) -> None:
        """The state file ``netmon-agent status`` reads (atomic replace). ``force=False``
        (the heartbeat): skipped when only times and progress counters changed since the
        last write, up to :data:`STATE_REFRESH_S` (the SD card; issue 20); SIGUSR1 (sent
        by ``status``) forces one."""
        path = self.cfg.state_path
        info = self.publisher.info if self.publisher else None
        data = {
            "pid": os.getpid(), "written_at": format_time(self.clock.wall()),
            "agent_version": __version__,
            "broker": {"host": self.cfg.broker.host, "port": self.cfg.broker.port,
                       "connected": bool(info and info.connected),
                       "last_error": info.last_error if info else None,
                       "published": info.published if info else 0,
                       "acked": info.acked if info else 0,
                       "resent": info.resent if info else 0,
                       "receipts": info.receipts if info else 0,
                       "receipted": info.receipted if info else 0,
                       "bad_receipts": info.bad_receipts if info else 0},
            "status": json.loads(encode_status(self.status_message())),
            # One consistent snapshot: results_made == spooled (this run) + lost.
            "results": {"made": self.results_made, "lost": self.spool_lost,
                        "spooled_total": self._spooled_total()},
            # What is in memory, not in the spool file ``status`` reads (write-behind).
            "spool_memory": {"held": self.spool.held,
                             "last_results": self.spool.last_results()},
            "unclean_stop": None if self.unclean_stop is None else {
                "results_maybe_lost": self.unclean_stop.results_maybe_lost,
                "write_delay_s": self.unclean_stop.write_delay_s,
                "previous_pid": self.unclean_stop.pid,
                "previous_started_at": self.unclean_stop.started_at},
            "jobs": {j.key: {"runs": j.runs, "running": j.running,
                             "budget_stopped": j.budget_stopped}
                     for j in self.scheduler.jobs.values()},
        }
        if not force and _unchanged(self._state_same, data) and \
                time.monotonic() - self._state_at < STATE_REFRESH_S:
            return
        self._state_same, self._state_at = data, time.monotonic()
        text = json.dumps(data, indent=1)
        tmp = path.with_suffix(".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text)
            tmp.replace(path)
        except OSError:
            # A full disk cannot hold a second copy; overwrite the file in place so
            # ``status`` still shows the spool error (a reader may catch it half written
            # and report the state as unreadable: better than showing the past).
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            with contextlib.suppress(OSError), open(path, "r+", encoding="utf-8") as fh:
                fh.write(text)
                fh.truncate()

    # ------------------------------------------------------------------ main loops

    def request_stop(self) -> None:
        """Ask :meth:`run` to finish (signal handlers call this)."""
        self._stop.set()

    async def run(self) -> None:
        """The service: schedule tests, publish, heartbeat, until :meth:`request_stop`."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        # ``netmon-agent status`` asks for a fresh state file (see write_state).
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGUSR1, self.write_state)
        self.clock_state()
        self._begin_spool()
        self._attach_remote_config()
        self._attach_updates()
        if self.publisher is not None:
            await self.publisher.start()
        tasks = [asyncio.create_task(self.scheduler.run(), name="scheduler"),
                 asyncio.create_task(self._heartbeat(), name="heartbeat"),
                 asyncio.create_task(self._spool_watch(), name="spool-watch")]
        if self.updater is not None and self.updater.on_trial():
            tasks.append(asyncio.create_task(self.updater.watch_health(), name="update-health"))
        wd = watchdog_interval()
        if wd:
            tasks.append(asyncio.create_task(self._watchdog(wd), name="watchdog"))
        sd_notify("READY=1")
        self.write_state()
        trim_heap()
        log.info("netmon-agent %s running as %s: %d test job(s), spool %s (%d waiting)",
                 __version__, self.cfg.probe_id, len(self.scheduler.jobs),
                 self.cfg.spool.path, self.spool.depth())
        try:
            await self._stop.wait()
        finally:
            sd_notify("STOPPING=1")
            log.info("stopping: aborting running tests, keeping the spool")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.publisher is not None:
                await self.publisher.stop()
            self.write_state()
            with contextlib.suppress(sqlite3.Error):  # a full disk may refuse the checkpoint
                self.spool.close()
        if self._fatal is not None:
            raise self._fatal

    def _begin_spool(self) -> None:
        """Mark the spool in use (cleared by a clean stop) and report, never silently, a
        previous run that ended without one: its held results may be lost."""
        if self.publisher is None:
            return
        self.unclean_stop = prev = self.spool.begin()
        if prev is None:
            return
        bound = f"up to {prev.results_maybe_lost} result(s)"
        log.warning("the previous run (pid %s, started %s) did not stop cleanly (power cut, "
                    "kill or crash): %s held in memory for their receipt ([spool] "
                    "write_delay_s = %g s) may have been lost, and up to %.0f min of the "
                    "latency tests' data usage", prev.pid, prev.started_at, bound,
                    prev.write_delay_s, LEDGER_FLUSH_S / 60)

    async def _spool_watch(self) -> None:
        """While spool writes fail: try one every :data:`SPOOL_WATCH_S` when no result was
        stored meanwhile, log the recovery, and stop the agent (exit 1) after
        ``unusable_exit_s`` without a successful write."""
        limit = self.cfg.spool.unusable_exit_s
        was_failing: float | None = None
        while True:
            await asyncio.sleep(SPOOL_WATCH_S)
            since = self.spool.failing_since
            if since is not None and time.monotonic() - since >= SPOOL_WATCH_S:
                self.spool.probe()
                since = self.spool.failing_since
            if since is None:
                if was_failing is not None:
                    base = self._episode_lost_base or 0
                    log.warning("spool %s writable again after %.0f s; %d result(s) lost "
                                "meanwhile (%d since start)", self.cfg.spool.path,
                                time.monotonic() - was_failing, self.spool_lost - base,
                                self.spool_lost)
                    was_failing = None
                    self.write_state()
                self._episode_lost_base = None
                continue
            if was_failing is None:
                was_failing = since
                self.write_state()
            if time.monotonic() - since > limit:
                self._fatal = SpoolError(
                    f"spool unusable for {time.monotonic() - since:.0f} s (more than "
                    f"[spool] unusable_exit_s = {limit:g}): {self.spool.store_error}; "
                    f"{self.spool_lost} result(s) lost since start; exiting with status 1 "
                    f"so systemd restarts the agent")
                self.request_stop()  # cmd_run logs the reason and exits 1
                return

    def _attach_remote_config(self) -> None:
        """Wire signed test plans over MQTT (issue 10), when ``[remote_config]`` names NOC
        keys.

        Restores the persisted plan (so a probe rebooted with the broker unreachable runs
        the last applied config), and subscribes, QoS 1, to ``Topics.config(probe_id)``
        through the publisher. Each message is handled on the event loop;
        ``config_version`` / ``config_error`` follow, and a status message goes out at once
        so the NOC sees the outcome without waiting for the heartbeat.

        Raises SigningError (``key_missing`` / ``bad_key``) for an unusable key file.
        """
        cfg = self.cfg
        if not cfg.remote_config.enabled:
            return
        # The plan comes as agent.runconfig builds it, in the validation child.
        remote = RemoteConfig[Any](cfg.probe_id, cfg.remote_config,
                                   plan_validator(cfg.links), self._apply_remote_plan,
                                   file_targets=plan_targets(cfg.plan()),
                                   state_dir=cfg.state_dir or cfg.spool.path.parent)
        self.remote = remote
        restored = remote.restore()
        if restored.applied and restored.plan is not None:
            self.apply_plan(restored.plan, restored.version)
        self.config_version = remote.version
        self.config_error = remote.error
        if self.publisher is not None:
            self.publisher.add_subscription(self.topics.config(cfg.probe_id),
                                            self._on_config_message)

    def _attach_updates(self) -> None:
        """Wire signed agent updates (issue 18) when ``[update] root`` is set: subscribe
        to the release manifest; the trusted keys are ``[remote_config] public_keys``."""
        from agent.enroll import hardware_facts

        self.board_model = hardware_facts().board_model or None
        cfg = self.cfg
        if cfg.update.root is None or self.publisher is None:
            return
        from agent.budget import seconds_left_in_month
        from agent.update import TrialHealth, Updater
        from netmon.sigcheck import load_public_key

        trusted = [load_public_key(p) for p in cfg.remote_config.public_keys]
        link = cfg.update.link or next(iter(cfg.links))
        # It downloads in a worker thread and calls these from there: the spool's connection
        # and transactions are this loop's (another thread's BEGIN or COMMIT lands inside
        # them: results failed to store, counted lost), so they run on the loop.
        loop = asyncio.get_running_loop()
        self.updater = Updater(cfg.update, cfg.probe_id, trusted, link,
                               _on_loop(loop, self._count_download),
                               _on_loop(loop, self._budget_left), self._update_healthy,
                               self._restart, month_left_s=lambda: seconds_left_in_month(
                                   self.clock.wall(), self.scheduler.tz))
        self.publisher.add_subscription(self.topics.updates(), self._on_update_message)
        if self.updater.on_trial():
            # Only results this version measures, acknowledged end to end, prove it works.
            self.trial_health = TrialHealth(__version__)
            self.publisher.watch = self.trial_health

    def _count_download(self, link: str, nbytes: int) -> None:
        self.spool.add_usage(link, month_key(self.clock.wall(), self.scheduler.tz), nbytes)

    def _budget_left(self, link: str) -> float | None:
        budget = self.plan.budget_bytes(link)
        if budget is None:
            return None
        used = self.spool.usage(month_key(self.clock.wall(), self.scheduler.tz)).get(link, 0.0)
        reserve = budget * self.cfg.links[link].budget_reserve_pct / 100 \
            if link in self.cfg.links else 0.0
        return max(0.0, budget - reserve - used)

    def _update_healthy(self) -> tuple[bool, str]:
        info = self.publisher.info if self.publisher else None
        if info is None or self.trial_health is None:
            return False, "no broker connection or health watch"
        ok, problem = self.trial_health.verdict(info.connected, info.last_error,
                                                self.cfg.spool.receipts)
        if ok and self.publisher is not None:
            self.publisher.watch = None  # proven: stop reading every payload
        return ok, problem

    def _restart(self) -> None:
        self.exit_code = EXIT_RESTART
        self.request_stop()

    def _on_update_message(self, payload: bytes) -> None:
        if self.updater is None:
            return
        task = asyncio.ensure_future(self.updater.handle(payload))

        def done(t: asyncio.Future[None]) -> None:
            if not t.cancelled() and t.exception() is not None:
                log.error("update failed: %r", t.exception())
            if self.publisher is not None and not self._stop.is_set():
                status = asyncio.ensure_future(self.publisher.publish_status("online"))
                status.add_done_callback(lambda s: s.cancelled() or s.exception())

        task.add_done_callback(done)

    def _apply_remote_plan(self, plan: Any, version: int) -> None:
        # Raising makes RemoteConfig put the previous envelope back and report apply_failed.
        problems = self.apply_plan(plan, version)
        if problems:
            raise ValueError("; ".join(problems))

    def _on_config_message(self, payload: bytes) -> None:
        remote = self.remote
        if remote is None:  # only subscribed once attached
            return
        decision = remote.handle(payload)
        self.config_version = remote.version
        self.config_error = remote.error
        if decision.outcome in ("applied", "rejected") and self.publisher is not None:
            task = asyncio.ensure_future(self.publisher.publish_status("online"))
            # A lost connection is fine: the next connection announces the status anyway.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _heartbeat(self) -> None:
        # The state file follows the heartbeat (plus start, stop and spool failures), not
        # a faster clock of its own: each rewrite is a block on the SD card (issue 20).
        beat = self.cfg.heartbeat_s
        while True:
            await asyncio.sleep(beat)
            self.write_state(force=False)
            trim_heap()
            if self.publisher is not None:
                with contextlib.suppress(ConnectionError, TimeoutError):
                    await asyncio.wait_for(self.publisher.publish_status("online"), 30)

    async def _watchdog(self, every: float) -> None:
        # From the event loop itself: a wedged loop stops the pings and systemd restarts us.
        while True:
            sd_notify("WATCHDOG=1")
            await asyncio.sleep(every)

    async def run_once(self, only: list[str] | None = None,
                       emit: Callable[[str, str, list[Result]], None] | None = None
                       ) -> list[Result]:
        """Run the plan's tests once each, one after another (so throughput tests never
        overlap), store the results when publishing, and hand each test's results to
        ``emit(test, link, results)`` as they come — ``netmon-agent once``."""
        state = self.clock_state()
        if not state.plausible:
            raise RuntimeError(f"system clock reads {format_time(self.clock.wall())}, before "
                               f"{self.cfg.clock.not_before}; set the clock first")
        out: list[Result] = []
        for name, spec in self.plan.tests.items():
            if only and name not in only:
                continue
            for link in spec.links_on(list(self.cfg.links)):
                log.info("running %s on %s", name, link)
                results = await self.measure(name, spec, link)
                if self.publisher is not None:
                    self.store(results, name, spec)
                out.extend(results)
                if emit is not None:
                    emit(name, link, results)
        return out



def _on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., _T]) -> Callable[..., _T]:
    """``fn`` made callable from a worker thread: there it runs on ``loop`` (the caller
    waits for its result or exception); on the loop's own thread it runs directly."""
    def call(*args: Any) -> _T:
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # no loop runs in this thread
            running = None
        if running is loop:
            return fn(*args)

        async def run() -> _T:
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), loop).result()
    return call


def state_file(path: Path) -> dict[str, Any] | None:
    """Read the runtime's state file, None when absent or unreadable."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data
