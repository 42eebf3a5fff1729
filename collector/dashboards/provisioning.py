"""Grafana provisioning files, generated from the same config as the dashboards.

- ``provisioning/datasources/influxdb-1x.yaml``: InfluxDB 1.x, InfluxQL, user/password.
- ``provisioning/datasources/influxdb-token.yaml``: InfluxDB 2.x/3.x through the v1
  compatibility API (InfluxQL), token in an ``Authorization: Token ...`` header.
  Install ONE of the two: both carry the uid every panel points at.
- ``provisioning/dashboards/netmon.yaml``: file provider, one folder per language.
- ``provisioning/alerting/netmon-rules.yaml``: unified alerting rules.
- ``provisioning/alerting/contact-points.yaml.example``: an example e-mail contact point
  and notification policy (addresses are placeholders).

Secrets never appear here: Grafana expands ``$__env{NAME}`` / ``$__file{PATH}`` when it
loads the files, so passwords and tokens stay in the Grafana host's environment or files.
"""

from __future__ import annotations

from typing import Any

import yaml  # type: ignore[import-untyped]

from collector.dashboards import queries as Q
from collector.dashboards.build import DATASOURCE_UID, BuildConfig, _n
from collector.dashboards.i18n import LANGS, Lang, t

Json = dict[str, Any]

DATASOURCE_NAME = "netmon InfluxDB"
ALERT_FOLDER = "netmon"
ALERT_GROUP = "netmon"
#: Where the dashboard provider expects the JSON files on the Grafana host.
GRAFANA_DASHBOARD_DIR = "/var/lib/grafana/dashboards/netmon"
FOLDERS: dict[Lang, str] = {"vi": "Hà Tĩnh netmon", "en": "Hà Tĩnh netmon (English)"}


def datasource(variant: str, database: str = "netmon") -> Json:
    """The data source model: ``"1x"`` (user/password) or ``"token"`` (2.x/3.x)."""
    json_data: Json = {"dbName": database, "httpMode": "POST", "version": "InfluxQL",
                       "timeInterval": "1m"}
    ds: Json = {"name": DATASOURCE_NAME, "type": "influxdb", "uid": DATASOURCE_UID,
                "access": "proxy", "url": "$__env{NETMON_INFLUX_URL}", "isDefault": True,
                "editable": False}
    if variant == "1x":
        ds["user"] = "$__env{NETMON_INFLUX_USER}"
        ds["jsonData"] = json_data
        ds["secureJsonData"] = {"password": "$__file{/etc/grafana/secrets/influx-password}"}
    elif variant == "token":
        ds["jsonData"] = json_data | {"httpHeaderName1": "Authorization"}
        ds["secureJsonData"] = {
            "httpHeaderValue1": "Token $__file{/etc/grafana/secrets/influx-token}"}
    else:
        raise ValueError(f"datasource variant must be '1x' or 'token', not {variant!r}")
    return ds


def datasource_file(variant: str) -> Json:
    """A datasources provisioning document."""
    return {"apiVersion": 1,
            "deleteDatasources": [],
            "datasources": [datasource(variant)]}


def dashboard_provider() -> Json:
    """The file provider: one Grafana folder per language."""
    return {"apiVersion": 1, "providers": [
        {"name": f"netmon-{lang}", "orgId": 1, "folder": FOLDERS[lang],
         "folderUid": f"netmon-{lang}", "type": "file", "disableDeletion": False,
         "updateIntervalSeconds": 60, "allowUiUpdates": False,
         "options": {"path": f"{GRAFANA_DASHBOARD_DIR}/{lang}",
                     "foldersFromFilesStructure": False}}
        for lang in LANGS]}


def _query(ref: str, sql: str, seconds: int, uid: str) -> Json:
    return {"refId": ref, "relativeTimeRange": {"from": seconds, "to": 0},
            "datasourceUid": uid,
            "model": {"refId": ref, "query": sql, "rawQuery": True,
                      "resultFormat": "time_series", "intervalMs": 1000,
                      "maxDataPoints": 43200}}


def _reduce(ref: str, source: str) -> Json:
    return {"refId": ref, "relativeTimeRange": {"from": 0, "to": 0},
            "datasourceUid": "__expr__",
            "model": {"refId": ref, "type": "reduce", "expression": source,
                      "reducer": "last", "settings": {"mode": "dropNN"}}}


def _threshold(ref: str, source: str, op: str, value: float) -> Json:
    return {"refId": ref, "relativeTimeRange": {"from": 0, "to": 0},
            "datasourceUid": "__expr__",
            "model": {"refId": ref, "type": "threshold", "expression": source,
                      "conditions": [{"evaluator": {"type": op, "params": [value]}}]}}


def _rule(uid: str, title: str, sql: str, seconds: int, op: str, value: float,
          for_: str, severity: str, summary: str, ds_uid: str,
          no_data: str = "OK") -> Json:
    return {"uid": uid, "title": title, "condition": "C",
            "data": [_query("A", sql, seconds, ds_uid), _reduce("B", "A"),
                     _threshold("C", "B", op, value)],
            "noDataState": no_data, "execErrState": "Error", "for": for_,
            "labels": {"severity": severity, "team": "noc"},
            "annotations": {"summary": summary},
            "isPaused": False}


def alert_rules(cfg: BuildConfig, lang: Lang = "vi") -> Json:
    """Unified alerting rules; thresholds from the same config as the dashboards."""
    uid = cfg.datasource_uid
    tv = cfg.target_values()
    rules = [
        # From the registry points (collector/core/registrymetrics.py): fires for every
        # registered probe that is silent or offline, however long ago it went quiet.
        # No registry points at all means the collector is not writing them: alerting.
        _rule("netmon-probe-silent", t("alert.silent", lang), Q.alert_probe_down(), 900,
              "lt", 0.5, "0s", "warning",
              "{{ $labels.probe }} ({{ $labels.commune }}): " + t("alert.silent", lang), uid,
              no_data="Alerting"),
        _rule("netmon-loss", t("alert.loss", lang, loss=_n(cfg.loss_alert_pct)),
              Q.alert_loss(), 1800, "gt", cfg.loss_alert_pct, "15m", "warning",
              "{{ $labels.probe }}/{{ $labels.link }}: loss {{ $values.B }}%", uid),
        _rule("netmon-spool-growing", t("alert.spool", lang), Q.alert_spool_growth(), 3600,
              "gt", 0.0, "30m", "warning",
              "{{ $labels.probe }}: +{{ $values.B }}", uid),
        # Fleet health (issue 18): still on another agent version after the rollout time.
        _rule("netmon-old-agent", t("alert.old_agent", lang, version=cfg.agent_version,
                                    after=cfg.old_agent_for),
              Q.alert_old_agent(cfg.agent_version), 1800, "gt", 0.0, cfg.old_agent_for,
              "info", "{{ $labels.probe }}: " + t("alert.old_agent", lang,
                                                 version=cfg.agent_version,
                                                 after=cfg.old_agent_for), uid),
    ]
    for access in ("mobile", "fixed"):
        target = cfg.target(access)
        rules.append(_rule(
            f"netmon-commune-below-{access}",
            t("alert.commune", lang, target=_n(target), access=t(f"access.{access}", lang)),
            Q.alert_commune_median(access), 86400, "lt", target, "0s", "info",
            "{{ $labels.commune }} ({{ $labels.commune_code }}): {{ $values.B }} Mb/s < "
            + f"{tv[access]} Mb/s", uid))
    rules += bulletin_alert_rules(cfg, lang)
    return {"apiVersion": 1, "groups": [
        {"orgId": 1, "name": ALERT_GROUP, "folder": ALERT_FOLDER, "interval": "5m",
         "rules": rules}]}


def bulletin_alert_rules(cfg: BuildConfig, lang: Lang = "vi") -> list[Json]:
    """The scheduled bulletin's self-metric: fires while an edition's last run failed
    (after its retries); a later successful run of that edition clears it. No runs yet
    (a new install) is not an alert."""
    return [_rule("netmon-bulletin-failed", t("alert.bulletin", lang),
                  Q.alert_bulletin_failed(), 40 * 86400, "lt", 0.5, "0s", "warning",
                  "{{ $labels.edition }}: " + t("alert.bulletin", lang)
                  + " (journalctl -u netmon-bulletin@{{ $labels.edition }})",
                  cfg.datasource_uid)]


def contact_point_example() -> Json:
    """An example contact point and policy (edit the address before use)."""
    return {"apiVersion": 1,
            "contactPoints": [{"orgId": 1, "name": "noc-email", "receivers": [
                {"uid": "netmon-noc-email", "type": "email", "disableResolveMessage": False,
                 "settings": {"addresses": "noc@example.invalid", "singleEmail": True}}]}],
            "policies": [{"orgId": 1, "receiver": "noc-email",
                          "group_by": ["grafana_folder", "alertname"],
                          "group_wait": "30s", "group_interval": "5m",
                          "repeat_interval": "4h"}]}


def _yaml(doc: Json, header: str) -> str:
    body = str(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=100))
    return "".join(f"# {line}\n" for line in header.splitlines()) + body


def render_provisioning(cfg: BuildConfig) -> dict[str, str]:
    """Relative path under ``dashboards/`` -> file text."""
    gen = "Generated by `netmon-collector dashboards build`; edit dashboards/*.py instead."
    return {
        "provisioning/datasources/influxdb-1x.yaml": _yaml(
            datasource_file("1x"), f"{gen}\nInfluxDB 1.x (InfluxQL, user/password). "
            "Install this OR influxdb-token.yaml.\nEnv: NETMON_INFLUX_URL, NETMON_INFLUX_USER; "
            "password in /etc/grafana/secrets/influx-password (0600)."),
        "provisioning/datasources/influxdb-token.yaml": _yaml(
            datasource_file("token"), f"{gen}\nInfluxDB 2.x/3.x via the v1 API (InfluxQL, "
            "token header; 2.x needs a DBRP mapping for 'netmon').\nInstall this OR "
            "influxdb-1x.yaml. Env: NETMON_INFLUX_URL; token in "
            "/etc/grafana/secrets/influx-token (0600)."),
        "provisioning/dashboards/netmon.yaml": _yaml(
            dashboard_provider(), f"{gen}\nCopy dashboards/json/<lang>/ to "
            f"{GRAFANA_DASHBOARD_DIR}/<lang>/."),
        "provisioning/alerting/netmon-rules.yaml": _yaml(
            alert_rules(cfg), f"{gen}\nUnified alerting rules (Grafana >= 9.1)."),
        "provisioning/alerting/contact-points.yaml.example": _yaml(
            contact_point_example(), f"{gen}\nExample only: set a real address, then drop "
            "'.example' from the name so Grafana loads it."),
    }
