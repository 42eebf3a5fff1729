"""``netmon-agent run | once | check-config | status``.

Exit codes: 0 ok, 1 runtime failure (or, for ``once``, a test that failed or results not
delivered), 2 bad usage or invalid config.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from netmon.configfile import ConfigError

if TYPE_CHECKING:
    from agent.runconfig import RunConfig

DEFAULT_CONFIG = Path("/etc/netmon/agent.toml")
T = TypeVar("T")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the four runtime commands."""
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, default=Path(os.environ.get(
            "NETMON_AGENT_CONFIG", DEFAULT_CONFIG)),
            help=f"agent TOML file (default: $NETMON_AGENT_CONFIG or {DEFAULT_CONFIG})")
        p.add_argument("--log-level", default="info",
                       choices=["debug", "info", "warning", "error"], help="default: info")

    p = sub.add_parser("run", help="the service: measure on schedule, spool, publish",
                       description="Run the agent until SIGTERM. Refuses to start (exit 2) "
                                   "on an invalid config. Once the config is valid the "
                                   "process replaces itself (same PID) with the run time, "
                                   "which does not load the validation code; set "
                                   "NETMON_AGENT_ONE_PROCESS=1 to stay in one process "
                                   "(debugging).")
    common(p)
    # Internal: the run-time image's descriptor holding the validated config.
    p.add_argument("--handoff-fd", type=int, metavar="FD", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("once", help="run the configured tests once",
                       description="Run every configured test (or --test NAME) once on each "
                                   "of its links, one after another. Results are spooled and "
                                   "published unless --no-publish. Exit 1 when a test failed "
                                   "or results could not be delivered in time.")
    common(p)
    p.add_argument("--json", action="store_true",
                   help="print each result message as one JSON line on stdout")
    p.add_argument("--no-publish", action="store_true",
                   help="neither spool nor publish; only print")
    p.add_argument("--test", action="append", metavar="NAME",
                   help="only this test (repeatable)")
    p.add_argument("--publish-timeout", type=float, default=30.0, metavar="S",
                   help="wait this long for the broker's acknowledgements (default 30); "
                        "what is not acknowledged stays spooled for the service")
    p.set_defaults(func=cmd_once)

    p = sub.add_parser("check-config", help="validate the config file",
                       description="Exit 0 when the config is valid, 2 otherwise, naming "
                                   "every bad key and why.")
    common(p)
    p.add_argument("--json", action="store_true", help="machine-readable verdict")
    p.add_argument("--skip-files", action="store_true",
                   help="do not check that CA, certificate, key and password files exist "
                        "(validating a template away from the probe)")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("update-init", help="set up the update root for this version",
                       description="Create [update] root's layout for the running version: "
                                   "versions/<v>, current and stable (docs/fleet.md).")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_update_init)

    p = sub.add_parser("update-guard", help="before each start: roll back a failed update",
                       description="Run from the stable environment before the agent "
                                   "starts (ExecStartPre): counts the starts of a version "
                                   "on trial and switches back to the previous one when it "
                                   "missed its health deadline or did not stay up.")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_update_guard)

    p = sub.add_parser("status", help="spool depth, last results, broker connection",
                       description="Read the spool and the running agent's state file.")
    common(p)
    p.add_argument("--json", action="store_true", help="machine-readable status")
    p.set_defaults(func=cmd_status)


def _logging(level: str) -> None:
    # Under systemd the journal adds its own timestamps.
    fmt = "%(levelname)s %(name)s: %(message)s" if os.environ.get("JOURNAL_STREAM") else \
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr, force=True)


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    # asyncio's own loop, not uvloop: the runtime's loop only schedules tests and moves
    # spool rows (paho does the MQTT work in its thread), and the spool drain measured no
    # faster on uvloop, which costs 1.9 MB resident and three threads (issue 20). The HTTP
    # engine keeps uvloop on its own loop, loaded only when an http test runs.
    return asyncio.run(coro)


def _load(path: Path, check_files: bool = True) -> Any:
    from agent import config
    return config.load(path, check_files=check_files)


def _free_bytes(directory: Path) -> int | None:
    """Bytes available to the agent on ``directory``'s filesystem, None if unknown."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def enroll_if_needed(data: dict[str, Any], stop: threading.Event | None = None) -> bool:
    """Run enrollment when the file config's ``[enrollment]`` asks for it and no identity
    exists yet; True when this call enrolled the probe. ``data`` is the parsed TOML (the
    rest of the config cannot be validated before the probe id is known)."""
    from pydantic import ValidationError

    from agent.enroll import EnrollmentSettings
    from netmon.settings import describe_errors

    try:
        settings = EnrollmentSettings.model_validate(data.get("enrollment") or {})
    except ValidationError as exc:
        raise ConfigError(None, describe_errors(exc)) from None
    if not settings.enabled or settings.identity_path.exists():
        return False
    # Only an enrolling probe pays for these: netmon.signing brings cryptography (about
    # 10 MB resident, issue 20), which an enrolled probe without remote configuration
    # never needs.
    from agent.config import BrokerConfig
    from agent.enroll import Enroller
    from agent.remote_config import RemoteConfigSettings
    from netmon.contract import Topics
    from netmon.signing import SigningError, load_public_key

    try:
        broker = BrokerConfig.model_validate(data.get("broker") or {})
        remote = RemoteConfigSettings.model_validate(data.get("remote_config") or {})
    except ValidationError as exc:
        raise ConfigError(None, describe_errors(exc)) from None
    problems = settings.file_problems()
    if problems:
        raise ConfigError(None, problems)
    try:
        trusted = [load_public_key(p) for p in remote.public_keys]
    except SigningError as exc:
        raise ConfigError(None, [f"remote_config.public_keys: {exc}"]) from None
    enroller = Enroller(settings, broker, trusted, Topics(data.get("topic_prefix",
                                                                   "netmon/v1")))
    if stop is not None:
        enroller.stop = stop
    started = time.monotonic()
    enroller.run()
    logging.getLogger("netmon.agent.enroll").info("enrollment took %.1f s",
                                                  time.monotonic() - started)
    return True


# --------------------------------------------------------------------------- commands


def cmd_update_init(args: argparse.Namespace) -> int:
    """``update-init``."""
    from agent.update import init

    try:
        links = init(args.root)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"update-init: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"root": str(args.root), **links}))
    else:
        adopted = f"adopted {links['adopted']} from the base environment; " \
            if links["adopted"] else ""
        print(f"{args.root}: {adopted}current is {links['current']}, "
              f"stable is {links['stable']}")
    return 0


def cmd_update_guard(args: argparse.Namespace) -> int:
    """``update-guard``: never fails the start (a broken guard must not stop the agent)."""
    from agent.update import guard

    _logging("info")
    try:
        what = guard(args.root)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        what = f"update guard: {exc!r}"
    print(json.dumps({"guard": what}) if args.json else f"update guard: {what}")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate; print the problems or a summary."""
    try:
        cfg = _load(args.config, check_files=not args.skip_files)
    except ConfigError as exc:
        if args.json:
            print(json.dumps({"ok": False, "config": str(args.config),
                              "problems": exc.problems}))
        else:
            print(exc.report(), file=sys.stderr)
        return 2
    plan = cfg.plan()
    if args.json:
        print(json.dumps({"ok": True, "config": str(args.config), "probe_id": cfg.probe_id,
                          "links": sorted(cfg.links), "tests": sorted(plan.tests)}))
    else:
        from agent.config import NOT_ENROLLED

        who = "a blank probe (enrols itself at the first run)" \
            if cfg.probe_id == NOT_ENROLLED else f"probe {cfg.probe_id}"
        print(f"{args.config}: ok — {who}, {len(cfg.links)} link(s) "
              f"({', '.join(cfg.links)}), {len(plan.tests)} test(s)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """The service: the start stage validates (and enrols a blank probe), then replaces
    itself with the run time (:mod:`agent.handoff`)."""
    _logging(args.log_level)
    if args.handoff_fd is not None:
        return _run_time(args.handoff_fd)
    from agent import handoff
    from agent.enroll import EnrollmentFailed
    from netmon.configfile import read_toml

    try:
        # A blank probe first gets its identity (agent/enroll.py), then runs as itself.
        enroll_if_needed(read_toml(args.config))
        cfg = _load(args.config)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    except EnrollmentFailed as exc:
        logging.getLogger("netmon.agent").error("enrollment: %s", exc)
        return exc.exit_code
    if not handoff.one_process():
        handoff.exec_runtime(cfg)
    from agent import runconfig

    # One process: the same run-time config, through the same JSON as the hand-over.
    return _serve(runconfig.from_validated(cfg))


def _run_time(fd: int) -> int:
    """The run-time image: the config the start stage validated, from ``fd``, as the
    run time's plain config (:mod:`agent.runconfig`: pydantic is never loaded here)."""
    from agent import handoff, runconfig

    try:
        cfg = runconfig.from_handoff(handoff.read_fd(fd))
    except handoff.HandoffError as exc:
        logging.getLogger("netmon.agent").error("%s", exc)
        return 2
    except (KeyError, TypeError, ValueError) as exc:  # a start stage of another version
        logging.getLogger("netmon.agent").error(
            "%s %d: the handed-over config is not this version's: %s: %s", handoff.FLAG, fd,
            type(exc).__name__, exc)
        return 2
    return _serve(cfg)


def _serve(cfg: RunConfig) -> int:
    """Run the service on a validated config until SIGTERM."""
    from agent.runtime import Runtime
    from agent.spool import SpoolError

    async def main() -> int:
        runtime = Runtime(cfg)
        await runtime.run()
        return runtime.exit_code

    try:
        return _run_async(main())
    except SpoolError as exc:
        logging.getLogger("netmon.agent").error("%s", exc)
        return 1


def cmd_once(args: argparse.Namespace) -> int:
    """Run tests once; print results."""
    _logging(args.log_level if sys.stderr.isatty() or args.log_level != "info" else "warning")
    try:
        cfg = _load(args.config, check_files=not args.no_publish)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    unknown = [t for t in args.test or () if t not in cfg.tests]
    if unknown:
        print(f"unknown test(s): {', '.join(unknown)}; configured: "
              f"{', '.join(cfg.tests) or '(none)'}", file=sys.stderr)
        return 2
    from agent.runtime import Runtime
    from agent.spool import SpoolError
    from netmon.wire import Result

    failed = 0
    progress = sys.stderr.isatty()

    def emit(test: str, link: str, results: list[Result]) -> None:
        nonlocal failed
        for r in results:
            failed += 0 if r.ok else 1
            if args.json:
                sys.stdout.write(r.to_json().decode() + "\n")
                sys.stdout.flush()
            else:
                what = r.error.code + ": " + r.error.message if r.error else \
                    ", ".join(f"{k}={v:g}" for k, v in r.metrics.values().items()
                              if not isinstance(v, bool))
                print(f"{test}@{link} {r.method} {r.target}: {what}")
            if progress and args.json:
                print(f"{test}@{link}: {'ok' if r.ok else 'failed'}", file=sys.stderr)

    async def main() -> bool:
        runtime = Runtime(cfg, publish=not args.no_publish, announce=False)
        try:
            if runtime.publisher is not None:
                await runtime.publisher.start()
            await runtime.run_once(args.test, emit)
            if runtime.publisher is None:
                return True
            delivered = await runtime.publisher.drain(args.publish_timeout)
            if not delivered:
                print(f"not all results acknowledged within {args.publish_timeout:g} s "
                      f"({runtime.spool.depth()} spooled for the service); broker: "
                      f"{runtime.publisher.info.last_error or 'not connected'}",
                      file=sys.stderr)
            return delivered
        finally:
            if runtime.publisher is not None:
                await runtime.publisher.stop()
            runtime.spool.close()

    try:
        delivered = _run_async(main())
    except (RuntimeError, SpoolError) as exc:
        print(f"netmon-agent once: {exc}", file=sys.stderr)
        return 1
    return 0 if delivered and not failed else 1


def _refresh_state(path: Path, wait_s: float = 3.0) -> None:
    """Ask the running agent (SIGUSR1) to rewrite its state file and wait for it, up to
    ``wait_s``: it rewrites the file on its own only when something other than its
    counters changed, or hourly (SD-card writes, issue 20). Without the right to signal
    it (another user), the file as it is ("as of" its time)."""
    import signal

    from agent.runtime import state_file

    state = state_file(path)
    try:
        pid = int((state or {}).get("pid", 0))
        # A stale file's pid may be another program's now: signal only the agent.
        if pid <= 0 or b"agent" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return
        before = path.stat().st_mtime_ns
        os.kill(pid, signal.SIGUSR1)
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            if path.stat().st_mtime_ns != before:
                return
        except OSError:
            pass  # being replaced
        time.sleep(0.02)


def cmd_status(args: argparse.Namespace) -> int:
    """Spool and connection state."""
    try:
        cfg = _load(args.config, check_files=False)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    from agent.runtime import state_file
    from agent.spool import Spool, SpoolError

    out: dict[str, Any] = {"probe_id": cfg.probe_id, "spool": str(cfg.spool.path)}
    _refresh_state(cfg.state_path)
    if cfg.spool.path.exists():
        try:
            with Spool(cfg.spool.path, readonly=True) as spool:
                st = spool.stats()
                out.update(spool_depth=st.depth, spool_bytes=st.bytes,
                           spool_evicted=st.evicted, awaiting_receipt=st.awaiting_receipt,
                           oldest_waiting_s=round(time.time() - st.oldest_spooled_at, 1)
                           if st.oldest_spooled_at else None,
                           last_results=spool.last_results())
        except (SpoolError, sqlite3.Error) as exc:
            print(f"cannot read spool {cfg.spool.path}: {exc}", file=sys.stderr)
            return 1
    else:
        out.update(spool_depth=0, spool_evicted=0, awaiting_receipt=0, last_results={})
    state = state_file(cfg.state_path)
    running = False
    if state is not None:
        try:
            os.kill(int(state.get("pid", 0)), 0)
            running = True
        except (OSError, ValueError):
            running = False
    out["agent_running"] = running
    out["broker"] = state.get("broker") if state else None
    out["state_written_at"] = state.get("written_at") if state else None
    status = (state or {}).get("status") or {}
    # Counted by the running agent (in memory: a result it could not spool is not in it).
    out["spool_lost"] = status.get("spool_lost")
    out["spool_error"] = status.get("spool_error")
    out["expected_runs_per_day"] = status.get("expected_runs_per_day")
    # Write-behind: results and ledger entries the running agent holds in memory (as of
    # its last state write) are not in the file yet.
    memory = (state or {}).get("spool_memory") or {} if running else {}
    out["held_in_memory"] = memory.get("held")
    for link, at in (memory.get("last_results") or {}).items():
        if at > out["last_results"].get(link, ""):  # RFC 3339 UTC: later sorts later
            out["last_results"][link] = at
    out["unclean_stop"] = (state or {}).get("unclean_stop")
    out["receipts"] = cfg.spool.receipts
    out["spool_free_bytes"] = _free_bytes(cfg.spool.path.parent)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"probe {out['probe_id']}: agent {'running' if running else 'not running'}")
    waiting = f"{out['spool_depth']} waiting"
    if cfg.spool.receipts:
        waiting += f" ({out['awaiting_receipt']} sent, awaiting the collector's receipt)"
    lost = f", {out['spool_lost']} lost since the agent started" \
        if out["spool_lost"] is not None else ""
    print(f"spool: {waiting}, {out['spool_evicted']} evicted{lost} ({out['spool']})")
    if out["held_in_memory"]:
        print(f"  and {out['held_in_memory']} result(s) held in memory for their receipt "
              f"([spool] write_delay_s; as of {out['state_written_at']})")
    unclean = out["unclean_stop"]
    if unclean:
        n = unclean.get("results_maybe_lost")
        bound = "an unknown number of" if n is None or n < 0 else f"up to {n}"
        print(f"WARNING: the run before this one did not stop cleanly: {bound} result(s) "
              "held in memory may have been lost")
    if out["spool_error"]:
        free = out["spool_free_bytes"]
        print(f"spool ERROR: {out['spool_error']}"
              + (f" ({free} bytes free on {cfg.spool.path.parent})" if free is not None
                 else ""))
    for link, at in sorted(out.get("last_results", {}).items()):
        print(f"last result on {link}: {at}")
    broker = out["broker"]
    if broker:
        conn = "connected" if broker.get("connected") else "not connected"
        err = f" — {broker['last_error']}" if broker.get("last_error") else ""
        print(f"broker {broker['host']}:{broker['port']}: {conn}{err} "
              f"(as of {out['state_written_at']})")
    return 0
