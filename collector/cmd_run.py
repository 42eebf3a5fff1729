"""``netmon-collector run --config FILE``: run the collector until SIGTERM/SIGINT.

SIGHUP reloads the site registry without a restart and without losing messages.
Exit codes: 0 stopped cleanly, 1 runtime failure (e.g. InfluxDB refused credentials),
2 bad config or registry.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from collector import config as collector_config
from collector.registry import Registry, RegistryError
from netmon.settings import ConfigError


def register(sub: Any) -> None:
    """Add the ``run`` subcommand."""
    p = sub.add_parser("run", help="run the collector (MQTT -> InfluxDB)",
                       description="Subscribe to every probe's results and status, validate, "
                                   "enrich from the site registry and write to InfluxDB; "
                                   "acknowledge each message only once it is stored.")
    p.add_argument("--config", type=Path, required=True, help="collector TOML file")
    p.add_argument("--log-level", default="INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load config and registry, run until a signal; return the exit code."""
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request at INFO: thousands a minute, and URLs may carry credentials.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        cfg = collector_config.load(args.config)
        registry = Registry(cfg.registry.path)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    except RegistryError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    from collector.service import Collector  # heavy imports only once config is good

    try:
        collector = Collector(cfg, registry)
    except OSError as exc:  # e.g. unreadable password file
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        logging.getLogger(__name__).info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, lambda *_: collector.reload_registry())
    code = collector.run(stop)
    if collector.fatal:
        print(f"error: {collector.fatal}", file=sys.stderr)
    return code
