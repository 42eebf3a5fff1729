"""``netmon-collector run --config FILE``: run the collector until SIGTERM/SIGINT.

SIGHUP reloads the site registry without a restart and without losing messages.
Exit codes: 0 stopped cleanly, 1 runtime failure (e.g. InfluxDB refused credentials),
2 bad config or registry.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from collector import config as collector_config
from collector.core.registry import RegistryError
from netmon.settings import ConfigError, SecretFileError


def register(sub: Any) -> None:
    """Add the ``run`` subcommand."""
    p = sub.add_parser("run", help="run the collector (MQTT -> InfluxDB)",
                       description="Subscribe to every probe's results and status, validate, "
                                   "enrich from the site registry and write to InfluxDB; "
                                   "acknowledge each message only once it is stored.")
    p.add_argument("--config", type=Path, required=True, help="collector TOML file")
    p.add_argument("--log-level", default="INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def _supervise(args: argparse.Namespace, workers: int) -> int:
    """Run ``workers`` collector processes sharing one subscription; forward signals.

    If one exits unexpectedly, stop the others and exit with its code (1 at least), so
    systemd restarts the whole set.
    """
    log = logging.getLogger(__name__)
    argv = [sys.executable, "-m", "collector.cli", "run", "--config", str(args.config),
            "--log-level", args.log_level]
    procs = [subprocess.Popen([*argv, "--worker", str(i)]) for i in range(workers)]
    log.info("started %d collector workers: %s", workers, [p.pid for p in procs])
    stopping = threading.Event()

    def forward(signum: int, frame: object) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping.set()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    code = 0
    while any(p.poll() is None for p in procs):
        for p in procs:
            rc = p.poll()
            if rc is not None and rc != 0 and not stopping.is_set():
                log.error("worker %d exited with %d; stopping the others", p.pid, rc)
                code = rc if rc > 0 else 1
                forward(signal.SIGTERM, None)
        time.sleep(0.2)
    for p in procs:
        if p.returncode and p.returncode > 0:
            code = max(code, p.returncode)
    return code


def run(args: argparse.Namespace) -> int:
    """Load config and registry, run until a signal; return the exit code."""
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request at INFO: thousands a minute, and URLs may carry credentials.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        cfg = collector_config.load(args.config)
        problems = collector_config.preflight(cfg)
        if problems:
            raise ConfigError(args.config, problems)
        registry = collector_config.open_registry(cfg, args.config)
    except (ConfigError, RegistryError) as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    from collector.core.gcpolicy import tune_for_service
    from collector.core.service import Collector, worker_config  # heavy imports after config

    if cfg.mqtt.workers > 1 and args.worker is None:
        return _supervise(args, cfg.mqtt.workers)
    if args.worker is not None:
        cfg = worker_config(cfg, args.worker)

    try:
        collector = Collector(cfg, registry)
    except (OSError, SecretFileError) as exc:  # e.g. an unusable password or TLS file
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        logging.getLogger(__name__).info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, lambda *_: collector.reload_registry())
    tune_for_service()  # start-up is done: what exists now lives as long as the process
    code = collector.run(stop)
    if collector.fatal:
        print(f"error: {collector.fatal}", file=sys.stderr)
    return code
