"""``netmon-collector dashboards build|check|push``.

- ``build``: write dashboards/json/** and dashboards/provisioning/** from the config.
- ``check``: exit 1 when a committed file differs from what the code generates, or a
  dashboard breaks a structural rule (ids, grid, data source uid).
- ``push``: upload the data source and dashboards to Grafana's HTTP API (grafana-client).

Exit codes: 0 ok, 1 runtime failure (or stale files for ``check``), 2 bad usage/config.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from collector.config import InfluxSettings
from collector.dashboards import files
from collector.dashboards.build import DATASOURCE_UID, BuildConfig, build_all
from collector.dashboards.checks import structural_problems
from collector.dashboards.i18n import LANGS, Lang
from collector.dashboards.provisioning import DATASOURCE_NAME, FOLDERS
from netmon.settings import SecretFileError, read_secret


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``dashboards`` command and its subcommands."""
    parser = sub.add_parser("dashboards", help="Grafana dashboards: build, check, push",
                            description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)

    def usage(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    parser.set_defaults(func=usage)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, default=None,
                       help="collector config (TOML): targets, peak hours, InfluxDB")
        p.add_argument("--json", action="store_true", help="print a JSON summary")

    build = actions.add_parser("build", help="write the dashboard JSON and provisioning files")
    common(build)
    build.add_argument("--out", type=Path, default=files.ROOT,
                       help="folder to write json/ and provisioning/ into (default: the "
                            "dashboards package)")
    build.set_defaults(func=_build)

    check = actions.add_parser("check", help="fail when committed files differ from the code")
    common(check)
    check.add_argument("--dir", type=Path, default=files.ROOT, help="folder to compare")
    check.set_defaults(func=_check)

    push = actions.add_parser("push", help="upload the data source and dashboards to Grafana")
    common(push)
    push.add_argument("--grafana-url", required=True, help="e.g. https://grafana.example:3000")
    push.add_argument("--token-file", type=Path, required=True,
                      help="file holding a Grafana service-account token (mode 0600)")
    push.add_argument("--lang", choices=[*LANGS, "all"], default="all")
    push.add_argument("--datasource-url", default=None,
                      help="InfluxDB URL as Grafana reaches it (default: [influxdb] url)")
    push.add_argument("--no-datasource", action="store_true",
                      help="only dashboards (the data source is provisioned otherwise)")
    push.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    push.set_defaults(func=_push)


def _load(args: argparse.Namespace) -> tuple[Any, BuildConfig] | None:
    from collector.config import load
    from netmon.settings import ConfigError

    try:
        cfg = load(args.config)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return None
    return cfg, BuildConfig.from_config(cfg)


def _emit(args: argparse.Namespace, summary: dict[str, Any], text: str) -> None:
    print(json.dumps(summary, ensure_ascii=False) if args.json else text)


def _build(args: argparse.Namespace) -> int:
    loaded = _load(args)
    if loaded is None:
        return 2
    written = files.write(loaded[1], args.out)
    _emit(args, {"written": [str(p) for p in written]},
          "\n".join(f"wrote {p}" for p in written))
    return 0


def _check(args: argparse.Namespace) -> int:
    loaded = _load(args)
    if loaded is None:
        return 2
    stale = files.stale(loaded[1], args.dir)
    problems = [f"{lang}/{name}: {problem}" for lang in LANGS
                for name, dash in build_all(loaded[1], lang).items()
                for problem in structural_problems(dash.to_json(), {DATASOURCE_UID})]
    lines = [f"stale: {p} (run: netmon-collector dashboards build)" for p in stale]
    _emit(args, {"stale": stale, "problems": problems},
          "\n".join(lines + problems) or "dashboards up to date")
    return 1 if stale or problems else 0


def datasource_payload(influx: InfluxSettings) -> dict[str, Any]:
    """The data source for Grafana's API from the collector's ``[influxdb]`` settings.

    A token (2.x/3.x) goes in an ``Authorization: Token`` header; a password (1.x) as
    the basic-auth password. Both are ``secureJsonData``: Grafana stores them encrypted.
    """
    payload: dict[str, Any] = {
        "name": DATASOURCE_NAME, "type": "influxdb", "uid": DATASOURCE_UID, "access": "proxy",
        "url": influx.url, "isDefault": True,
        "jsonData": {"dbName": influx.database, "httpMode": "POST", "version": "InfluxQL",
                     "timeInterval": "1m", "tlsSkipVerify": not influx.verify_tls}}
    if influx.token_file:
        payload["jsonData"]["httpHeaderName1"] = "Authorization"
        token = read_secret(influx.token_file, "influxdb.token_file")
        payload["secureJsonData"] = {"httpHeaderValue1": f"Token {token}"}
    elif influx.password_file:
        payload["user"] = influx.username or "netmon"
        payload["secureJsonData"] = {
            "password": read_secret(influx.password_file, "influxdb.password_file")}
    return payload


def _push(args: argparse.Namespace) -> int:
    from grafana_client.api import GrafanaApi
    from grafana_client.client import GrafanaClientError, GrafanaException

    loaded = _load(args)
    if loaded is None:
        return 2
    cfg, build_cfg = loaded
    try:
        token = read_secret(args.token_file, "--token-file")
    except SecretFileError as exc:  # unreadable or empty
        print(exc, file=sys.stderr)
        return 2
    if not args.grafana_url.startswith(("http://", "https://")):
        print(f"--grafana-url must start with http:// or https://: {args.grafana_url!r}",
              file=sys.stderr)
        return 2
    langs: list[Lang] = list(LANGS) if args.lang == "all" else [args.lang]
    api = GrafanaApi.from_url(args.grafana_url, credential=token, timeout=args.timeout)
    summary: dict[str, Any] = {"datasource": None, "dashboards": []}
    try:
        payload = None if args.no_datasource else datasource_payload(cfg.influxdb)
        if payload is not None and args.datasource_url:
            payload["url"] = args.datasource_url
    except OSError as exc:
        print(f"cannot read an InfluxDB secret file: {exc}", file=sys.stderr)
        return 2
    try:
        if payload is not None:
            try:
                api.datasource.get_datasource_by_uid(DATASOURCE_UID)
                api.datasource.update_datasource_by_uid(DATASOURCE_UID, payload)
                summary["datasource"] = "updated"
            except GrafanaClientError as exc:
                if getattr(exc, "status_code", None) != 404:
                    raise
                api.datasource.create_datasource(payload)
                summary["datasource"] = "created"
        for lang in langs:
            folder_uid = f"netmon-{lang}"
            try:
                api.folder.get_folder(folder_uid)
            except GrafanaClientError as exc:
                if getattr(exc, "status_code", None) != 404:
                    raise
                api.folder.create_folder(FOLDERS[lang], uid=folder_uid)
            for dash in build_all(build_cfg, lang).values():
                api.dashboard.update_dashboard({"dashboard": dash.to_json(),
                                                "folderUid": folder_uid, "overwrite": True,
                                                "message": "netmon-collector dashboards push"})
                summary["dashboards"].append(dash.uid)
    except (GrafanaException, OSError) as exc:
        # HTTP status and Grafana's words, or the connection error; never our token.
        print(f"Grafana at {args.grafana_url}: {exc}", file=sys.stderr)
        return 1
    _emit(args, summary, f"data source {summary['datasource'] or 'skipped'}; "
          f"{len(summary['dashboards'])} dashboards pushed")
    return 0
