"""Checks on generated dashboard JSON that Grafana itself would otherwise reveal.

No JSON schema file for Grafana dashboards ships in any package we can install (the
grafana-foundation-sdk wheel carries typed models, not its repository's ``jsonschema/``
folder), so :func:`model_problems` round-trips the JSON through the SDK's typed
dashboard and panel-options models and reports every key the model does not know or
changes; :func:`structural_problems` adds our own rules.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from typing import Any

from collector.dashboards.build import MBPS, BuildConfig
from collector.dashboards.model import GRID_COLUMNS

Json = dict[str, Any]


def _diff(ours: Any, theirs: Any, path: str) -> Iterator[str]:
    """Every place where ``ours`` is not preserved in ``theirs`` (extra keys in theirs ok)."""
    if isinstance(ours, dict):
        if not isinstance(theirs, dict):
            yield f"{path}: became {type(theirs).__name__}"
            return
        for key, value in ours.items():
            if key not in theirs:
                yield f"{path}.{key}: not in Grafana's model"
            else:
                yield from _diff(value, theirs[key], f"{path}.{key}")
    elif isinstance(ours, list):
        if not isinstance(theirs, list) or len(theirs) != len(ours):
            yield f"{path}: list changed"
            return
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            yield from _diff(a, b, f"{path}[{i}]")
    elif ours != theirs:
        yield f"{path}: {ours!r} became {theirs!r}"


def model_problems(dashboard: Json) -> list[str]:
    """Round-trip through grafana-foundation-sdk's typed models (needs the dev extra)."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard

    def roundtrip(model: Any, data: Json) -> Any:
        return json.loads(json.dumps(model.from_json(data), cls=JSONEncoder))

    problems = list(_diff(dashboard, roundtrip(Dashboard, dashboard), "dashboard"))
    for panel in dashboard.get("panels", []):
        ptype = panel["type"]
        where = f"panel {panel['id']} ({ptype})"
        if ptype == "row":
            continue
        try:
            plugin = importlib.import_module(f"grafana_foundation_sdk.models.{ptype}")
        except ModuleNotFoundError:
            problems.append(f"{where}: no Grafana panel model for type {ptype!r}")
            continue
        problems += _diff(panel.get("options", {}), roundtrip(plugin.Options, panel["options"]),
                          f"{where}.options")
        custom = panel["fieldConfig"]["defaults"].get("custom")
        if custom is not None and hasattr(plugin, "FieldConfig"):
            problems += _diff(custom, roundtrip(plugin.FieldConfig, custom),
                              f"{where}.fieldConfig.defaults.custom")
    return problems


def _panels(dashboard: Json) -> list[Json]:
    return [p for p in dashboard.get("panels", []) if p.get("type") != "row"]


def structural_problems(dashboard: Json, datasource_uids: set[str]) -> list[str]:
    """Unique ids/refIds, grid within 24 columns without overlap, resolvable data sources."""
    problems: list[str] = []
    ids = [p.get("id") for p in dashboard.get("panels", [])]
    if len(ids) != len(set(ids)) or any(not isinstance(i, int) or i < 1 for i in ids):
        problems.append(f"panel ids not unique positive integers: {ids}")
    cells: dict[tuple[int, int], int] = {}
    for panel in dashboard.get("panels", []):
        g = panel.get("gridPos", {})
        x, y, w, h = (g.get(k) for k in ("x", "y", "w", "h"))
        if not all(isinstance(v, int) for v in (x, y, w, h)):
            problems.append(f"panel {panel.get('id')}: gridPos incomplete {g}")
            continue
        if x < 0 or y < 0 or w < 1 or h < 1 or x + w > GRID_COLUMNS:
            problems.append(f"panel {panel.get('id')}: gridPos {g} outside the 24-column grid")
        for cx in range(x, x + w):
            for cy in range(y, y + h):
                if (cx, cy) in cells:
                    problems.append(f"panel {panel.get('id')} overlaps panel {cells[(cx, cy)]}")
                    break
                cells[(cx, cy)] = panel.get("id")
            else:
                continue
            break
    for panel in _panels(dashboard):
        refs = [t.get("refId") for t in panel.get("targets", [])]
        if not refs or len(refs) != len(set(refs)):
            problems.append(f"panel {panel['id']}: refIds missing or repeated {refs}")
        sources = [panel.get("datasource")] + [t.get("datasource") for t in panel["targets"]]
        for ds in sources:
            if not ds or ds.get("uid") not in datasource_uids or ds.get("type") != "influxdb":
                problems.append(f"panel {panel['id']}: data source {ds} is not provisioned")
        for target in panel["targets"]:
            if not target.get("rawQuery") or not target.get("query", "").strip():
                problems.append(f"panel {panel['id']}/{target.get('refId')}: no raw query")
    for var in dashboard.get("templating", {}).get("list", []):
        if (var.get("datasource") or {}).get("uid") not in datasource_uids:
            problems.append(f"variable {var.get('name')}: data source not provisioned")
    return problems


def speed_thresholds(dashboard: Json) -> dict[str, list[list[float]]]:
    """Panel title -> threshold step values of every Mb/s threshold set (defaults and
    overrides), for comparison with the configured targets."""
    out: dict[str, list[list[float]]] = {}
    for panel in _panels(dashboard):
        defaults = panel["fieldConfig"]["defaults"]
        if defaults.get("unit") != MBPS:
            continue
        sets = []
        if "thresholds" in defaults:
            sets.append(defaults["thresholds"])
        for override in panel["fieldConfig"].get("overrides", []):
            props = {p["id"]: p["value"] for p in override["properties"]}
            if "thresholds" in props and props.get("unit", MBPS) == MBPS \
                    and override["matcher"]["id"] == "byFrameRefID":
                sets.append(props["thresholds"])
        out[panel["title"]] = [[s["value"] for s in th["steps"][1:]] for th in sets]
    return out


def allowed_speed_steps(cfg: BuildConfig) -> set[float]:
    """The only values a Mb/s threshold may take: the configured targets."""
    tg = cfg.targets
    return {tg.mobile_mbps, tg.fixed_mbps, tg.fixed_2030_mbps}
