"""``netmon-collector check-config --config FILE``: validate the config, the reference map
of units and the site registry without starting anything. Exit 0 when usable, 2 naming
every bad key otherwise."""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

from collector import config as collector_config
from collector.core.registry import RegistryError, load_sites
from netmon.settings import ConfigError


def register(sub: Any) -> None:
    """Add the ``check-config`` subcommand."""
    p = sub.add_parser("check-config", help="validate the collector config and site registry",
                       description="Validate the config file (and NETMON_ overrides), the "
                                   "site registry and secret files; exit 2 naming every "
                                   "problem.")
    p.add_argument("--config", type=Path, required=True, help="collector TOML file")
    p.add_argument("--json", action="store_true", help="machine-readable result")
    p.set_defaults(func=run)


def _secret_problems(cfg: collector_config.CollectorConfig) -> tuple[list[str], list[str]]:
    problems, warnings = [], []
    for key, path in (("mqtt.password_file", cfg.mqtt.password_file),
                      ("influxdb.password_file", cfg.influxdb.password_file),
                      ("influxdb.token_file", cfg.influxdb.token_file)):
        if path is None:
            continue
        try:
            mode = os.stat(path).st_mode
            with open(path, encoding="utf-8") as fh:
                fh.read(1)
        except OSError as exc:
            problems.append(f"{key}: cannot read {path}: {exc.strerror}")
            continue
        if mode & (stat.S_IRWXG | stat.S_IRWXO) & ~stat.S_IRGRP:
            warnings.append(f"{key}: {path} is readable by others; chmod 0600")
    for key, path in (("mqtt.ca_file", cfg.mqtt.ca_file), ("mqtt.cert_file", cfg.mqtt.cert_file),
                      ("mqtt.key_file", cfg.mqtt.key_file)):
        if path is not None and not os.access(path, os.R_OK):
            problems.append(f"{key}: cannot read {path}")
    return problems, warnings


def run(args: argparse.Namespace) -> int:
    """Validate; print the outcome; 0 ok, 2 bad."""
    problems: list[str] = []
    warnings: list[str] = []
    sites = units = 0
    try:
        cfg = collector_config.load(args.config)
    except ConfigError as exc:
        problems = exc.problems
    else:
        try:
            unit_map = collector_config.unit_map(cfg, args.config)
        except ConfigError as exc:
            problems += exc.problems  # the registry cannot be checked without its map
        else:
            units = len(unit_map.units)
            try:
                sites = len(load_sites(cfg.registry.path, unit_map))
            except RegistryError as exc:
                problems += [f"registry ({cfg.registry.path}): {p}" for p in exc.problems]
        problems += collector_config.preflight(cfg)
        sp, warnings = _secret_problems(cfg)
        problems += sp
        if not cfg.mqtt.tls and cfg.mqtt.host not in ("127.0.0.1", "localhost", "::1"):
            warnings.append("mqtt.tls: false with a non-loopback broker sends results in clear")
        if cfg.mqtt.session_expiry_s < 3600:
            warnings.append(f"mqtt.session_expiry_s: {cfg.mqtt.session_expiry_s} s: messages "
                            "published while the collector is down longer than that are lost")
        if cfg.writer.batch_size > cfg.mqtt.receive_maximum * cfg.mqtt.workers:
            warnings.append("writer.batch_size is above mqtt.receive_maximum: batches can "
                            "never fill, every flush waits for linger_s/flush_interval_s")
    ok = not problems
    if args.json:
        print(json.dumps({"ok": ok, "config": str(args.config), "sites": sites,
                          "units": units, "problems": problems, "warnings": warnings},
                         ensure_ascii=False))
    else:
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        if ok:
            print(f"{args.config}: OK ({sites} sites, {units} units in the reference map)")
        else:
            print(f"invalid config {args.config}:", file=sys.stderr)
            for p in problems:
                print(f"  - {p}", file=sys.stderr)
    return 0 if ok else 2
