"""Every dashboard, variable and alert query runs on a real influxd holding a known data
set written through the collector (``collector.service.ingest``), and the key panels
return the numbers computed here from the same messages.

Grafana cannot run here: ``fake_grafana_interpolate`` (a named fake) substitutes
``$timeFilter``, ``$__interval`` and the variables the way Grafana's InfluxDB data
source does, and ``fake_grafana_resolution`` refreshes the hidden ``resolution`` variable
from influxd for each time range, as Grafana does on a time range change. Throughput
panels read raw points for ranges under 2 days (exact) and rollups beyond (hourly, daily
from 8 days: medians of the lines' hourly/daily medians, computed here independently).
"""

from __future__ import annotations

import json
import statistics
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from collector.config import InfluxSettings
from collector.core.influx import InfluxClient, Series
from collector.core.registry import Registry
from collector.core.registrymetrics import RegistryMetrics
from collector.core.rollups import DAY_MS, day_start, hour_start
from collector.core.service import ingest
from collector.dashboards.build import BuildConfig, build_all
from collector.dashboards.files import ROOT
from collector.dashboards.provisioning import alert_rules
from devstack import services
from netmon.contract import LinkStatus, Metrics, ResultMessage, StatusMessage
from tests.helpers import dashboards as H

CFG = BuildConfig.from_config()
DB = "netmon"
#: Silent 2 hours, silent 10 days, last status offline; not the removed probe.
NOT_REPORTING = {H.SILENT_PROBE, H.DEAD_PROBE, H.OFFLINE_PROBE}


@pytest.fixture(scope="module")
def loaded(influxd_module: services.Service) -> Iterator[tuple[InfluxClient, H.DataSet]]:
    """influxd with the data set, written once for the module (loading takes seconds)."""
    url = f"http://{influxd_module.host}:{influxd_module.port}"
    ds = H.make_dataset()
    report = ingest([*ds.results, *ds.statuses, *ds.old, *ds.legacy], H.SITES, url,
                    database=DB)
    assert not report.dead, report.dead[:3]
    settings = InfluxSettings(url=url, database=DB)
    # The collector's registry points: half an hour ago every probe was registered; now
    # the removed one is not (its last points leave the alert's 15-minute window).
    RegistryMetrics(Registry.from_sites(H.SITES), settings).write_once(
        ds.now - timedelta(minutes=30))
    current = [s for s in H.SITES if s.probe_id != H.REMOVED_PROBE]
    assert RegistryMetrics(Registry.from_sites(current), settings).write_once(ds.now) == \
        len(current)
    client = InfluxClient(settings)
    yield client, ds
    client.close()


def _committed(lang: str, name: str) -> dict[str, Any]:
    return json.loads((ROOT / "json" / lang / f"{name}.json").read_text(encoding="utf-8"))


def _all_queries() -> list[tuple[str, str]]:
    out = []
    for lang in ("vi", "en"):
        for name in ("overview", "where", "quality", "probes"):
            dash = _committed(lang, name)
            for var in dash["templating"]["list"]:
                out.append((f"{lang}/{name}/var:{var['name']}", var["query"]))
            for panel in dash["panels"]:
                for target in panel.get("targets", []):
                    out.append((f"{lang}/{name}/{panel['id']}:{panel['title']}/{target['refId']}",
                                target["query"]))
    return out


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _window(ds: H.DataSet) -> tuple[int, int]:
    """All the data set (from the start of its first hour: rollup points are stamped at
    their hour's start): a bit over 48 hours, so throughput panels read hourly rollups."""
    return hour_start(_ms(ds.start)), _ms(ds.now)


def _raw_start(ds: H.DataSet) -> datetime:
    """47 to 48 hours back, at an hour's start: under 2 days, so raw points."""
    return datetime.fromtimestamp(hour_start(_ms(ds.now - timedelta(hours=47))) / 1000, UTC)


def _raw_window(ds: H.DataSet) -> tuple[int, int]:
    return _ms(_raw_start(ds)), _ms(ds.now)


def _daily_window(ds: H.DataSet) -> tuple[int, int]:
    """9 days (daily rollups); the dead probe's results 10 days back stay outside."""
    return _ms(ds.now - timedelta(days=9)), _ms(ds.now)


def _resolution_query() -> str:
    [var] = [v for v in _committed("vi", "overview")["templating"]["list"]
             if v["name"] == "resolution"]
    return str(var["query"])


def _legacy_window() -> tuple[int, int]:
    return (int(H.LEGACY_START.timestamp() * 1000) - 1,
            int(H.LEGACY_END.timestamp() * 1000))


def _run(client: InfluxClient, query: str, ds: H.DataSet,
         variables: dict[str, list[str] | None] | None = None,
         window: tuple[int, int] | None = None) -> list[Series]:
    start, end = window or _window(ds)
    resolution = H.fake_grafana_resolution(client, _resolution_query(), start, end)
    sql = H.fake_grafana_interpolate(query, start, end, "1h", variables, resolution)
    return client.query(sql)[0]


def _shown(client: InfluxClient, panel: dict[str, Any], ds: H.DataSet,
           variables: dict[str, list[str] | None] | None = None,
           window: tuple[int, int] | None = None, refs: str = "AB") -> list[Series]:
    """What a panel shows from its targets ``refs`` (switched pairs: one of them is empty
    at any resolution, which is checked)."""
    got = {t["refId"]: _run(client, t["query"], ds, variables, window)
           for t in panel["targets"] if t["refId"] in refs}
    assert len([r for r in got.values() if r]) <= 1, (panel["title"], got)
    return [s for series in got.values() for s in series]


def _panel(name: str, key: str) -> dict[str, Any]:
    """The committed JSON of the panel the builder knows by ``key``."""
    dash = build_all(CFG, "vi")[name]
    pid = next(p.id for p in dash.data_panels() if p.key == key)
    return next(p for p in _committed("vi", name)["panels"] if p["id"] == pid)


def _key(name: str, panel: dict[str, Any]) -> str:
    """The builder's key of a committed panel (by id; same layout in every language)."""
    dash = build_all(CFG, "vi")[name]
    return next((p.key for p in dash.data_panels() if p.id == panel["id"]), "")


def _value(series: list[Series], column: str | None = None) -> float:
    assert len(series) == 1 and len(series[0].values) == 1, series
    row = series[0].rows()[0]
    return float(row[column] if column else series[0].values[0][1])


def test_every_query_runs_and_most_return_data(loaded: tuple[InfluxClient, H.DataSet]) -> None:
    client, ds = loaded
    queries = _all_queries()
    assert len(queries) > 60
    empty = []
    for where, query in queries:
        found = False
        # Raw points, hourly and daily rollups: each switched target has data at one.
        for window in (_raw_window(ds), _window(ds), _daily_window(ds)):
            for variables in (None, {"commune": ["18814"], "access": ["fixed", "mobile"]},
                              {"isp": ["VNPT"]}):
                # raises InfluxError on any error
                series = _run(client, query, ds, variables, window)
                # every line's quality rollups are read only when a commune (ISP, probe)
                # is chosen; other targets must show data with "All"
                found = found or (bool(series) and (
                    variables is None or "!= '.*.*.*'" in query or "!= '.*.*'" in query))
        if not found:
            # The old-district tables show months before the reorganisation only.
            legacy = _run(client, query, ds, None, _legacy_window())
            if not legacy or "2025-06-30T17:00:00Z" not in query:
                empty.append(where)
    assert not empty, empty


def test_commune_variable_is_code_with_official_name(
        loaded: tuple[InfluxClient, H.DataSet]) -> None:
    """The commune variable: value = official code (what panels filter commune_code on),
    text = the official name from the reference data; no district variable."""
    client, ds = loaded
    for lang in ("vi", "en"):
        variables = {v["name"]: v for v in _committed(lang, "overview")["templating"]["list"]}
        assert list(variables) == ["commune", "isp", "access", "probe", "resolution"]
    var = variables["commune"]
    values = [v[1] for v in _run(client, var["query"], ds)[0].values]
    options = H.fake_grafana_variable_options(values, var["regex"])
    assert sorted(options) == sorted({(s.commune, s.commune_code) for s in H.SITES})
    assert ("Xã Kỳ Hoa", "18814") in options
    # Chosen by code, the median panel sees both of Xã Kỳ Hoa's probes (two old units).
    rows = H.throughput(ds, "fixed", _raw_start(ds), ds.now, commune_code="18814")
    assert {r.probe_id for r, _s in rows} == {"ka-ubnd-01", "ka-school-02"}
    panel = _panel("overview", "overview.median_fixed")
    assert _value(_shown(client, panel, ds, {"commune": ["18814"]}, _raw_window(ds))) == \
        pytest.approx(H.median(H.downloads(rows)), rel=1e-9)


def test_variables_list_the_tag_values(loaded: tuple[InfluxClient, H.DataSet]) -> None:
    client, ds = loaded
    dash = _committed("vi", "overview")
    got = {}
    for var in dash["templating"]["list"]:
        series = _run(client, var["query"], ds, {"commune": ["18547", "18523"]})
        got[var["name"]] = sorted(v[1] for v in series[0].values)
    assert got["access"] == ["fixed", "mobile"]
    assert got["isp"] == sorted({isp for links in H.LINKS.values() for _l, _a, isp, _b in links})
    # probes follow the chosen communes
    assert got["probe"] == sorted(s.probe_id for s in H.SITES
                                  if s.commune_code in ("18547", "18523"))


@pytest.mark.parametrize("access", ["mobile", "fixed"])
def test_median_and_share_meeting_target(loaded: tuple[InfluxClient, H.DataSet],
                                         access: str) -> None:
    client, ds = loaded
    raw = _raw_window(ds)
    values = H.downloads(H.throughput(ds, access, _raw_start(ds), ds.now))
    median = _value(_shown(client, _panel("overview", f"overview.median_{access}"), ds,
                           None, raw))
    assert median == pytest.approx(H.median(values), rel=1e-9)
    share = _value(_shown(client, _panel("overview", f"overview.share_{access}"), ds, None,
                          raw))
    assert share == pytest.approx(H.share_at_least(values, CFG.target(access)), rel=1e-9)
    assert 0 < share < 100  # the data set straddles the target


def test_filtered_by_communes_and_2030_share(loaded: tuple[InfluxClient, H.DataSet]) -> None:
    client, ds = loaded
    chosen = ("18814", "18790")
    raw = _raw_window(ds)
    values = H.downloads([(r, s) for r, s in H.throughput(ds, "fixed", _raw_start(ds), ds.now)
                          if s.commune_code in chosen])
    panel = _panel("overview", "overview.median_fixed")
    got = _value(_shown(client, panel, ds, {"commune": list(chosen)}, raw))
    assert got == pytest.approx(H.median(values), rel=1e-9)
    all_fixed = H.downloads(H.throughput(ds, "fixed", _raw_start(ds), ds.now))
    panel = _panel("overview", "overview.share_fixed_2030")
    assert _value(_shown(client, panel, ds, None, raw)) == pytest.approx(
        H.share_at_least(all_fixed, CFG.targets.fixed_2030_mbps), rel=1e-9)


def test_peak_hour_median(loaded: tuple[InfluxClient, H.DataSet]) -> None:
    """The collector writes local_hour (hour of started_at in Vietnam); the peak panel's
    median equals the median of tests started 19:00-22:59 local time."""
    client, ds = loaded
    rows = H.throughput(ds, "mobile", _raw_start(ds), ds.now)
    peak = [r.metrics.download_mbps for r, _s in rows
            if CFG.peak_start_hour <= H.local_hour(r) < CFG.peak_end_hour]
    assert peak and len(peak) < len(rows)
    panel = _panel("overview", "overview.peak_mobile")
    assert _value(_shown(client, panel, ds, None, _raw_window(ds))) == pytest.approx(
        H.median(peak), rel=1e-9)


def test_legacy_district_table_only_before_the_reform(
        loaded: tuple[InfluxClient, H.DataSet]) -> None:
    """Old-district tables: June 2025 by the site's old district (Xã Kỳ Hoa's two probes
    land in two old districts), and nothing for months after 1 July 2025."""
    client, ds = loaded
    panel = _panel("where", "where.districts_legacy_fixed")
    assert "2025" in panel["title"]
    assert not _run(client, panel["targets"][0]["query"], ds)  # recent window: empty
    window = _legacy_window()
    series = _run(client, panel["targets"][0]["query"], ds, None, window)
    shares = {s.tags["district"]: s.rows()[0]["share_pct"]
              for s in _run(client, panel["targets"][1]["query"], ds, None, window)}
    assert {s.tags["district"] for s in series} == {
        "Thị xã Kỳ Anh", "Huyện Kỳ Anh", "Huyện Hương Khê", "Thành phố Hà Tĩnh"}
    for s in series:
        district = s.tags["district"]
        values = [r.metrics.download_mbps for r in ds.legacy if r.access == "fixed"
                  and ds.site(r.probe_id).district == district]
        row = s.rows()[0]
        assert row["median_mbps"] == pytest.approx(H.median(values), rel=1e-9)
        assert row["tests"] == len(values)
        assert shares[district] == pytest.approx(H.share_at_least(values, CFG.target("fixed")))
    assert panel["options"]["sortBy"] == [{"displayName": "Trung vị (Mb/s)", "desc": False}]


def test_commune_table_and_map(loaded: tuple[InfluxClient, H.DataSet]) -> None:
    client, ds = loaded
    raw = _raw_window(ds)
    panel = _panel("where", "where.communes_mobile")
    series = _shown(client, panel, ds, None, raw)
    assert {s.tags["commune_code"] for s in series} == {"18814", "18790", "18547"}
    for s in series:
        values = H.downloads(H.throughput(ds, "mobile", _raw_start(ds), ds.now,
                                          commune_code=s.tags["commune_code"]))
        assert s.tags["commune"] == next(x.commune for x in H.SITES
                                         if x.commune_code == s.tags["commune_code"])
        assert s.rows()[0]["median_mbps"] == pytest.approx(H.median(values), rel=1e-9)
    geomap = _panel("where", "where.map")
    rows = {s.tags["probe"]: s.rows()[0]
            for s in _run(client, geomap["targets"][1]["query"], ds, None, raw)}
    site = ds.site("ka-ubnd-01")
    assert rows["ka-ubnd-01"]["latitude"] == site.latitude
    assert rows["ka-ubnd-01"]["longitude"] == site.longitude
    values = H.downloads(H.throughput(ds, "fixed", _raw_start(ds), ds.now,
                                      probe_id="ka-ubnd-01"))
    assert rows["ka-ubnd-01"]["median_mbps"] == pytest.approx(H.median(values), rel=1e-9)


def test_isp_comparison(loaded: tuple[InfluxClient, H.DataSet]) -> None:
    client, ds = loaded
    panel = _panel("where", "where.isp_fixed")
    got = {s.tags["isp"]: s.values[0][1] for s in _shown(client, panel, ds, None,
                                                          _raw_window(ds))}
    rows = H.throughput(ds, "fixed", _raw_start(ds), ds.now)
    expected = {isp: H.median([r.metrics.download_mbps for r, _s in rows if r.isp == isp])
                for isp in {r.isp for r, _s in rows}}
    assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("resolution", ["raw", "1h", "1d"])
@pytest.mark.parametrize(("key", "method", "metric"),
                         [("quality.tslcd", "reachability", "reachable"),
                          ("quality.ipv6", "ipv6", "ipv6_reachable")])
def test_readiness_per_commune(loaded: tuple[InfluxClient, H.DataSet], key: str,
                               method: str, metric: str, resolution: str) -> None:
    """Raw points, hourly and daily rollups (sums of 0/1 over counts: exact at each); at
    the rollup resolutions from the per-unit points with no ISP or probe chosen, from
    every line's with one chosen."""
    client, ds = loaded
    window, since = {"raw": (_raw_window(ds), _raw_start(ds)),
                     "1h": (_window(ds), ds.start), "1d": (_daily_window(ds), ds.start)}[
        resolution]
    assert H.fake_grafana_resolution(client, _resolution_query(), *window) == resolution
    panel = _panel("quality", key)
    for chosen, via in (({}, "C"), ({"isp": ["VNPT"]}, "B"), ({"access": ["fixed"]}, "C"),
                        ({"probe": ["ka-ubnd-01", "hk-ubnd-01"]}, "B")):
        mine = [r for r in ds.results if r.method == method and metric in r.metrics.values()
                and r.started_at >= since and r.isp in chosen.get("isp", [r.isp])
                and r.access in chosen.get("access", [r.access])
                and r.probe_id in chosen.get("probe", [r.probe_id])]
        want = {}
        for commune in {ds.site(r.probe_id).commune for r in mine}:
            values = [r.metrics.values()[metric] for r in mine
                      if ds.site(r.probe_id).commune == commune]
            want[commune] = [pytest.approx(100.0 * sum(values) / len(values)), len(values)]
        assert want, chosen
        shown = {t["refId"]: _run(client, t["query"], ds, dict(chosen) or None, window)
                 for t in panel["targets"]}
        assert [ref for ref, series in shown.items() if series] == \
            ["A" if resolution == "raw" else via], chosen
        assert {s.tags["commune"]: s.values[0][1:] for series in shown.values()
                for s in series} == want, chosen
    series = _shown(client, panel, ds, None, window, "ABC")
    got = {s.tags["commune"]: s.values[0][1:] for s in series}
    expected = {}
    for commune in {s.commune for s in H.ACTIVE}:
        values = [r.metrics.values()[metric] for r in ds.results if r.method == method
                  and ds.site(r.probe_id).commune == commune and metric in r.metrics.values()
                  and r.started_at >= since]
        expected[commune] = [100.0 * sum(values) / len(values), len(values)]
    assert got.keys() == expected.keys()
    for commune, (pct, n) in expected.items():
        assert got[commune][0] == pytest.approx(pct) and got[commune][1] == n
    assert any(v[0] < 100 for v in got.values()) and any(v[0] == 100 for v in got.values())
    # Tests that broke (no metric) are not counted as "not ready".
    if method == "ipv6":
        broken = sum(1 for r in ds.results if r.method == "ipv6" and not r.ok
                     and r.error is not None and r.error.code == "tool_missing"
                     and r.started_at >= since)
        assert broken and got["Xã Kỳ Hoa"][1] == sum(
            1 for r in ds.results if r.method == "ipv6" and r.started_at >= since
            and ds.site(r.probe_id).commune == "Xã Kỳ Hoa") - broken


def test_probe_health(loaded: tuple[InfluxClient, H.DataSet]) -> None:
    client, ds = loaded
    reporting = {s.probe_id for s in H.ACTIVE}
    online = _value(_run(client, _panel("probes", "probes.online")["targets"][0]["query"], ds))
    offline = _value(_run(client, _panel("probes", "probes.offline")["targets"][0]["query"], ds))
    unsynced = _value(_run(client, _panel("probes", "probes.unsynced")["targets"][0]["query"],
                           ds))
    assert (online, offline, unsynced) == (len(reporting) - 1, 1, 1)
    silent = _run(client, _panel("probes", "probes.silent")["targets"][0]["query"], ds)
    assert {s.tags["probe"] for s in silent} == NOT_REPORTING
    # The stat counts rows of the silent list in Grafana (reduce "count", table format
    # merges the per-probe series into one table): here the rows are counted directly.
    counter = _panel("probes", "probes.silent_count")
    assert counter["options"]["reduceOptions"]["calcs"] == ["count"]
    rows = sum(len(s.values) for s in _run(client, counter["targets"][0]["query"], ds))
    assert rows == len(NOT_REPORTING)
    table = {s.tags["probe"]: s.rows()[0]
             for s in _run(client, _panel("probes", "probes.table")["targets"][0]["query"], ds)}
    assert table[H.OFFLINE_PROBE]["online"] == 0 and table[H.UNSYNCED_PROBE]["clock_synced"] == 0
    # Fleet health (issue 18): version, board, update event and failures, oldest waiting.
    old = table[H.OLD_AGENT_PROBE]
    assert old["agent_version"] == "0.0.9" and old["update_failed"] == "0.2.0: hash_mismatch"
    assert old["update_event"] == "release 0.2.0 not installed: hash_mismatch"
    assert old["board_model"] == "Raspberry Pi 4 Model B Rev 1.5"
    assert table[H.LOSSY_PROBE]["update_failed"] == "" and \
        table[H.LOSSY_PROBE]["oldest_waiting_ms"] == 0
    spool_status = [s for s in ds.statuses if s.probe_id == H.SPOOL_PROBE][-1]
    assert spool_status.oldest_waiting_at is not None
    assert table[H.SPOOL_PROBE]["oldest_waiting_ms"] == \
        int(spool_status.oldest_waiting_at.timestamp() * 1000)
    last = _last_shown(client, ds, _window(ds))
    expected_last = max(r.started_at for r in ds.results if r.probe_id == H.SILENT_PROBE)
    assert last[H.SILENT_PROBE] == int(expected_last.timestamp() * 1000)
    budget = _run(client, _panel("probes", "probes.budget")["targets"][0]["query"], ds)
    mobile = [s.rows()[0] for s in budget if s.tags["link"] == "mobile"]
    assert mobile and all(0 < r["used_pct"] < 100 for r in mobile)


def test_alert_rule_queries(loaded: tuple[InfluxClient, H.DataSet]) -> None:
    """Alert queries run with their own relative windows; which series cross the rule's
    threshold is what Grafana's reduce(last) + threshold would fire on."""
    client, ds = loaded
    rules = {r["uid"]: r for r in alert_rules(CFG)["groups"][0]["rules"]}

    def firing(uid: str, tag: str) -> set[str]:
        rule = rules[uid]
        cond = rule["data"][2]["model"]["conditions"][0]["evaluator"]
        op, limit = cond["type"], cond["params"][0]
        out = set()
        for s in client.query(rule["data"][0]["model"]["query"])[0]:
            value = [v for v in s.values if v[1] is not None][-1][1]
            if (op == "lt" and value < limit) or (op == "gt" and value > limit):
                out.add(s.tags[tag])
        return out

    rule = rules["netmon-probe-silent"]
    # No registry points at all (collector not writing them) must not read as "all fine".
    assert rule["noDataState"] == "Alerting"
    assert firing("netmon-probe-silent", "probe") == NOT_REPORTING
    assert firing("netmon-loss", "probe") == {H.LOSSY_PROBE}
    assert firing("netmon-spool-growing", "probe") == {H.SPOOL_PROBE}
    assert firing("netmon-old-agent", "probe") == {H.OLD_AGENT_PROBE}
    assert rules["netmon-old-agent"]["for"] == CFG.old_agent_for
    day = ds.now - timedelta(hours=24)
    for access in ("mobile", "fixed"):
        expected = set()
        for code in {s.commune_code for s in H.SITES}:
            values = H.downloads(H.throughput(ds, access, day + timedelta(milliseconds=1),
                                              ds.now, commune_code=code))
            if values and H.median(values) < CFG.target(access):
                expected.add(code)
        assert expected, access
        assert firing(f"netmon-commune-below-{access}", "commune_code") == expected



def _frame_columns(series: list[Series], fmt: str) -> set[str]:
    """Field names Grafana gets from a result (part of the fake): table format turns tags
    into columns, and Grafana's InfluxDB data source names the time column "Time"."""
    cols: set[str] = set()
    for s in series:
        cols |= {"Time" if c == "time" else c for c in s.columns}
        cols |= set(s.tags) if fmt == "table" else set()
    return cols


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_transformations_overrides_and_map_fields_exist(
        loaded: tuple[InfluxClient, H.DataSet], lang: str) -> None:
    """Renames, hidden columns, byName overrides, table sort and geomap fields all refer to
    columns the queries really return (a typo would silently show nothing in Grafana)."""
    client, ds = loaded
    for name in ("overview", "where", "quality", "probes"):
        for panel in _committed(lang, name)["panels"]:
            if panel["type"] == "row":
                continue
            cols: set[str] = set()
            # Old-district tables hold data only for months before the reorganisation.
            window = _legacy_window() if "districts_legacy" in _key(name, panel) else None
            for target in panel["targets"]:
                cols |= _frame_columns(_run(client, target["query"], ds, None, window),
                                       target["resultFormat"])
            where = f"{lang}/{name}/{panel['title']}"
            final = set(cols)
            for tr in panel.get("transformations", []):
                if tr["id"] == "organize":
                    opts = tr["options"]
                    assert set(opts["renameByName"]) <= cols, (where, opts, cols)
                    assert set(opts["excludeByName"]) <= cols, (where, opts, cols)
                    final = {opts["renameByName"].get(c, c) for c in cols
                             if c not in opts["excludeByName"]}
            for override in panel["fieldConfig"]["overrides"]:
                if override["matcher"]["id"] == "byName":
                    assert override["matcher"]["options"] in final, (where, override, final)
            for sort in panel["options"].get("sortBy", []):
                assert sort["displayName"] in final | {"Time"}, (where, sort, final)
            for layer in panel["options"].get("layers", []):
                fields = {layer["location"]["latitude"], layer["location"]["longitude"],
                          layer["config"]["style"]["color"]["field"]}
                assert fields <= final, (where, fields, final)



def test_rollup_panels_after_a_late_result(influxd: services.Service) -> None:
    """Panels reading rollups (share meeting the target, commune share, last status, spool
    trend hourly and daily, median at hourly and daily resolution) equal the numbers
    computed from the messages, and still do after a probe's spool delivers a result and
    a status a day and a half late."""
    url = f"http://{influxd.host}:{influxd.port}"
    ds = H.make_dataset()
    assert not ingest([*ds.results, *ds.statuses], H.SITES, url, database=DB).dead
    client = InfluxClient(InfluxSettings(url=url, database=DB))
    share_q = _panel("overview", "overview.share_fixed")["targets"][0]["query"]
    table_q = _panel("where", "where.communes_fixed")["targets"][2]["query"]
    assert 'sum("met")' in table_q
    median_panel = _panel("overview", "overview.median_fixed")
    spool_q = _panel("probes", "probes.spool")["targets"][0]["query"]
    probe, (link, access, isp, _b) = "hk-ubnd-01", H.LINKS["hk-ubnd-01"][0]
    code = ds.site(probe).commune_code
    when = ds.now - timedelta(hours=36, minutes=13)

    def check(results: list[ResultMessage], late_spool: int | None) -> None:
        values = [r.metrics.download_mbps for r in results
                  if r.method in H.THROUGHPUT and r.ok and "cross_traffic" not in r.flags
                  and r.access == "fixed" and r.metrics.download_mbps is not None]
        assert _value(_run(client, share_q, ds)) == pytest.approx(
            H.share_at_least(values, CFG.target("fixed")), rel=1e-9)
        mine = [r.metrics.download_mbps for r in results
                if r.method in H.THROUGHPUT and r.ok and "cross_traffic" not in r.flags
                and r.access == "fixed" and ds.site(r.probe_id).commune_code == code
                and r.metrics.download_mbps is not None]
        shares = {s.tags["commune_code"]: s.rows()[0]["share_pct"]
                  for s in _run(client, table_q, ds)}
        assert shares[code] == pytest.approx(H.share_at_least(mine, CFG.target("fixed")))
        hour = hour_start(int(when.timestamp() * 1000))
        spool = {int(v[0]): v[1] for s in _run(client, spool_q, ds, {"probe": [probe]})
                 for v in s.values}
        assert spool[hour] == (late_spool or 0)
        # The median panel at both rollup resolutions: the late result's hour and day
        # are recomputed with it.
        for window, res in ((_window(ds), "1h"), (_daily_window(ds), "1d")):
            medians = H.medians_of(H.bucket_values(results, ds, res, _dt(window[0]),
                                                   _dt(window[1]), "fixed"))
            got = _value(_shown(client, median_panel, ds, None, window))
            assert got == pytest.approx(H.median(medians), rel=1e-9), res
        daily = _panel("probes", "probes.spool")
        spool_days = {int(v[0]): v[1] for s in _shown(client, daily, ds, {"probe": [probe]},
                                                       _daily_window(ds)) for v in s.values}
        # (the spool probe's last hour has a growing spool: another local day)
        assert spool_days[day_start(_ms(when))] == (late_spool or 0)
        # The loss trend (quality rollups): the late latency result's hour (one with no
        # late throughput result: every method marks its hour for recomputing).
        loss_hour = hour_start(_ms(when - timedelta(hours=3)))
        losses = [r.metrics.loss_pct for r in results if r.method in H.LATENCY and r.ok
                  and r.metrics.loss_pct is not None and r.access == access
                  and hour_start(_ms(r.started_at)) == loss_hour]
        loss = {int(v[0]): v[1] for s in _shown(client, _panel("quality", "quality.loss"), ds,
                                                 {"access": [access]}, _window(ds), "ABC")
                for v in s.values}
        assert loss[loss_hour] == pytest.approx(statistics.mean(losses), rel=1e-9)
        # The quality trends over every line (per-access rollups), hourly and daily: the
        # late latency result's hour and (closed) day; every access type's buckets.
        for window, res in ((_window(ds), "1h"), (_daily_window(ds), "1d")):
            lines: dict[tuple[str, int], dict[tuple[str, str], list[tuple[float, float]]]] = {}
            for r in results:
                m = r.metrics
                if (r.method in H.LATENCY and r.ok and m.rtt_ms is not None
                        and m.loss_pct is not None
                        and H.bucket_start(r.started_at, res) >= _dt(window[0])):
                    bucket = _ms(H.bucket_start(r.started_at, res))
                    lines.setdefault((r.access, bucket), {}).setdefault(
                        (r.probe_id, r.link), []).append((m.rtt_ms, m.loss_pct))
            rtt = {k: H.median([H.median([x for x, _ in v]) for v in per_line.values()])
                   for k, per_line in lines.items()}
            mean_loss = {k: statistics.mean([y for v in per_line.values() for _, y in v])
                         for k, per_line in lines.items()}
            for key, want in (("quality.rtt", rtt), ("quality.loss", mean_loss)):
                panel = _panel("quality", key)
                got = {(s.tags["access"], int(v[0])): v[1]
                       for s in _shown(client, panel, ds, None, window, "ABC")
                       for v in s.values}
                assert got == pytest.approx(want, rel=1e-9), (key, res)
                via = [t["refId"] for t in panel["targets"]
                       if _run(client, t["query"], ds, None, window)]
                assert via == ["C"], (key, res)  # the per-access points
            late_bucket = (access, _ms(H.bucket_start(when - timedelta(hours=3), res)))
            assert late_bucket in mean_loss, res

    try:
        check(ds.results, None)
        late = ResultMessage(id=uuid.uuid4(), method="iperf3", target="mlab-hn",
                             started_at=when, probe_id=probe, link=link, access=access,
                             isp=isp, agent_version="0.1.0", duration_s=10.0,
                             metrics=Metrics(download_mbps=999.0, upload_mbps=300.0))
        late_loss = ResultMessage(id=uuid.uuid4(), method="icmp", target="8.8.8.8",
                                  started_at=when - timedelta(hours=3), probe_id=probe,
                                  link=link, access=access, isp=isp, agent_version="0.1.0",
                                  duration_s=5.0,
                                  metrics=Metrics(rtt_ms=20.0, jitter_ms=2.0, loss_pct=60.0))
        status = StatusMessage(probe_id=probe, at=when + timedelta(seconds=30),
                               agent_version="0.1.0", state="online", spool_depth=4321,
                               clock_synced=True)
        assert ingest([late, late_loss, status], H.SITES, url, database=DB).accepted == 3
        check([*ds.results, late, late_loss], 4321)
    finally:
        client.close()


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def test_resolution_variable_on_both_sides_of_each_threshold(
        loaded: tuple[InfluxClient, H.DataSet]) -> None:
    """The hidden variable, evaluated by influxd from the range's length: raw under 2 days,
    hourly rollups from 2 days, daily from 8; hidden and refreshed on time range change
    in every dashboard."""
    client, ds = loaded
    for lang in ("vi", "en"):
        for name in ("overview", "where", "quality", "probes"):
            [var] = [v for v in _committed(lang, name)["templating"]["list"]
                     if v["name"] == "resolution"]
            assert (var["hide"], var["refresh"], var["multi"], var["includeAll"]) == \
                (2, 2, False, False)
            assert var["query"] == _resolution_query()
    end = _ms(ds.now)
    for length, want in ((1, "raw"), (2 * DAY_MS - 1, "raw"), (2 * DAY_MS, "1h"),
                         (8 * DAY_MS - 1, "1h"), (8 * DAY_MS, "1d"), (400 * DAY_MS, "1d")):
        assert H.fake_grafana_resolution(client, _resolution_query(), end - length, end) == \
            want, length


def test_median_panel_on_both_sides_of_the_raw_threshold(
        loaded: tuple[InfluxClient, H.DataSet]) -> None:
    """1 ms under 2 days: the exact median of the tests; at 2 days: the median of the
    lines' hourly medians (only hours starting inside the range)."""
    client, ds = loaded
    panel = _panel("overview", "overview.median_fixed")
    end = _ms(ds.now)
    start = end - 2 * DAY_MS + 1
    exact = H.downloads(H.throughput(ds, "fixed", _dt(start), ds.now))
    got = _value(_shown(client, panel, ds, None, (start, end)))
    assert got == pytest.approx(H.median(exact), rel=1e-9)
    start -= 1
    hourly = H.medians_of(H.bucket_values(ds.results, ds, "1h", _dt(start), ds.now, "fixed"))
    got = _value(_shown(client, panel, ds, None, (start, end)))
    assert got == pytest.approx(H.median(hourly), rel=1e-9)
    assert H.median(hourly) != pytest.approx(H.median(exact), rel=1e-6)  # tells them apart


@pytest.mark.parametrize("resolution", ["1h", "1d"])
def test_rollup_panels_equal_medians_of_line_medians(
        loaded: tuple[InfluxClient, H.DataSet], resolution: str) -> None:
    """Every switched throughput panel at the hourly and the daily resolution, against
    values computed here from the messages: medians and 10th percentiles of the lines'
    hourly/daily medians, exact test counts and shares."""
    client, ds = loaded
    window = _window(ds) if resolution == "1h" else _daily_window(ds)
    assert H.fake_grafana_resolution(client, _resolution_query(), *window) == resolution
    t0, t1 = _dt(window[0]), _dt(window[1])

    def buckets(access: str | None, metric: str = "download_mbps", **tags: str
                ) -> dict[tuple[str, str, datetime], list[float]]:
        return H.bucket_values(ds.results, ds, resolution, t0, t1, access, metric, **tags)

    for access in ("mobile", "fixed"):
        got = _value(_shown(client, _panel("overview", f"overview.median_{access}"), ds, None,
                            window))
        assert got == pytest.approx(H.median(H.medians_of(buckets(access))), rel=1e-9)
        tests = [v for vs in buckets(access).values() for v in vs]
        got = _value(_shown(client, _panel("overview", f"overview.share_{access}"), ds, None,
                            window))
        assert got == pytest.approx(H.share_at_least(tests, CFG.target(access)), rel=1e-9)
    upload = {s.tags["access"]: s.values[0][1]
              for s in _shown(client, _panel("overview", "overview.median_upload"), ds, None,
                              window)}
    assert upload == pytest.approx(
        {a: H.median(H.medians_of(buckets(a, "upload_mbps"))) for a in ("mobile", "fixed")},
        rel=1e-9)
    isp = {s.tags["isp"]: s.values[0][1]
           for s in _shown(client, _panel("where", "where.isp_fixed"), ds, None, window)}
    assert isp == pytest.approx(
        {i: H.median(H.medians_of(buckets("fixed", isp=i)))
         for i in {r.isp for r in ds.results if r.access == "fixed"}
         if buckets("fixed", isp=i)}, rel=1e-9)
    panel = _panel("where", "where.communes_fixed")
    table = {s.tags["commune_code"]: s.rows()[0]
             for s in _shown(client, panel, ds, None, window)}
    shares = {s.tags["commune_code"]: s.rows()[0]["share_pct"]
              for s in _shown(client, panel, ds, None, window, refs="CD")}
    assert table.keys() == shares.keys() and table
    for code, row in table.items():
        mine = buckets("fixed", commune_code=code)
        tests = [v for vs in mine.values() for v in vs]
        assert row["median_mbps"] == pytest.approx(H.median(H.medians_of(mine)), rel=1e-9)
        p10 = H.influx_percentile_or_none(H.medians_of(mine), 10)
        assert row["p10_mbps"] == (p10 if p10 is None else pytest.approx(p10))
        assert row["tests"] == len(tests)
        assert shares[code] == pytest.approx(H.share_at_least(tests, CFG.target("fixed")))
    # Peak hours and the probe map read the line-day rollups at both resolutions.
    in_peak = [r for r in ds.results
               if CFG.peak_start_hour <= H.local_hour(r) < CFG.peak_end_hour]
    days = {a: H.bucket_values(in_peak, ds, "1d", t0, t1, a) for a in ("mobile", "fixed")}
    for access in ("mobile", "fixed"):
        got = _value(_shown(client, _panel("overview", f"overview.peak_{access}"), ds, None,
                            window))
        assert got == pytest.approx(H.median(H.medians_of(days[access])), rel=1e-9)
    geomap = _panel("where", "where.map")
    rows = {s.tags["probe"]: s.rows()[0]
            for s in _shown(client, geomap, ds, None, window, refs="BD")}
    fixed_days = H.bucket_values(ds.results, ds, "1d", t0, t1, "fixed")
    assert rows.keys() == {p for p, _l, _d in fixed_days}
    for probe, row in rows.items():
        mine = {k: v for k, v in fixed_days.items() if k[0] == probe}
        assert row["median_mbps"] == pytest.approx(H.median(H.medians_of(mine)), rel=1e-9)
        assert row["tests"] == sum(len(v) for v in mine.values())
        assert (row["latitude"], row["longitude"]) == (ds.site(probe).latitude,
                                                        ds.site(probe).longitude)
    # The trend: each 1-hour bucket holds the median of the line medians stamped in it.
    trend = {(s.tags["access"], int(v[0])): v[1]
             for s in _shown(client, _panel("overview", "overview.trend"), ds, None, window)
             for v in s.values}
    expected: dict[tuple[str, int], list[float]] = {}
    for access in ("mobile", "fixed"):
        for (_p, _l, bucket), values in buckets(access).items():
            expected.setdefault((access, hour_start(_ms(bucket))), []).append(H.median(values))
    assert trend == pytest.approx({k: H.median(v) for k, v in expected.items()}, rel=1e-9)


@pytest.mark.parametrize("resolution", ["1h", "1d"])
def test_quality_panels_from_rollups(loaded: tuple[InfluxClient, H.DataSet],
                                     resolution: str) -> None:
    """Latency, jitter, loaded/idle latency (medians of the lines' hourly/daily medians),
    loss (an exact mean) and probe-limited tests (an exact count) per access type, against
    values computed here from the messages, over every line (read from the per-access
    rollups) and with a commune, an ISP, a probe or an access type chosen (every line's
    rollups, or the per-access ones); the same panels at the raw resolution are checked
    exactly."""
    client, ds = loaded
    window = _window(ds) if resolution == "1h" else _daily_window(ds)
    t0 = _dt(window[0])

    def per_bucket(methods: tuple[str, ...] | None, metric: str,
                   chosen: dict[str, list[str]]
                   ) -> dict[str, dict[int, dict[tuple[str, str], list[float]]]]:
        """access -> 1-hour trend bucket (ms) -> line -> values, of the ``chosen`` lines."""
        out: dict[str, dict[int, dict[tuple[str, str], list[float]]]] = {}
        for r in ds.results:
            value = r.metrics.values().get(metric)
            if not r.ok or value is None or (methods and r.method not in methods):
                continue
            tags = {"probe": r.probe_id, "isp": r.isp, "access": r.access,
                    "commune": ds.site(r.probe_id).commune_code}
            if any(tags[k] not in v for k, v in chosen.items()):
                continue
            bucket = H.bucket_start(r.started_at, resolution)
            if bucket >= t0:
                out.setdefault(r.access, {}).setdefault(hour_start(_ms(bucket)), {}) \
                    .setdefault((r.probe_id, r.link), []).append(value)
        return out

    def trend(key: str, refs: str, chosen: dict[str, list[str]]
              ) -> dict[tuple[str, int], float]:
        panel = _panel("quality", key)
        got = {t["refId"]: _run(client, t["query"], ds, dict(chosen), window)
               for t in panel["targets"] if t["refId"] in refs}
        # the per-access target (the last of refs) is the one read exactly when no
        # commune, ISP or probe is chosen
        assert bool(got[refs[-1]]) == (not chosen.keys() - {"access"}), (key, chosen)
        assert len([r for r in got.values() if r]) == 1, (key, chosen, got)
        return {(s.tags["access"], int(v[0])): v[1]
                for series in got.values() for s in series for v in s.values}

    ka = ds.site("ka-ubnd-01").commune_code
    for chosen in ({}, {"access": ["mobile"]}, {"commune": [ka]}, {"isp": ["VNPT"]},
                   {"probe": ["hk-ubnd-01", "ka-ubnd-03"]}):
        for key, methods, metric, refs in (("quality.rtt", H.LATENCY, "rtt_ms", "ABC"),
                                           ("quality.jitter", H.LATENCY, "jitter_ms", "ABC"),
                                           ("quality.loaded", None, "loaded_rtt_ms", "ABE"),
                                           ("quality.loaded", None, "idle_rtt_ms", "CDF")):
            expected = {(a, t): H.median([H.median(v) for v in lines.values()])
                        for a, buckets in per_bucket(methods, metric, chosen).items()
                        for t, lines in buckets.items()}
            assert expected, (key, chosen)
            assert trend(key, refs, chosen) == pytest.approx(expected, rel=1e-9), \
                (key, chosen)
        loss = {(a, t): statistics.mean([x for v in lines.values() for x in v])
                for a, buckets in per_bucket(H.LATENCY, "loss_pct", chosen).items()
                for t, lines in buckets.items()}
        assert trend("quality.loss", "ABC", chosen) == pytest.approx(loss, rel=1e-9), chosen
    limited = {s.tags["access"]: s.rows()[0]["limited"]
               for s in _shown(client, _panel("quality", "quality.device_limited"), ds, None,
                               window)}
    want = {}
    for r in ds.results:
        if (r.method in H.THROUGHPUT and r.ok and "device_limited" in r.flags
                and H.bucket_start(r.started_at, resolution) >= t0):
            want[r.access] = want.get(r.access, 0) + 1
    assert limited == want and want
    # raw: the exact median of the tests in each bucket
    raw = _raw_window(ds)
    got = {(s.tags["access"], int(v[0])): v[1]
           for s in _shown(client, _panel("quality", "quality.rtt"), ds, None, raw)
           for v in s.values}
    tests: dict[tuple[str, int], list[float]] = {}
    for r in ds.results:
        if (r.method in H.LATENCY and r.ok and r.metrics.rtt_ms is not None
                and r.started_at >= _raw_start(ds)):
            tests.setdefault((r.access, hour_start(_ms(r.started_at))), []).append(
                r.metrics.rtt_ms)
    assert got == pytest.approx({k: H.median(v) for k, v in tests.items()}, rel=1e-9)


# ------------------------------------------------- last result, data budget, radio (issue 20)


def _windows(ds: H.DataSet) -> dict[str, tuple[int, int]]:
    return {"raw": _raw_window(ds), "1h": _window(ds), "1d": _daily_window(ds)}


def _expected_last(messages: list[ResultMessage]) -> dict[str, int]:
    """Per probe, when its latest result started (epoch ms), whatever the range."""
    out: dict[str, int] = {}
    for r in messages:
        out[r.probe_id] = max(out.get(r.probe_id, 0), _ms(r.started_at))
    return out


def _flat(table: dict[tuple[str, str], dict[str, float | None]]
          ) -> dict[tuple[str, str, str], float]:
    """(probe, link, column) -> value, the empty cells left out."""
    return {(*k, c): v for k, row in table.items() for c, v in row.items() if v is not None}


def _expected_budget(statuses: list[StatusMessage], start: int, end: int
                     ) -> dict[tuple[str, str], dict[str, float | None]]:
    """The data budget table from the status messages: per (probe, link), the usage in the
    last status of the last local day whose start lies in [start - 1 day, end] (the
    panel reads daily points over the range widened by a day)."""
    out: dict[tuple[str, str], tuple[int, dict[str, float | None]]] = {}
    for st in statuses:
        assert st.at is not None
        at = _ms(st.at)
        if not start - DAY_MS <= day_start(at) <= end:
            continue
        for link in st.links:
            budget = link.data_budget_bytes
            row: dict[str, float | None] = {
                "used_bytes": link.data_used_bytes, "budget_bytes": budget,
                "used_pct": 100.0 * link.data_used_bytes / budget if budget else None}
            if at >= out.get((st.probe_id, link.name), (-1, row))[0]:
                out[(st.probe_id, link.name)] = (at, row)
    return {k: v for k, (_at, v) in out.items()}


def _budget_shown(client: InfluxClient, ds: H.DataSet, window: tuple[int, int]
                  ) -> dict[tuple[str, str], dict[str, float | None]]:
    return {(s.tags["probe"], s.tags["link"]): {
        c: s.rows()[0][c] for c in ("used_bytes", "budget_bytes", "used_pct")}
        for s in _run(client, _panel("probes", "probes.budget")["targets"][0]["query"], ds,
                      None, window)}


def _last_shown(client: InfluxClient, ds: H.DataSet, window: tuple[int, int]
                ) -> dict[str, int]:
    return {s.tags["probe"]: s.rows()[0]["last_ms"]
            for s in _run(client, _panel("probes", "probes.last_seen")["targets"][0]["query"],
                          ds, None, window)}


def _radio_tests(results: list[ResultMessage], metric: str) -> list[ResultMessage]:
    """Successful idle mobile throughput tests that reported the radio level."""
    return [r for r in results if r.method in H.THROUGHPUT and r.ok
            and "cross_traffic" not in r.flags and r.access == "mobile"
            and getattr(r.metrics, metric) is not None
            and r.metrics.download_mbps is not None]


def _radio_days(results: list[ResultMessage], metric: str, window: tuple[int, int]
                ) -> dict[tuple[str, str, datetime], list[ResultMessage]]:
    """Those tests per mobile line and local day, for the days starting inside the range."""
    days: dict[tuple[str, str, datetime], list[ResultMessage]] = {}
    for r in _radio_tests(results, metric):
        day = H.bucket_start(r.started_at, "1d")
        if window[0] <= _ms(day) <= window[1]:
            days.setdefault((r.probe_id, r.link, day), []).append(r)
    return days


def _radio_expected(results: list[ResultMessage], metric: str, resolution: str,
                    window: tuple[int, int]) -> list[tuple[float, float]]:
    """The scatter's (level, download) pairs: one per test at the raw resolution; one per
    mobile line and local day (the level's and the download's medians over the day's
    tests with that level) from 2 days on, for the days starting inside the range."""
    start, end = window
    if resolution == "raw":
        return sorted((float(getattr(r.metrics, metric)), float(r.metrics.download_mbps or 0))
                      for r in _radio_tests(results, metric)
                      if start <= _ms(r.started_at) <= end)
    days = _radio_days(results, metric, window)
    return sorted((H.median([float(getattr(r.metrics, metric)) for r in rs]),
                   H.median([float(r.metrics.download_mbps or 0) for r in rs]))
                  for rs in days.values())


def _radio_shown(client: InfluxClient, ds: H.DataSet, key: str, metric: str,
                 window: tuple[int, int]) -> list[tuple[float, float]]:
    return sorted((row[metric], row["download_mbps"])
                  for s in _shown(client, _panel("quality", key), ds, None, window)
                  for row in s.rows())


_RADIO = (("quality.radio_rsrp", "radio_rsrp_dbm"), ("quality.radio_sinr", "radio_sinr_db"))


@pytest.mark.parametrize("resolution", ["raw", "1h", "1d"])
def test_last_result_budget_and_radio_panels(loaded: tuple[InfluxClient, H.DataSet],
                                             resolution: str) -> None:
    """The probes dashboard's last result per probe (``last_result``: the latest ever,
    the silent and the dead probe included, whatever the range), its data budget (the
    daily ``usage_1d`` points) and the quality dashboard's radio scatter plots (raw tests
    under 2 days, ``radio_1d`` line-days beyond) against values computed here."""
    client, ds = loaded
    window = _windows(ds)[resolution]
    assert H.fake_grafana_resolution(client, _resolution_query(), *window) == resolution
    everything = [*ds.results, *ds.legacy,
                  *(m for m in ds.old if isinstance(m, ResultMessage))]
    last = _last_shown(client, ds, window)
    assert last == _expected_last(everything)
    assert H.DEAD_PROBE in last and H.SILENT_PROBE in last
    budget = _budget_shown(client, ds, window)
    assert budget.keys() == _expected_budget(ds.statuses, *window).keys()
    assert _flat(budget) == pytest.approx(_flat(_expected_budget(ds.statuses, *window)))
    assert any(row["budget_bytes"] for row in budget.values())
    # A range ending 30 hours ago: the last status of the day holding its end.
    past = (window[0] - 30 * 3_600_000, _ms(ds.now) - 30 * 3_600_000)
    assert _flat(_budget_shown(client, ds, past)) == pytest.approx(
        _flat(_expected_budget(ds.statuses, *past)))
    for key, metric in _RADIO:
        want = _radio_expected(ds.results, metric, resolution, window)
        assert want and _radio_shown(client, ds, key, metric, window) == [
            pytest.approx(pair) for pair in want], key
        if resolution == "1d":
            # A long range: $__interval spans several days (one bucket here), each dot
            # the median of a line's daily medians in it.
            panel = _panel("quality", key)
            assert (panel["interval"], panel["maxDataPoints"]) == ("1d", 30)
            [rollup] = [t["query"] for t in panel["targets"] if t["refId"] == "B"]
            sql = H.fake_grafana_interpolate(rollup, *window, "1000d", None, resolution)
            got = sorted((r[metric], r["download_mbps"]) for s in client.query(sql)[0]
                         for r in s.rows())
            per_line: dict[tuple[str, str], list[tuple[float, float]]] = {}
            for (probe, link, _day), rs in _radio_days(ds.results, metric, window).items():
                per_line.setdefault((probe, link), []).append(
                    (H.median([float(getattr(r.metrics, metric)) for r in rs]),
                     H.median([float(r.metrics.download_mbps or 0) for r in rs])))
            lines = sorted((H.median([p[0] for p in v]), H.median([p[1] for p in v]))
                           for v in per_line.values())
            assert len(lines) >= 2 and got == [pytest.approx(p) for p in lines]
            assert len(got) < len(want)  # fewer dots than line-days


def test_last_result_budget_and_radio_after_late_messages(influxd: services.Service) -> None:
    """A spool draining late: a mobile test (with radio levels) a day and a half back
    changes its line-day's radio point and leaves its probe's last result as it was (a
    newer one exists); the dead probe's result and status from 9 days back (newer than
    its last ones) become its last result and its data budget row."""
    url = f"http://{influxd.host}:{influxd.port}"
    ds = H.make_dataset()
    assert not ingest([*ds.results, *ds.statuses, *ds.old], H.SITES, url, database=DB).dead
    client = InfluxClient(InfluxSettings(url=url, database=DB))
    results = [*ds.results, *(m for m in ds.old if isinstance(m, ResultMessage))]
    statuses = list(ds.statuses)

    def check() -> None:
        for resolution, window in _windows(ds).items():
            assert _last_shown(client, ds, window) == _expected_last(results), resolution
            assert _flat(_budget_shown(client, ds, window)) == pytest.approx(
                _flat(_expected_budget(statuses, *window))), resolution
            for key, metric in _RADIO:
                assert _radio_shown(client, ds, key, metric, window) == [
                    pytest.approx(p) for p in _radio_expected(results, metric, resolution,
                                                              window)], (resolution, key)

    try:
        check()
        probe = "hk-ubnd-01"
        link, access, isp, _b = H.LINKS[probe][1]
        assert access == "mobile"
        late = ResultMessage(id=uuid.uuid4(), method="iperf3", target="mlab-hn",
                             started_at=ds.now - timedelta(hours=36, minutes=13),
                             probe_id=probe, link=link, access=access, isp=isp,
                             agent_version="0.1.0", duration_s=10.0,
                             metrics=Metrics(download_mbps=1.5, upload_mbps=0.5,
                                             radio_rsrp_dbm=-60.0, radio_sinr_db=29.0))
        dead_at = ds.now - timedelta(days=9)
        dead = ResultMessage(id=uuid.uuid4(), method="icmp", target="8.8.8.8",
                             started_at=dead_at, probe_id=H.DEAD_PROBE, link="fibre",
                             access="fixed", isp="VNPT", agent_version="0.1.0",
                             duration_s=5.0, metrics=Metrics(rtt_ms=20.0, jitter_ms=1.0,
                                                             loss_pct=0.0))
        status = StatusMessage(probe_id=H.DEAD_PROBE, at=dead_at + timedelta(seconds=30),
                               agent_version="0.1.0", state="online", spool_depth=0,
                               clock_synced=True,
                               links=(LinkStatus(name="fibre", access="fixed", isp="VNPT",
                                                 data_used_bytes=123_456_789),))
        assert ingest([late, dead, status], H.SITES, url, database=DB).accepted == 3
        results += [late, dead]
        statuses.append(status)
        daily = _daily_window(ds)
        assert _last_shown(client, ds, daily)[H.DEAD_PROBE] == _ms(dead_at)
        assert _budget_shown(client, ds, daily)[(H.DEAD_PROBE, "fibre")]["used_bytes"] == \
            123_456_789
        check()
    finally:
        client.close()
