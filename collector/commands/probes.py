"""``netmon-collector probes``: the NOC's view of the fleet and signed remote config.

    netmon-collector probes list [--json]
    netmon-collector probes config push (--probe ID ... | --all) --file PLAN.toml --key KEY
    netmon-collector probes config show --probe ID (--public-key PUB | --key KEY) [--json]
    netmon-collector probes keygen --private KEY --public PUB
    netmon-collector probes enroll list [--json]
    netmon-collector probes enroll approve --claim CODE --probe-id ID --commune-code CODE
                     --name NAME --latitude LAT --longitude LON --site-type TYPE --key KEY
    netmon-collector probes enroll reject (--claim CODE | --request ID) --reason TEXT --key KEY
    netmon-collector probes update push --version V --wheel FILE... --base-url URL
                     [--probe ID ... | --percent N] --key KEY
    netmon-collector probes update status [--json]

The broker and InfluxDB come from the collector config (``--config``); run ``config``
commands with the NOC broker account (``NETMON_MQTT__USERNAME=noc
NETMON_MQTT__PASSWORD_FILE=...``): probes and the collector may not write config topics.
See ``docs/fleet.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from collector.config import CollectorConfig, load, unit_map
from netmon.contract import PROBE_ID_PATTERN, Topics
from netmon.errors import NetmonError

# collector.fleet.* and netmon.signing (paho, cryptography) are imported by the commands
# that use them: every ``netmon-collector`` process, ``run`` above all, builds this
# parser, and would otherwise carry ~7 MB and ~0.25 s of imports it never uses.

DEFAULT_CONFIG = os.environ.get("NETMON_COLLECTOR_CONFIG")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``probes`` and its subcommands."""
    probes = sub.add_parser("probes", help="probe inventory and signed remote configuration",
                            description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    probes.set_defaults(func=lambda a: _usage(probes))
    psub = probes.add_subparsers(dest="probes_command", metavar="SUBCOMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, default=Path(DEFAULT_CONFIG) if DEFAULT_CONFIG
                       else None, help="collector config TOML (default: $NETMON_COLLECTOR_CONFIG,"
                       " else built-in defaults and NETMON_ environment variables)")

    ls = psub.add_parser("list", help="every registered probe: state, last seen, last result, "
                                      "spool depth and oldest waiting result, config and "
                                      "agent version, clock, data used, board, last update "
                                      "event")
    common(ls)
    ls.add_argument("--json", action="store_true", help="one JSON array on stdout")
    ls.add_argument("--stale-after", type=float, default=900.0, metavar="SECONDS",
                    help="an online probe silent this long is shown 'silent' (default 900)")
    ls.set_defaults(func=cmd_list)

    cfg = psub.add_parser("config", help="push or show signed remote configuration")
    cfg.set_defaults(func=lambda a: _usage(cfg))
    csub = cfg.add_subparsers(dest="config_command", metavar="ACTION")

    push = csub.add_parser("push", help="sign a plan and publish it retained to probes",
                           description="Sign PLAN.toml ([tests.<name>] tables and "
                           "[budgets_mb], as in the agent's file config) with the NOC key and "
                           "publish it retained, QoS 1, on each probe's config topic.")
    common(push)
    who = push.add_mutually_exclusive_group(required=True)
    who.add_argument("--probe", action="append", metavar="ID", help="a probe id (repeatable)")
    who.add_argument("--all", action="store_true", help="every probe in the site registry")
    push.add_argument("--file", type=Path, required=True, metavar="PLAN.toml")
    push.add_argument("--key", type=Path, required=True, metavar="KEYFILE",
                      help="NOC Ed25519 private key (PEM, mode 0600)")
    push.add_argument("--version", type=int, metavar="N",
                      help="config version (default: max(now as Unix seconds, retained + 1))")
    push.add_argument("--json", action="store_true")
    push.set_defaults(func=cmd_push)

    show = csub.add_parser("show", help="read a probe's retained config and verify it")
    common(show)
    show.add_argument("--probe", required=True, metavar="ID")
    keys = show.add_mutually_exclusive_group(required=True)
    keys.add_argument("--public-key", type=Path, action="append", metavar="PUB",
                      help="NOC public key to verify with (repeatable)")
    keys.add_argument("--key", type=Path, metavar="KEYFILE",
                      help="or the NOC private key (its public half is used)")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)

    en = psub.add_parser("enroll", help="zero-touch enrollment: list, approve, reject "
                                        "requests of blank probes")
    en.set_defaults(func=lambda a: _usage(en))
    esub = en.add_subparsers(dest="enroll_command", metavar="ACTION")
    el = esub.add_parser("list", help="retained enrollment requests and their status")
    common(el)
    el.add_argument("--json", action="store_true")
    el.set_defaults(func=cmd_enroll_list)
    ea = esub.add_parser("approve", help="approve the request a claim code proves: broker "
                                         "account, registry entry, sealed signed answer")
    common(ea)
    ea.add_argument("--claim", required=True, metavar="CODE",
                    help="the claim code on the probe's label (dashes optional)")
    ea.add_argument("--probe-id", required=True, metavar="ID")
    ea.add_argument("--commune-code", required=True, metavar="CODE",
                    help="official 5-digit code of the commune-level unit")
    ea.add_argument("--legacy-commune-code", metavar="CODE")
    ea.add_argument("--name", required=True, help="site name (Vietnamese, as on the sign)")
    ea.add_argument("--latitude", type=float, required=True)
    ea.add_argument("--longitude", type=float, required=True)
    ea.add_argument("--site-type", default="commune_office")
    ea.add_argument("--replace", action="store_true",
                    help="the probe id is already registered (a replaced SD card)")
    ea.add_argument("--key", type=Path, required=True, metavar="KEYFILE",
                    help="NOC Ed25519 private key (PEM, mode 0600)")
    ea.add_argument("--json", action="store_true")
    ea.set_defaults(func=cmd_enroll_approve)
    er = esub.add_parser("reject", help="refuse a request (signed answer; never approved later)")
    common(er)
    which = er.add_mutually_exclusive_group(required=True)
    which.add_argument("--claim", metavar="CODE")
    which.add_argument("--request", metavar="REQUEST_ID")
    er.add_argument("--reason", required=True)
    er.add_argument("--key", type=Path, required=True, metavar="KEYFILE")
    er.add_argument("--json", action="store_true")
    er.set_defaults(func=cmd_enroll_reject)

    up = psub.add_parser("update", help="signed agent updates: push a release, see versions")
    up.set_defaults(func=lambda a: _usage(up))
    usub = up.add_subparsers(dest="update_command", metavar="ACTION")
    upush = usub.add_parser("push", help="sign and publish a release manifest (retained)",
                            description="Hash the wheels, sign a release manifest with the "
                            "NOC key and publish it retained. Copy the wheels to BASE_URL "
                            "(the measurement server's site) first.")
    common(upush)
    upush.add_argument("--version", required=True, help="the agent version the wheels hold")
    upush.add_argument("--wheel", type=Path, action="append", required=True, metavar="FILE",
                       help="a wheel of the release (repeatable)")
    upush.add_argument("--base-url", required=True, metavar="URL",
                       help="where probes fetch the wheels (http(s)://.../)")
    target = upush.add_mutually_exclusive_group()
    target.add_argument("--probe", action="append", metavar="ID",
                        help="only these probes (repeatable)")
    target.add_argument("--percent", type=int, default=100,
                        help="staged rollout: this share of the fleet (default 100)")
    upush.add_argument("--health-timeout", type=float, default=300.0, metavar="SECONDS",
                       help="a new version not healthy this long is rolled back (default 300)")
    upush.add_argument("--key", type=Path, required=True, metavar="KEYFILE")
    upush.add_argument("--json", action="store_true")
    upush.set_defaults(func=cmd_update_push)
    ust = usub.add_parser("status", help="running, on-trial, pending and failed versions")
    common(ust)
    ust.add_argument("--json", action="store_true")
    ust.set_defaults(func=cmd_update_status)

    kg = psub.add_parser("keygen", help="make the NOC's Ed25519 key pair")
    kg.add_argument("--private", type=Path, required=True, metavar="KEYFILE",
                    help="private key file to create (mode 0600; keep it on the NOC host)")
    kg.add_argument("--public", type=Path, required=True, metavar="PUBFILE",
                    help="public key file (Ansible installs it on every probe)")
    kg.add_argument("--force", action="store_true", help="replace an existing private key")
    kg.add_argument("--json", action="store_true")
    kg.set_defaults(func=cmd_keygen)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _err(msg: str) -> None:
    print(f"netmon-collector probes: {msg}", file=sys.stderr)


def _load_config(args: argparse.Namespace) -> CollectorConfig:
    return load(args.config)


def _fail(exc: Exception) -> int:
    """One clear message and the error's exit code for an expected failure (config,
    registry, key, broker, InfluxDB: every NetmonError); anything else is a bug."""
    if isinstance(exc, NetmonError):
        _err(exc.report())
        return exc.exit_code
    raise exc


# --------------------------------------------------------------------------- list


def _ago(at: datetime | None, now: datetime) -> str:
    if at is None:
        return "-"
    s = max(0, int((now - at).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit} ago"
    return f"{s}s ago"


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.0f}"


def cmd_list(args: argparse.Namespace) -> int:
    """``probes list``."""
    from collector.core.influx import InfluxClient
    from collector.core.registry import load_sites
    from collector.fleet.inventory import inventory

    try:
        cfg = _load_config(args)
        sites = (load_sites(cfg.registry.path, unit_map(cfg, args.config))
                 if cfg.registry.path.exists() else {})
        with InfluxClient(cfg.influxdb) as influx:
            rows = inventory(influx, sites, stale_after_s=args.stale_after)
    except Exception as exc:
        return _fail(exc)
    if not cfg.registry.path.exists():
        _err(f"warning: site registry {cfg.registry.path} not found; listing probes seen "
             "in InfluxDB only")
    if args.json:
        json.dump([r.as_dict() for r in rows], sys.stdout, ensure_ascii=False, indent=1)
        print()
        return 0
    now = datetime.now(UTC)
    head = ("PROBE", "STATE", "LAST SEEN", "LAST RESULT", "SPOOL", "OLDEST", "CONFIG",
            "VERSION", "CLOCK", "DATA MB", "BOARD", "SITE")
    table = [head]
    for r in rows:
        budget = sum(u.budget_bytes or 0 for u in r.links)
        data = _mb(r.data_used_bytes) + (f"/{_mb(budget)}" if budget else "")
        site = (f"{r.site.name}, {r.site.commune}" if r.site else "(not in registry)")
        clock = "-" if r.clock_synced is None else ("synced" if r.clock_synced else "UNSYNCED")
        table.append((r.probe_id, r.state, _ago(r.last_seen, now),
                      _ago(r.last_result_at, now),
                      "-" if r.spool_depth is None else str(r.spool_depth),
                      _ago(r.oldest_waiting_at, now),
                      "-" if r.config_version is None else str(r.config_version),
                      r.agent_version or "-", clock, data, r.board_model or "-", site))
    widths = [max(len(row[i]) for row in table) for i in range(len(head) - 1)]
    errors = {r.probe_id: r.config_error for r in rows if r.config_error}
    updates = {r.probe_id: "; ".join(x for x in (
        r.update_event, f"on trial: {r.update_trial}" if r.update_trial else None,
        f"FAILED {r.update_failed}" if r.update_failed else None) if x)
        for r in rows if r.update_event or r.update_failed or r.update_trial}
    losses = {r.probe_id: "; ".join(x for x in (
        f"{r.spool_lost} result(s) could not be stored since the agent started"
        if r.spool_lost else None,
        f"did not stop cleanly before this start: up to {r.results_maybe_lost} result(s) "
        "held for their receipt may have been lost" if r.results_maybe_lost else None) if x)
        for r in rows if r.spool_lost or r.results_maybe_lost}
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
        if row[0] in errors:  # the last remote config was refused: say why
            print(f"    ! {errors[row[0]]}")
        if row[0] in updates:  # agent updates (issue 18): the last event, failures
            print(f"    update: {updates[row[0]]}")
        if row[0] in losses:  # what the probe knows it lost (full disk, power cut)
            print(f"    ! lost: {losses[row[0]]}")
    return 0


# --------------------------------------------------------------------------- config


def cmd_push(args: argparse.Namespace) -> int:
    """``probes config push``."""
    from collector.fleet.errors import FleetError
    from collector.fleet.noc_client import NocClient
    from collector.fleet.push import load_plan, push_configs
    from netmon.signing import key_id, load_private_key

    try:
        cfg = _load_config(args)
        key = load_private_key(args.key)
        plan = load_plan(args.file)
        if args.all:
            from collector.core.registry import load_sites

            probe_ids = sorted(load_sites(cfg.registry.path, unit_map(cfg, args.config)))
            if not probe_ids:
                raise FleetError(f"--all: no probe in {cfg.registry.path}", usage=True)
        else:
            bad = [p for p in args.probe if not re.match(PROBE_ID_PATTERN, p)]
            if bad:
                raise FleetError(f"--probe: not a probe id: {', '.join(bad)}", usage=True)
            probe_ids = sorted(set(args.probe))
        if args.version is not None and args.version < 1:
            raise FleetError("--version must be >= 1", usage=True)
        topics = Topics(cfg.mqtt.topic_prefix)
        with NocClient(cfg.mqtt) as client:
            results = push_configs(client, topics, probe_ids, plan, key, args.version)
    except Exception as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps([r.as_dict() for r in results]))
    else:
        for r in results:
            print(f"{r.probe_id}: version {r.version} published retained on {r.topic} "
                  f"({r.bytes} bytes, key {key_id(key.public_key())})")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """``probes config show``: 0 when a config is retained and verifies, else 1."""
    from collector.fleet.noc_client import NocClient
    from collector.fleet.push import show_config
    from netmon.signing import load_private_key, load_public_key

    try:
        cfg = _load_config(args)
        # Either key type verifies (netmon.signing.signature_ok).
        public_keys: list[Any] = [load_private_key(args.key).public_key()] \
            if args.key is not None else [load_public_key(p) for p in args.public_key]
        topics = Topics(cfg.mqtt.topic_prefix)
        topic = topics.config(args.probe)
        with NocClient(cfg.mqtt) as client:
            retained = client.collect_retained(topic, expect=[topic])
    except Exception as exc:
        return _fail(exc)
    shown = show_config(retained.get(topic), args.probe, topic, public_keys)
    if args.json:
        print(json.dumps(shown.as_dict(), ensure_ascii=False))
    elif not shown.present:
        print(f"{args.probe}: no config retained on {topic}")
    else:
        env = shown.envelope
        state = "signature OK" if shown.verified else f"NOT VALID: {shown.error}"
        if env is not None:
            print(f"{args.probe}: version {env.version}, issued {env.issued_at:%Y-%m-%d %H:%M:%S}"
                  f"Z, key {env.key_id}, for {env.probe_id!r}: {state}")
            print(json.dumps(env.plan, ensure_ascii=False, indent=2, sort_keys=True))
        else:
            print(f"{args.probe}: {state}")
    return 0 if shown.present and shown.verified else 1


def cmd_keygen(args: argparse.Namespace) -> int:
    """``probes keygen``."""
    from netmon.signing import SigningError, key_id, write_keypair

    try:
        public = write_keypair(args.private, args.public, overwrite=args.force)
    except SigningError as exc:
        _err(str(exc))
        return exc.exit_code  # 2: the key exists (use --force); 1: could not write
    out: dict[str, Any] = {"private": str(args.private), "public": str(args.public),
                           "key_id": key_id(public)}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"key {out['key_id']}: private {args.private} (mode 0600, keep it on the NOC "
              f"host), public {args.public} (install on every probe)")
    return 0


# --------------------------------------------------------------------------- enroll


def cmd_enroll_list(args: argparse.Namespace) -> int:
    """``probes enroll list``."""
    from collector.fleet.enroll import collect
    from collector.fleet.noc_client import NocClient

    try:
        cfg = _load_config(args)
        with NocClient(cfg.mqtt) as client:
            rows = collect(client, Topics(cfg.mqtt.topic_prefix), cfg.enrollment)
    except Exception as exc:
        return _fail(exc)
    if args.json:
        json.dump([r.as_dict() for r in rows], sys.stdout, ensure_ascii=False)
        print()
        return 0
    now = datetime.now(UTC)
    for r in rows:
        req = r.request
        if req is None:
            print(f"{r.topic}: invalid: {r.error}")
            continue
        hw = req.hardware
        print(f"{req.request_id}  {r.status:8}  made {_ago(req.created_at, now)}  agent "
              f"{req.agent_version}  {hw.board_model or '?'}  serial {hw.serial or '?'}  "
              f"MAC {', '.join(hw.macs) or '?'}  links {', '.join(hw.links) or '-'}")
    if not rows:
        print("no enrollment request waiting")
    return 0


def cmd_enroll_approve(args: argparse.Namespace) -> int:
    """``probes enroll approve``."""
    from collector.fleet.enroll import approve
    from collector.fleet.noc_client import NocClient
    from netmon.signing import load_private_key

    site = {"probe_id": args.probe_id, "name": args.name, "commune_code": args.commune_code,
            "legacy_commune_code": args.legacy_commune_code, "latitude": args.latitude,
            "longitude": args.longitude, "site_type": args.site_type}
    try:
        cfg = _load_config(args)
        key = load_private_key(args.key)
        units = unit_map(cfg, args.config)
        with NocClient(cfg.mqtt) as client:
            done = approve(client, Topics(cfg.mqtt.topic_prefix), cfg.enrollment, key,
                           args.claim, site, cfg.registry.path, units, args.replace)
    except Exception as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps(done.as_dict()))
    else:
        print(f"{done.request_id}: approved as {done.probe_id}: broker account created, "
              f"site added to {cfg.registry.path} (reload the collector), credentials "
              f"sent sealed and signed on {done.answer_topic}")
    return 0


def cmd_enroll_reject(args: argparse.Namespace) -> int:
    """``probes enroll reject``."""
    from collector.fleet.enroll import reject
    from collector.fleet.noc_client import NocClient
    from netmon.signing import load_private_key

    try:
        cfg = _load_config(args)
        key = load_private_key(args.key)
        with NocClient(cfg.mqtt) as client:
            done = reject(client, Topics(cfg.mqtt.topic_prefix), cfg.enrollment, key,
                          args.reason, claim=args.claim, request_id=args.request)
    except Exception as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps(done.as_dict()))
    else:
        print(f"{done.request_id}: rejected ({args.reason})")
    return 0


# --------------------------------------------------------------------------- update


def cmd_update_push(args: argparse.Namespace) -> int:
    """``probes update push``."""
    from collector.fleet.errors import FleetError
    from collector.fleet.noc_client import NocClient
    from collector.fleet.update import push
    from netmon.signing import load_private_key

    try:
        cfg = _load_config(args)
        key = load_private_key(args.key)
        if args.probe:
            bad = [p for p in args.probe if not re.match(PROBE_ID_PATTERN, p)]
            if bad:
                raise FleetError(f"--probe: not a probe id: {', '.join(bad)}", usage=True)
        if not 0 <= args.percent <= 100:
            raise FleetError("--percent must be 0-100", usage=True)
        with NocClient(cfg.mqtt) as client:
            done = push(client, Topics(cfg.mqtt.topic_prefix), key, version=args.version,
                        wheels=args.wheel, base_url=args.base_url, probes=args.probe,
                        percent=args.percent, health_timeout_s=args.health_timeout)
    except Exception as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps(done.as_dict()))
    else:
        who = ", ".join(done.probes) if done.probes is not None else f"{done.percent}% of probes"
        print(f"release {done.version} (serial {done.serial}, {len(done.wheels)} wheel(s)) "
              f"published for {who}")
    return 0


def cmd_update_status(args: argparse.Namespace) -> int:
    """``probes update status``."""
    from collector.fleet.noc_client import NocClient
    from collector.fleet.update import status

    try:
        cfg = _load_config(args)
        with NocClient(cfg.mqtt) as client:
            rows = status(client, Topics(cfg.mqtt.topic_prefix))
    except Exception as exc:
        return _fail(exc)
    if args.json:
        json.dump(rows, sys.stdout, ensure_ascii=False)
        print()
        return 0
    for r in rows:
        failed = ", ".join(f"{v} ({why})" for v, why in r["failed"].items()) or "-"
        print(f"{r['probe_id']}  {r['state']}  running {r['running']}  trial "
              f"{r['trial'] or '-'}  pending {r['pending'] or '-'}  failed {failed}")
        if r["last_event"]:
            print(f"    {r['last_event_at']}: {r['last_event']}")
    return 0
