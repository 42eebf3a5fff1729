"""The four NOC dashboards, built from the configured targets in either language.

``build_all(BuildConfig.from_config(cfg), "vi")`` returns :class:`Dashboard` objects;
``render_all`` turns them into the JSON files committed under ``dashboards/json/``.
Thresholds are the configured targets, never literals, so changing
``[targets]`` in the collector config and running ``netmon-collector dashboards build``
moves every colour and line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from collector.config import BulletinSettings, CollectorConfig, Targets
from collector.core.rollups import DAY_MS, SWITCH_STEPS
from collector.dashboards import queries as Q
from collector.dashboards.i18n import LANGS, Lang, t
from collector.dashboards.model import (
    GRID_COLUMNS,
    Dashboard,
    DataSourceRef,
    GridPos,
    HiddenVariable,
    InfluxQLTarget,
    Json,
    Override,
    Panel,
    QueryVariable,
    RowPanel,
    Step,
    Thresholds,
)
from netmon import __version__ as contract_version
from netmon import contract

#: The provisioned data source's uid; every panel, variable and alert rule points at it.
DATASOURCE_UID = "netmon-influxdb"
#: Loss alert threshold, percent (issue 6: "loss above 2%").
LOSS_ALERT_PCT = 2.0
#: Map centre: Hà Tĩnh province.
MAP_CENTER = (18.33, 105.75)
DASHBOARD_NAMES = ("overview", "where", "quality", "probes")

MBPS = "Mbits"  # Grafana's unit id for megabits per second
#: The probe map's targets: raw points (A, B), daily rollups (C, D).
_MAP_REFS = (("A", "mobile"), ("B", "fixed"), ("C", "mobile"), ("D", "fixed"))
BELOW, MET, MET_2030 = "red", "green", "blue"


@dataclass(frozen=True)
class BuildConfig:
    """What the dashboards depend on: targets, peak hours, data source uid."""

    targets: Targets
    peak_start_hour: int = 19
    peak_end_hour: int = 23
    datasource_uid: str = DATASOURCE_UID
    loss_alert_pct: float = LOSS_ALERT_PCT
    #: The day the current map of units took effect (``registry.units_effective``):
    #: old-district tables show only months before it.
    reform_effective: date = date(2025, 7, 1)
    #: The agent version the fleet should run (the collector's own release): a probe on
    #: another one for ``old_agent_for`` raises the old-version alert.
    agent_version: str = contract_version
    old_agent_for: str = "7d"

    @classmethod
    def from_config(cls, cfg: CollectorConfig | None = None) -> BuildConfig:
        """From the collector config (defaults when None): targets and bulletin peak hours."""
        cfg = cfg or CollectorConfig()
        bulletin: BulletinSettings = cfg.bulletin
        return cls(targets=cfg.targets, peak_start_hour=bulletin.peak_start_hour,
                   peak_end_hour=bulletin.peak_end_hour,
                   reform_effective=cfg.registry.units_effective)

    def target(self, access: str) -> float:
        """The 2025 download target for an access type."""
        return self.targets.mobile_mbps if access == "mobile" else self.targets.fixed_mbps

    def target_values(self) -> dict[str, float]:
        """Placeholders for texts."""
        steps = {res: shortest // DAY_MS for shortest, res in SWITCH_STEPS}
        return {"mobile": _n(self.targets.mobile_mbps), "fixed": _n(self.targets.fixed_mbps),
                "fixed2030": _n(self.targets.fixed_2030_mbps),
                "raw_days": steps[Q.HOURLY], "daily_days": steps[Q.DAILY]}


def _n(value: float) -> Any:
    return int(value) if float(value).is_integer() else value


def speed_thresholds(cfg: BuildConfig, access: str | None) -> Thresholds:
    """Red below the access type's target, green from it, blue from the 2030 fixed target.

    ``access=None`` gives every target as a step (trend lines for both access types).
    """
    tg = cfg.targets
    if access == "mobile":
        return Thresholds((Step(BELOW, None), Step(MET, tg.mobile_mbps)))
    if access == "fixed":
        return Thresholds((Step(BELOW, None), Step(MET, tg.fixed_mbps),
                           Step(MET_2030, tg.fixed_2030_mbps)))
    steps = sorted({tg.mobile_mbps: "orange", tg.fixed_mbps: MET,
                    tg.fixed_2030_mbps: MET_2030}.items())
    return Thresholds((Step(BELOW, None), *(Step(c, v) for v, c in steps)))


def share_thresholds() -> Thresholds:
    """Colours for a share of tests (no target in the plan: plain red/orange/green)."""
    return Thresholds((Step("red", None), Step("orange", 50.0), Step("green", 80.0)))


class Layout:
    """Places panels left to right on the 24-column grid, wrapping to new lines."""

    def __init__(self) -> None:
        self.items: list[Panel | RowPanel] = []
        self.x = 0
        self.y = 0
        self.line_h = 0

    def row(self, title: str) -> None:
        """A row header on a new line."""
        self._newline()
        self.items.append(RowPanel(title, self.y))
        self.y += 1

    def add(self, w: int, h: int, make: Callable[..., Panel]) -> None:
        """Add a panel ``w`` columns wide and ``h`` high."""
        if self.x + w > GRID_COLUMNS:
            self._newline()
        self.items.append(make(GridPos(self.x, self.y, w, h)))
        self.x += w
        self.line_h = max(self.line_h, h)

    def _newline(self) -> None:
        self.y += self.line_h
        self.x = 0
        self.line_h = 0


# --------------------------------------------------------------------------- panel kinds

_REDUCE_LAST = {"calcs": ["lastNotNull"], "fields": "", "values": False}


def _stat_options(color_mode: str = "background") -> Json:
    return {"reduceOptions": _REDUCE_LAST, "colorMode": color_mode, "graphMode": "none",
            "justifyMode": "auto", "orientation": "auto", "textMode": "auto",
            "wideLayout": True, "showPercentChange": False}


def _timeseries_custom(threshold_lines: bool) -> Json:
    return {"drawStyle": "line", "lineWidth": 2, "fillOpacity": 0, "showPoints": "auto",
            "spanNulls": True,
            "thresholdsStyle": {"mode": "line" if threshold_lines else "off"}}


_TS_OPTIONS = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True,
                          "calcs": []},
               "tooltip": {"mode": "multi", "sort": "none"}}


def _table_options(sort_by: str | None) -> Json:
    out: Json = {"showHeader": True, "cellHeight": "sm",
                 "footer": {"show": False, "reducer": ["sum"], "fields": "", "countRows": False}}
    if sort_by:
        out["sortBy"] = [{"displayName": sort_by, "desc": False}]
    return out


_TABLE_CUSTOM = {"align": "auto", "cellOptions": {"type": "auto"}, "filterable": True}


def _colour_cells(column: str) -> Override:
    return Override("byName", column, (("custom.cellOptions", {"type": "color-background"}),))


def _organize(rename: dict[str, str], hide: tuple[str, ...] = ("Time",)) -> Json:
    return {"id": "organize", "options": {"excludeByName": {h: True for h in hide},
                                          "renameByName": rename, "indexByName": {}}}


class Builder:
    """Builds the four dashboards for one language."""

    def __init__(self, cfg: BuildConfig, lang: Lang) -> None:
        self.cfg = cfg
        self.lang = lang
        self.ds = DataSourceRef(cfg.datasource_uid)

    def tr(self, key: str, **values: Any) -> str:
        """Translate with the target placeholders always available."""
        return t(key, self.lang, **(self.cfg.target_values() | values))

    def access_name(self, access: str) -> str:
        """Localised access type."""
        return t(f"access.{access}", self.lang)

    def target(self, ref: str, query: str, fmt: str = "time_series",
               alias: str | None = None) -> InfluxQLTarget:
        """A raw InfluxQL target on our data source."""
        return InfluxQLTarget(ref, query, self.ds, fmt, alias)  # type: ignore[arg-type]

    def panel(self, key: str, kind: str, title: str, grid: GridPos,
              targets: list[InfluxQLTarget], **kw: Any) -> Panel:
        """A panel on our data source."""
        return Panel(type=kind, title=title, grid=grid, targets=targets, datasource=self.ds,
                     key=key, **kw)

    # ------------------------------------------------------------------ variables

    def variables(self) -> list[QueryVariable | HiddenVariable]:
        """commune (value = official code, text = name), isp, access, probe; the hidden
        ``resolution`` (raw points or rollups, from the range's length)."""
        return [*(QueryVariable(name, t(f"var.{name}", self.lang), Q.variable_query(name),
                                self.ds,
                                regex=Q.COMMUNE_VARIABLE_REGEX if name == "commune" else "")
                  for name in Q.VARIABLES),
                HiddenVariable(Q.RESOLUTION, Q.resolution_query(), self.ds, Q.RAW)]

    def switched(self, fmt: str = "time_series", alias: str | None = None, *,
                 raw: str, rollup: str) -> list[InfluxQLTarget]:
        """Two targets of which ``$resolution`` leaves one empty: A the raw points, B the
        rollups."""
        return [self.target("A", raw, fmt, alias), self.target("B", rollup, fmt, alias)]

    def quality_switched(self, alias: str, *, raw: str,
                         rollup: Callable[[bool], str]) -> list[InfluxQLTarget]:
        """Three targets of which ``$resolution`` and the variables leave two empty: A the
        raw points, B every line's quality rollups (a commune, ISP or probe chosen), C the
        per-access ones ("All" of them)."""
        return [*self.switched(alias=alias, raw=raw, rollup=rollup(False)),
                self.target("C", rollup(True), alias=alias)]

    def rollup_note(self, text: str) -> str:
        """A panel description with the note on what long ranges read."""
        return f"{text} {self.tr('note.rollup')}"

    def _dashboard(self, name: str, layout: Layout, time_from: str = "now-7d") -> Dashboard:
        suffix = "" if self.lang == "vi" else f"-{self.lang}"
        tag = f"netmon-{self.lang}"
        links: list[Json] = [{"type": "dashboards", "tags": [tag], "asDropdown": False,
                              "includeVars": True, "keepTime": True, "title": "",
                              "icon": "external link", "targetBlank": False, "tooltip": "",
                              "url": ""}]
        return Dashboard(uid=f"netmon-{name}{suffix}", title=self.tr(f"dash.{name}"),
                         description=self.tr(f"dash.{name}.desc"), tags=["netmon", tag],
                         variables=self.variables(), panels=layout.items, time_from=time_from,
                         links=links)

    # ------------------------------------------------------------------ overview

    def overview(self) -> Dashboard:
        """Province overview: medians against targets, share meeting, trend, peak hours."""
        cfg, lay = self.cfg, Layout()
        tg = cfg.targets
        lay.row(self.tr("row.targets"))
        for access in ("mobile", "fixed"):
            lay.add(6, 5, lambda g, a=access: self.panel(
                f"overview.median_{a}", "stat",
                self.tr("p.median_dl", access=self.access_name(a)), g,
                self.switched(raw=Q.median_speed(a), rollup=Q.rollup_median(a)),
                description=self.rollup_note(self.tr(
                    "p.median_dl.desc" + ("_mobile" if a == "mobile" else ""),
                    target=_n(cfg.target(a)), target2030=_n(tg.fixed_2030_mbps))),
                unit=MBPS, decimals=1, thresholds=speed_thresholds(cfg, a),
                color_mode="thresholds", options=_stat_options()))
        for access in ("mobile", "fixed"):
            lay.add(6, 5, lambda g, a=access: self.panel(
                f"overview.share_{a}", "gauge",
                self.tr("p.share", target=_n(cfg.target(a)), access=self.access_name(a)), g,
                [self.target("A", Q.share_at_target(a)),
                 self.target("B", Q.share_at_target(a, daily=True))],
                description=self.tr("p.share.desc"), unit="percent", decimals=0, min=0,
                max=100, thresholds=share_thresholds(), color_mode="thresholds",
                options={"reduceOptions": _REDUCE_LAST, "showThresholdLabels": False,
                         "showThresholdMarkers": True, "orientation": "auto",
                         "sizing": "auto", "minVizHeight": 75, "minVizWidth": 75}))
        lay.add(8, 5, lambda g: self.panel(
            "overview.share_fixed_2030", "gauge",
            self.tr("p.share", target=_n(tg.fixed_2030_mbps),
                    access=self.access_name("fixed")), g,
            [self.target("A", Q.share_at_target("fixed", Q.MET_2030)),
             self.target("B", Q.share_at_target("fixed", Q.MET_2030, daily=True))],
            description=self.tr("p.share.desc"), unit="percent", decimals=0, min=0, max=100,
            thresholds=share_thresholds(), color_mode="thresholds",
            options={"reduceOptions": _REDUCE_LAST, "showThresholdLabels": False,
                     "showThresholdMarkers": True, "orientation": "auto", "sizing": "auto",
                     "minVizHeight": 75, "minVizWidth": 75}))
        lay.add(8, 5, lambda g: self.panel(
            "overview.median_upload", "stat", self.tr("p.median_ul"), g,
            self.switched(alias="$tag_access",
                          raw=Q.median_speed(None, "upload_mbps", group=("access",)),
                          rollup=Q.rollup_median(None, "upload_mbps", group=("access",))),
            description=self.rollup_note(self.tr("p.median_ul.desc")), unit=MBPS, decimals=1,
            color_mode="fixed", options=_stat_options("value")))
        for access in ("mobile", "fixed"):
            lay.add(4, 5, lambda g, a=access: self.panel(
                f"overview.peak_{a}", "stat",
                self.tr("p.peak", start=cfg.peak_start_hour, end=cfg.peak_end_hour,
                        access=self.access_name(a)), g,
                self.switched(raw=Q.peak_median(a, cfg.peak_start_hour, cfg.peak_end_hour),
                              rollup=Q.rollup_peak_median(a)),
                description=self.rollup_note(self.tr("p.peak.desc", start=cfg.peak_start_hour,
                                                     end=cfg.peak_end_hour)),
                unit=MBPS, decimals=1, thresholds=speed_thresholds(cfg, a),
                color_mode="thresholds", no_value=self.tr("p.peak.novalue"),
                options=_stat_options()))
        lay.row(self.tr("row.trend"))
        lay.add(24, 9, lambda g: self.panel(
            "overview.trend", "timeseries", self.tr("p.trend"), g,
            self.switched(alias="$tag_access", raw=Q.speed_trend(), rollup=Q.rollup_trend()),
            description=self.rollup_note(self.tr("p.trend.desc")), unit=MBPS, min=0,
            thresholds=speed_thresholds(cfg, None), color_mode="palette-classic",
            custom=_timeseries_custom(True), options=_TS_OPTIONS))
        return self._dashboard("overview", lay, "now-30d")

    # ------------------------------------------------------------------ where

    def _area_table(self, key: str, title_key: str, access: str, group: tuple[str, ...],
                    grid: GridPos, legacy: bool = False) -> Panel:
        target = self.cfg.target(access)
        names = {"median_mbps": self.tr("col.median"), "p10_mbps": self.tr("col.p10"),
                 "tests": self.tr("col.tests"), "share_pct": self.tr("col.share")}
        names |= {tag: t(f"col.{tag}", self.lang) for tag in group}
        effective = self.cfg.reform_effective
        when = f"{effective.day}/{effective.month}/{effective.year}"
        if legacy:
            targets = [self.target("A", Q.legacy_area_table(access, effective), "table"),
                       self.target("B", Q.share_meeting(access, target, group,
                                                        (Q.before(effective),)), "table")]
            description = self.tr("p.legacy.desc", target=_n(target), date=when)
        else:
            targets = [*self.switched("table", raw=Q.area_table(access, group),
                                      rollup=Q.rollup_area_table(access, group)),
                       self.target("C", Q.share_at_target(access, group=group), "table"),
                       self.target("D", Q.share_at_target(access, group=group, daily=True),
                                   "table")]
            description = self.rollup_note(self.tr("p.areas.desc", target=_n(target)))
        return self.panel(
            key, "table", self.tr(title_key, access=self.access_name(access), date=when), grid,
            targets, description=description,
            unit=MBPS, decimals=1, thresholds=speed_thresholds(self.cfg, access),
            color_mode="thresholds", custom=_TABLE_CUSTOM,
            overrides=[_colour_cells(names["median_mbps"]),
                       Override("byName", names["tests"], (("unit", "short"),
                                                          ("decimals", 0))),
                       Override("byName", names["share_pct"],
                                (("unit", "percent"), ("decimals", 0),
                                 ("thresholds", share_thresholds().to_json()),
                                 ("custom.cellOptions", {"type": "color-text"})))],
            transformations=[{"id": "merge", "options": {}}, _organize(names)],
            options=_table_options(names["median_mbps"]))

    def where(self) -> Dashboard:
        """Communes and wards worst first, the probe map, ISPs by access type; old
        districts for months before the reorganisation."""
        cfg, lay = self.cfg, Layout()
        lay.row(self.tr("row.areas"))
        for access in ("fixed", "mobile"):
            lay.add(12, 11, lambda g, a=access: self._area_table(
                f"where.communes_{a}", "p.communes", a, Q.UNIT, g))
        lay.row(self.tr("row.map"))
        lay.add(14, 16, self._map)
        for access in ("fixed", "mobile"):
            lay.add(10, 8, lambda g, a=access: self.panel(
                f"where.isp_{a}", "bargauge", self.tr("p.isp", access=self.access_name(a)), g,
                self.switched(alias="$tag_isp", raw=Q.median_speed(a, group=("isp",)),
                              rollup=Q.rollup_median(a, group=("isp",))),
                description=self.rollup_note(self.tr("p.isp.desc", target=_n(cfg.target(a)))),
                unit=MBPS,
                decimals=1, min=0, thresholds=speed_thresholds(cfg, a),
                color_mode="thresholds",
                options={"orientation": "horizontal", "displayMode": "gradient",
                         "reduceOptions": _REDUCE_LAST, "showUnfilled": True,
                         "valueMode": "color", "namePlacement": "auto", "sizing": "auto",
                         "minVizHeight": 16, "minVizWidth": 8, "maxVizHeight": 300}))
        effective = cfg.reform_effective
        lay.row(self.tr("row.legacy", date=f"{effective.day}/{effective.month}/{effective.year}"))
        for access in ("fixed", "mobile"):
            lay.add(12, 9, lambda g, a=access: self._area_table(
                f"where.districts_legacy_{a}", "p.districts_legacy", a, ("district",), g,
                legacy=True))
        return self._dashboard("where", lay, "now-30d")

    def _map(self, grid: GridPos) -> Panel:
        layers = []
        # A layer per target: raw points (A, B) or daily rollups (C, D), one of each pair
        # empty (Q.RESOLUTION).
        for ref, access in _MAP_REFS:
            layers.append({
                "type": "markers", "name": t(f"layer.{access}", self.lang),
                "config": {"showLegend": True,
                           "style": {"size": {"fixed": 8, "min": 4, "max": 12},
                                     "color": {"field": "median_mbps", "fixed": "dark-green"},
                                     "opacity": 0.85,
                                     "symbol": {"fixed": "img/icons/marker/circle.svg",
                                                "mode": "fixed"}}},
                "location": {"mode": "coords", "latitude": "latitude",
                             "longitude": "longitude"},
                "filterData": {"id": "byRefId", "options": ref},
                "tooltip": True})
        return self.panel(
            "where.map", "geomap", self.tr("p.map"), grid,
            [self.target("A", Q.probe_map("mobile"), "table"),
             self.target("B", Q.probe_map("fixed"), "table"),
             self.target("C", Q.rollup_probe_map("mobile"), "table"),
             self.target("D", Q.rollup_probe_map("fixed"), "table")],
            description=self.tr("p.map.desc") + " " + self.tr("note.rollup_map"), unit=MBPS,
            decimals=1,
            thresholds=speed_thresholds(self.cfg, "fixed"), color_mode="thresholds",
            # Each layer is coloured against its own access type's target.
            overrides=[Override("byFrameRefID", ref, (
                ("thresholds", speed_thresholds(self.cfg, access).to_json()),))
                for ref, access in _MAP_REFS],
            options={"view": {"id": "coords", "lat": MAP_CENTER[0], "lon": MAP_CENTER[1],
                              "zoom": 9, "allLayers": True},
                     "controls": {"showZoom": True, "mouseWheelZoom": True,
                                  "showAttribution": True},
                     "basemap": {"type": "default", "name": "Basemap", "config": {}},
                     "layers": layers, "tooltip": {"mode": "details"}})

    # ------------------------------------------------------------------ quality

    def quality(self) -> Dashboard:
        """Latency, jitter, loss, loaded latency; IPv6 and TSLCD per commune."""
        lay = Layout()
        lay.row(self.tr("row.latency"))
        lay.add(12, 8, lambda g: self.panel(
            "quality.rtt", "timeseries", self.tr("p.rtt"), g,
            self.quality_switched("$tag_access", raw=Q.latency_trend("rtt_ms"),
                                  rollup=lambda pa: Q.rollup_latency_trend("rtt_ms", pa)),
            description=self.tr("note.rollup_median"), unit="ms", min=0,
            color_mode="palette-classic", custom=_timeseries_custom(False),
            options=_TS_OPTIONS))
        lay.add(12, 8, lambda g: self.panel(
            "quality.jitter", "timeseries", self.tr("p.jitter"), g,
            self.quality_switched("$tag_access", raw=Q.latency_trend("jitter_ms"),
                                  rollup=lambda pa: Q.rollup_latency_trend("jitter_ms", pa)),
            description=self.tr("note.rollup_median"), unit="ms", min=0,
            color_mode="palette-classic", custom=_timeseries_custom(False),
            options=_TS_OPTIONS))
        lay.add(12, 8, lambda g: self.panel(
            "quality.loss", "timeseries", self.tr("p.loss"), g,
            self.quality_switched("$tag_access", raw=Q.loss_trend(),
                                  rollup=Q.rollup_loss_trend),
            description=self.tr("p.loss.desc", loss=_n(self.cfg.loss_alert_pct)),
            unit="percent", min=0,
            thresholds=Thresholds((Step("green", None), Step("red", self.cfg.loss_alert_pct))),
            color_mode="palette-classic", custom=_timeseries_custom(True), options=_TS_OPTIONS))
        lay.add(12, 8, lambda g: self.panel(
            "quality.loaded", "timeseries", self.tr("p.loaded"), g,
            [self.target("A", Q.loaded_latency_trend("loaded_rtt_ms"),
                         alias="loaded $tag_access"),
             self.target("B", Q.rollup_latency_trend("loaded_rtt_ms"),
                         alias="loaded $tag_access"),
             self.target("C", Q.loaded_latency_trend("idle_rtt_ms"), alias="idle $tag_access"),
             self.target("D", Q.rollup_latency_trend("idle_rtt_ms"),
                         alias="idle $tag_access"),
             self.target("E", Q.rollup_latency_trend("loaded_rtt_ms", True),
                         alias="loaded $tag_access"),
             self.target("F", Q.rollup_latency_trend("idle_rtt_ms", True),
                         alias="idle $tag_access")],
            description=f"{self.tr('p.loaded.desc')} {self.tr('note.rollup_median')}",
            unit="ms", min=0,
            color_mode="palette-classic", custom=_timeseries_custom(False),
            options=_TS_OPTIONS))
        self._limits(lay)
        lay.row(self.tr("row.readiness"))
        for key, method, metric, pct in (
                ("ipv6", contract.IPV6_METHOD, Q.IPV6_METRIC, "ipv6_ready_pct"),
                ("tslcd", contract.REACHABILITY_METHOD, Q.REACHABILITY_METRIC, "reachable_pct")):
            names = {pct: self.tr("col.pct_ok"), "tests": self.tr("col.tests"),
                     "commune_code": t("col.commune_code", self.lang),
                     "commune": t("col.commune", self.lang)}
            lay.add(12, 10, lambda g, k=key, m=method, mt=metric, p=pct, n=names: self.panel(
                f"quality.{k}", "table", self.tr(f"p.{k}"), g,
                [*self.switched("table", raw=Q.readiness_share(m, mt, Q.UNIT, p),
                                rollup=Q.rollup_readiness_share(mt, Q.UNIT, p)),
                 # no ISP or probe chosen: the per-unit points
                 self.target("C", Q.rollup_readiness_share(mt, Q.UNIT, p, True), "table")],
                description=self.tr(f"p.{k}.desc"), unit="percent", decimals=0,
                thresholds=Thresholds((Step("red", None), Step("orange", 50.0),
                                       Step("green", 100.0))),
                color_mode="thresholds", custom=_TABLE_CUSTOM,
                overrides=[_colour_cells(n[p]),
                           Override("byName", n["tests"], (("unit", "short"),))],
                transformations=[_organize(n)], options=_table_options(n[p])))
        return self._dashboard("quality", lay)

    def _limits(self, lay: Layout) -> None:
        """Tests limited by the probe; mobile download against the radio's RSRP and SINR."""
        lay.row(self.tr("row.limits"))
        names = {"limited": self.tr("col.limited"), "access": t("col.access", self.lang)}
        lay.add(8, 9, lambda g: self.panel(
            "quality.device_limited", "table", self.tr("p.device_limited"), g,
            self.switched("table", raw=Q.device_limited_table(),
                          rollup=Q.rollup_device_limited_table()),
            description=self.tr("p.device_limited.desc"), custom=_TABLE_CUSTOM,
            transformations=[_organize(names)], options=_table_options(None)))
        for key, metric, unit in (("rsrp", "radio_rsrp_dbm", "dBm"),
                                  ("sinr", "radio_sinr_db", "dB")):
            lay.add(8, 9, lambda g, k=key, m=metric, u=unit: self.panel(
                f"quality.radio_{k}", "xychart", self.tr(f"p.radio_{k}"), g,
                self.switched("table", raw=Q.radio_scatter(m), rollup=Q.rollup_radio_scatter(m)),
                description=f"{self.tr('p.radio.desc')} {self.tr('note.rollup_radio')}",
                unit=u,
                # the rollup target's buckets: a day at least (radio_1d), at most
                # RADIO_DOTS_PER_LINE of them per line
                interval="1d", max_data_points=Q.RADIO_DOTS_PER_LINE,
                options={"mapping": "auto", "series": [],
                         "legend": _TS_OPTIONS["legend"],
                         "tooltip": {"mode": "single", "sort": "none"}}))

    # ------------------------------------------------------------------ probes

    def probes(self) -> Dashboard:
        """Online/offline, silent, clock, spool, data budget."""
        lay = Layout()
        lay.row(self.tr("row.fleet"))
        counters = (("probes.online", "p.online", Q.probes_online(), "green"),
                    ("probes.offline", "p.offline", Q.probes_offline(), "red"),
                    ("probes.unsynced", "p.unsynced", Q.clocks_unsynced(), "orange"))
        for key, title, query, colour in counters:
            lay.add(6, 4, lambda g, k=key, ti=title, qq=query, c=colour: self.panel(
                k, "stat", self.tr(ti), g, [self.target("A", qq)], unit="short", decimals=0,
                thresholds=Thresholds((Step("green", None), Step(c, 1.0)))
                if c != "green" else Thresholds((Step("blue", None),)),
                color_mode="thresholds", options=_stat_options("value")))
        # Counted by Grafana (reduce "count" over the silent list's rows): an outer
        # InfluxQL count() over that subquery is ~20x slower (benchmarks/dashboards/run.py).
        lay.add(6, 4, lambda g: self.panel(
            "probes.silent_count", "stat", self.tr("p.silent_count"), g,
            [self.target("A", Q.silent_probes(), "table")], unit="short", decimals=0,
            thresholds=Thresholds((Step("green", None), Step("red", 1.0))),
            color_mode="thresholds", no_value="0",
            options=_stat_options("value") | {"reduceOptions": {
                "calcs": ["count"], "fields": "/^reporting$/", "values": False}}))
        online_map = [{"type": "value", "options": {
            "0": {"text": t("map.offline", self.lang), "color": "red", "index": 0},
            "1": {"text": t("map.online", self.lang), "color": "green", "index": 1}}}]
        synced_map = [{"type": "value", "options": {
            "0": {"text": t("map.unsynced", self.lang), "color": "orange", "index": 0},
            "1": {"text": t("map.synced", self.lang), "color": "green", "index": 1}}}]
        lay.add(24, 10, lambda g: self.panel(
            "probes.table", "table", self.tr("p.probe_table"), g,
            [self.target("A", Q.probe_table(), "table")], custom=_TABLE_CUSTOM,
            overrides=[Override("byName", "online", (("mappings", online_map),
                                                     ("custom.cellOptions",
                                                      {"type": "color-text"}))),
                       Override("byName", "clock_synced", (("mappings", synced_map),
                                                           ("custom.cellOptions",
                                                            {"type": "color-text"}))),
                       # 0 = nothing waits; otherwise when the oldest result was stored.
                       Override("byName", "oldest_waiting_ms", (
                           ("unit", "dateTimeFromNow"),
                           ("mappings", [{"type": "value", "options": {
                               "0": {"text": "–", "index": 0}}}]))),
                       Override("byName", "update_failed", (
                           ("custom.cellOptions", {"type": "color-text"}),
                           ("color", {"mode": "fixed", "fixedColor": "red"})))],
            transformations=[_organize({})], options=_table_options("online")))
        lay.add(12, 9, lambda g: self.panel(
            "probes.silent", "table", self.tr("p.silent"), g,
            [self.target("A", Q.silent_probes(), "table")],
            description=self.tr("p.silent.desc"), custom=_TABLE_CUSTOM,
            transformations=[_organize({})], options=_table_options(None)))
        lay.add(12, 9, lambda g: self.panel(
            "probes.last_seen", "table", self.tr("p.last_seen"), g,
            [self.target("A", Q.last_seen(), "table")], description=self.tr("p.last_seen.desc"),
            custom=_TABLE_CUSTOM,
            # Time is the points' one instant (2100): the result's time is last_ms.
            overrides=[Override("byName", "last_ms", (("unit", "dateTimeAsIso"),))],
            transformations=[_organize({})], options=_table_options("last_ms")))
        lay.add(12, 9, lambda g: self.panel(
            "probes.spool", "timeseries", self.tr("p.spool"), g,
            [self.target("A", Q.spool_trend(), alias="$tag_probe"),
             self.target("B", Q.spool_trend(daily=True), alias="$tag_probe")],
            unit="short", min=0,
            # The hourly rollup has one point an hour: shorter buckets are only empty ones.
            # At most SPOOL_POINTS per probe (a year: ~4-day maxima, not 365 daily points
            # for each of hundreds of lines no one can tell apart).
            interval="1h", max_data_points=Q.SPOOL_POINTS,
            color_mode="palette-classic", custom=_timeseries_custom(False),
            options=_TS_OPTIONS))
        lay.add(12, 9, lambda g: self.panel(
            "probes.budget", "table", self.tr("p.budget"), g,
            [self.target("A", Q.data_budget(), "table")], description=self.tr("p.budget.desc"),
            custom=_TABLE_CUSTOM,
            overrides=[Override("byName", "used_pct", (
                ("unit", "percent"), ("decimals", 0),
                ("thresholds", Thresholds((Step("green", None), Step("orange", 80.0),
                                           Step("red", 100.0))).to_json()),
                ("custom.cellOptions", {"type": "color-background"}))),
                Override("byName", "used_bytes", (("unit", "bytes"),)),
                Override("byName", "budget_bytes", (("unit", "bytes"),))],
            transformations=[_organize({})], options=_table_options(None)))
        return self._dashboard("probes", lay, "now-24h")


def build_all(cfg: BuildConfig, lang: Lang = "vi") -> dict[str, Dashboard]:
    """The four dashboards by short name."""
    b = Builder(cfg, lang)
    return {"overview": b.overview(), "where": b.where(), "quality": b.quality(),
            "probes": b.probes()}


def dumps(obj: Json) -> str:
    """Stable JSON text (UTF-8, Vietnamese kept readable, sorted nowhere: builder order)."""
    return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"


def render_all(cfg: BuildConfig) -> dict[str, str]:
    """Relative path under ``dashboards/`` -> file text, for every language."""
    out: dict[str, str] = {}
    for lang in LANGS:
        for name, dash in build_all(cfg, lang).items():
            out[f"json/{lang}/{name}.json"] = dumps(dash.to_json())
    return out
