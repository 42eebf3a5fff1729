"""A small typed builder for Grafana dashboard JSON (classic dashboard model, schema 39+).

Why our own instead of grafana-foundation-sdk's builders: the SDK has no InfluxDB query
type, its PyPI versions carry epoch-stamped pins, and what we need is a few panel types
with raw InfluxQL targets. The SDK's typed models are still used by the tests to check
that every key we emit is one Grafana's dashboard model knows (see ``checks.py``).

Every class renders with ``to_json()`` to plain dicts/lists in a stable key order, so
the committed JSON files diff cleanly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Json = dict[str, Any]

#: Grafana's dashboard schema version these dashboards are written for (Grafana 11.x).
SCHEMA_VERSION = 39
#: Grafana's data source type id for InfluxDB (1.x, 2.x and 3.x, InfluxQL mode).
INFLUX_TYPE = "influxdb"
GRID_COLUMNS = 24


@dataclass(frozen=True)
class DataSourceRef:
    """Which data source a panel or target uses (by uid, as provisioned)."""

    uid: str
    type: str = INFLUX_TYPE

    def to_json(self) -> Json:
        """``{"type", "uid"}``."""
        return {"type": self.type, "uid": self.uid}


@dataclass(frozen=True)
class InfluxQLTarget:
    """A raw InfluxQL query (Grafana's InfluxDB query editor in raw mode).

    ``result_format`` is ``time_series`` (one series per tag set) or ``table``
    (tags become columns, what tables and the geomap want).
    """

    ref_id: str
    query: str
    datasource: DataSourceRef
    result_format: Literal["time_series", "table"] = "time_series"
    alias: str | None = None
    hide: bool = False

    def to_json(self) -> Json:
        """The target as Grafana stores it."""
        out: Json = {
            "datasource": self.datasource.to_json(),
            "refId": self.ref_id,
            "query": self.query,
            "rawQuery": True,
            "resultFormat": self.result_format,
        }
        if self.alias:
            out["alias"] = self.alias
        if self.hide:
            out["hide"] = True
        return out


@dataclass(frozen=True)
class GridPos:
    """Position on Grafana's 24-column grid."""

    x: int
    y: int
    w: int
    h: int

    def to_json(self) -> Json:
        """``{"h", "w", "x", "y"}``."""
        return {"h": self.h, "w": self.w, "x": self.x, "y": self.y}


@dataclass(frozen=True)
class Step:
    """One threshold step: from ``value`` upwards the colour is ``color``."""

    color: str
    value: float | None  # None = the base step (minus infinity)

    def to_json(self) -> Json:
        """``{"color", "value"}``."""
        return {"color": self.color, "value": self.value}


@dataclass(frozen=True)
class Thresholds:
    """Absolute or percentage thresholds; the first step must be the base (None)."""

    steps: tuple[Step, ...]
    mode: Literal["absolute", "percentage"] = "absolute"

    def __post_init__(self) -> None:
        if not self.steps or self.steps[0].value is not None:
            raise ValueError("the first threshold step must be the base step (value None)")
        values = [s.value for s in self.steps[1:]]
        if any(v is None for v in values) or values != sorted(values):  # type: ignore[type-var]
            raise ValueError(f"threshold steps must be increasing: {values}")

    def values(self) -> list[float]:
        """The step values after the base."""
        return [float(s.value) for s in self.steps[1:] if s.value is not None]

    def to_json(self) -> Json:
        """``{"mode", "steps"}``."""
        return {"mode": self.mode, "steps": [s.to_json() for s in self.steps]}


@dataclass(frozen=True)
class Override:
    """A field override: a matcher and the properties it sets."""

    matcher_id: str
    matcher_options: Any
    properties: tuple[tuple[str, Any], ...]

    def to_json(self) -> Json:
        """Grafana's ``{"matcher", "properties"}``."""
        return {"matcher": {"id": self.matcher_id, "options": self.matcher_options},
                "properties": [{"id": k, "value": v} for k, v in self.properties]}


@dataclass
class Panel:
    """One panel. ``options`` and ``custom`` are the panel plugin's own settings."""

    type: str
    title: str
    grid: GridPos
    targets: list[InfluxQLTarget]
    datasource: DataSourceRef
    description: str = ""
    unit: str | None = None
    decimals: int | None = None
    min: float | None = None
    max: float | None = None
    thresholds: Thresholds | None = None
    color_mode: str | None = None
    custom: Json = field(default_factory=dict)
    mappings: list[Json] = field(default_factory=list)
    no_value: str | None = None
    options: Json = field(default_factory=dict)
    overrides: list[Override] = field(default_factory=list)
    transformations: list[Json] = field(default_factory=list)
    interval: str | None = None
    #: Grafana's "max data points": sizes ``$__interval`` (range / this, at least
    #: ``interval``).
    max_data_points: int | None = None
    id: int = 0  # assigned by Dashboard in layout order
    #: Semantic key ("overview.median_fixed") the tests find panels by; not rendered.
    key: str = ""

    def to_json(self) -> Json:
        """The panel as Grafana stores it."""
        defaults: Json = {}
        if self.unit:
            defaults["unit"] = self.unit
        if self.decimals is not None:
            defaults["decimals"] = self.decimals
        if self.min is not None:
            defaults["min"] = self.min
        if self.max is not None:
            defaults["max"] = self.max
        if self.color_mode:
            defaults["color"] = {"mode": self.color_mode}
        if self.thresholds:
            defaults["thresholds"] = self.thresholds.to_json()
        if self.custom:
            defaults["custom"] = self.custom
        if self.mappings:
            defaults["mappings"] = self.mappings
        if self.no_value is not None:
            defaults["noValue"] = self.no_value
        out: Json = {
            "id": self.id,
            "type": self.type,
            "title": self.title,
            "description": self.description,
            "datasource": self.datasource.to_json(),
            "gridPos": self.grid.to_json(),
            "targets": [t.to_json() for t in self.targets],
            "fieldConfig": {"defaults": defaults,
                            "overrides": [o.to_json() for o in self.overrides]},
            "options": self.options,
        }
        if self.transformations:
            out["transformations"] = self.transformations
        if self.interval:
            out["interval"] = self.interval
        if self.max_data_points:
            out["maxDataPoints"] = self.max_data_points
        return out


@dataclass
class RowPanel:
    """A collapsible row header spanning the grid."""

    title: str
    y: int
    id: int = 0

    def to_json(self) -> Json:
        """Grafana's row panel."""
        return {"id": self.id, "type": "row", "title": self.title, "collapsed": False,
                "gridPos": GridPos(0, self.y, GRID_COLUMNS, 1).to_json(), "panels": []}


@dataclass(frozen=True)
class QueryVariable:
    """A template variable filled from an InfluxQL ``SHOW TAG VALUES`` query.

    Multi-value with "All" = ``.*`` so a regex filter ``=~ /^$var$/`` keeps every point.
    """

    name: str
    label: str
    query: str
    datasource: DataSourceRef
    multi: bool = True
    include_all: bool = True
    all_value: str = ".*"
    #: Grafana's option regex; named groups ``value`` and ``text`` split one string into
    #: the option's value and its displayed text (Grafana 7.4+).
    regex: str = ""

    def to_json(self) -> Json:
        """The variable as Grafana stores it (refresh on time range change)."""
        return {
            "type": "query",
            "name": self.name,
            "label": self.label,
            "datasource": self.datasource.to_json(),
            "query": self.query,
            "refresh": 2,
            "multi": self.multi,
            "includeAll": self.include_all,
            "allValue": self.all_value,
            "regex": self.regex,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
            "hide": 0,
            "skipUrlSync": False,
        }


@dataclass(frozen=True)
class HiddenVariable:
    """A hidden single-value query variable that panels use in their queries, not a
    filter people pick: its query's first row's value (Grafana takes the second column
    of a ``SELECT``: the first is the time), refreshed when the time range changes."""

    name: str
    query: str
    datasource: DataSourceRef
    #: The value before the first refresh (what a saved dashboard shows first).
    default: str

    def to_json(self) -> Json:
        """The variable as Grafana stores it (``hide`` 2 = not shown)."""
        return {
            "type": "query",
            "name": self.name,
            "label": self.name,
            "datasource": self.datasource.to_json(),
            "query": self.query,
            "refresh": 2,
            "multi": False,
            "includeAll": False,
            "regex": "",
            "current": {"selected": False, "text": self.default, "value": self.default},
            "options": [],
            "sort": 0,
            "hide": 2,
            "skipUrlSync": True,
        }


@dataclass
class Dashboard:
    """A dashboard: metadata, variables and panels (ids assigned in order)."""

    uid: str
    title: str
    description: str
    tags: list[str]
    variables: list[QueryVariable | HiddenVariable]
    panels: list[Panel | RowPanel]
    time_from: str = "now-7d"
    refresh: str = "5m"
    timezone: str = "Asia/Ho_Chi_Minh"
    links: list[Json] = field(default_factory=list)

    def __post_init__(self) -> None:
        for i, panel in enumerate(self.panels, start=1):
            panel.id = i

    def data_panels(self) -> list[Panel]:
        """Panels that run queries (rows excluded)."""
        return [p for p in self.panels if isinstance(p, Panel)]

    def to_json(self) -> Json:
        """The dashboard model as Grafana's provisioning and HTTP API accept it."""
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": self.tags,
            "timezone": self.timezone,
            "editable": True,
            "graphTooltip": 1,
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "refresh": self.refresh,
            "time": {"from": self.time_from, "to": "now"},
            "fiscalYearStartMonth": 0,
            "liveNow": False,
            "weekStart": "monday",
            "links": self.links,
            "annotations": {"list": []},
            "templating": {"list": [v.to_json() for v in self.variables]},
            "panels": [p.to_json() for p in self.panels],
        }
