"""End to end, the README's main job: agent -> mosquitto -> collector -> influxd ->
dashboard queries -> bulletin, and the numbers agree at every hop.

The path is netmon.localstack's (the same code ``scripts/demo`` runs): two shaped
namespace links (fibre 200 Mbit, mobile 60 Mbit), a real measurement server, mosquitto with
passwords and ACL, influxd, the real collector, ``netmon-agent once`` as a subprocess, the
``bulletin`` and ``dashboards build`` commands. Grafana cannot run here, so panel queries
are interpolated by the FAKE in tests/helpers/dashboards.py and run on the real influxd.
"""

from __future__ import annotations

import csv
import json
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from collector.core.influx import InfluxClient
from collector.dashboards.queries import resolution_query
from devstack import localstack, netns
from tests.helpers.dashboards import fake_grafana_interpolate, fake_grafana_resolution

THROUGHPUT = {"iperf3", "http"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    reason = netns.can_use_netns()
    if reason:
        pytest.skip(f"the shaped-link stack {reason}")
    opts = localstack.StackOptions(workdir=tmp_path_factory.mktemp("stack"), rounds=1,
                                   duration_s=2, quiet=True)
    with localstack.open_stack(opts) as running:
        yield running


def _downloads(results: list[dict[str, Any]], access: str) -> list[float]:
    return [r["metrics"]["download_mbps"] for r in results
            if r["access"] == access and r["method"] in THROUGHPUT and not r["error"]
            and "cross_traffic" not in r["flags"]]


def _panel_queries(grafana: Path) -> list[tuple[str, str]]:
    out = []
    for path in sorted((grafana / "json" / "en").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                if target.get("query"):
                    out.append((panel["title"], target["query"]))
    return out


def test_every_result_is_a_point_with_the_same_numbers(stack: Any) -> None:
    results = stack.report.results
    # two links x (iperf3, http, icmp, ipv6) + TSLCD on the fibre link, one result per
    # endpoint (ping and TCP)
    assert len(results) == 10
    assert not [r for r in results if r["error"]], results
    with InfluxClient(stack.collector.cfg.influxdb) as client:
        for res in results:
            [series] = client.query(
                "SELECT * FROM results WHERE result_id = $id", params={"id": res["id"]})
            [row] = series[0].rows()
            assert row["link"] == res["link"] and row["method"] == res["method"]
            assert row["access"] == res["access"] and row["commune"] == "Phường Sông Trí"
            assert row["commune_code"] == "18754" and row["district"] == "Thị xã Kỳ Anh"
            for key, value in res["metrics"].items():
                assert row[key] == pytest.approx(value, rel=1e-12), key


def test_shaped_links_are_measured_separately(stack: Any) -> None:
    fibre = statistics.median(_downloads(stack.report.results, "fixed"))
    mobile = statistics.median(_downloads(stack.report.results, "mobile"))
    # tbf at 200 and 60 Mbit: goodput ~96% of the rate on each bound link.
    assert fibre == pytest.approx(0.96 * 200, rel=0.1)
    assert mobile == pytest.approx(0.96 * 60, rel=0.1)
    rows = {r["link"]: r for r in stack.report.summary}
    assert rows["fibre"]["meets_target"] and not rows["mobile"]["meets_target"]


def test_dashboard_panels_agree_with_the_agent(stack: Any) -> None:
    queries = _panel_queries(Path(stack.report.files["grafana"]))
    now_ms = int(time.time() * 1000)
    checked = 0
    with InfluxClient(stack.collector.cfg.influxdb) as client:
        for access, target in (("fixed", 150), ("mobile", 71)):
            expected = _downloads(stack.report.results, access)
            median_q = [q for _, q in queries if q.startswith('SELECT median("download_mbps")')
                        and f"\"access\" = '{access}'" in q and "local_hour" not in q
                        and "GROUP BY" not in q]
            # The share reads the hourly rollup (collector/core/rollups.py): sum of tests
            # at the target over sum of tests.
            share_q = [q for _, q in queries if 'sum("met") / sum("tests")' in q
                       and 'FROM "tput_1h"' in q
                       and f"\"access\" = '{access}'" in q and "GROUP BY" not in q]
            assert median_q and share_q, f"no overview panels for {access}"
            for q, want in ((median_q[0], statistics.median(expected)),
                            (share_q[0], 100.0 * sum(d >= target for d in expected)
                             / len(expected))):
                # From two hours back: an hourly rollup point is stamped at its hour's start.
                start, end = now_ms - 7_200_000, now_ms + 60_000
                # Two hours: the raw resolution (the medians' raw target).
                resolution = fake_grafana_resolution(client, resolution_query(), start, end)
                sql = fake_grafana_interpolate(q, start, end, resolution=resolution)
                [series] = client.query(sql)
                assert series[0].values[0][1] == pytest.approx(want, abs=1e-9), sql
                checked += 1
    assert checked == 4


def test_bulletin_csv_agrees_with_the_agent(stack: Any) -> None:
    path = Path(stack.report.files["bulletin_csv"])
    assert Path(stack.report.files["bulletin_pdf"]).stat().st_size > 1000
    rows = list(csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines()))
    province = {r["access"]: r for r in rows
                if r["section"] == "province" and r["metric"] == "download_mbps"}
    for access in ("fixed", "mobile"):
        expected = _downloads(stack.report.results, access)
        row = province[access]
        assert int(row["tests"]) == len(expected)
        assert float(row["median"]) == pytest.approx(statistics.median(expected), abs=1e-3)
        assert float(row["p90"]) <= max(expected) + 1e-3
    assert province["fixed"]["rating"] == "meets" and province["mobile"]["rating"] == "below"


def test_bulletin_ipv6_and_tslcd_sections_are_filled(stack: Any) -> None:
    """The demo runs the deployed plan's IPv6 test (to the server's ULA on the namespace's
    veth) and TSLCD reachability: the bulletin's commune rows carry both, every test
    passed."""
    path = Path(stack.report.files["bulletin_csv"])
    rows = list(csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines()))
    network = {r["metric"]: r for r in rows if r["section"] == "commune_network"}
    ran = {m: [r for r in stack.report.results if r["method"] == m]
           for m in ("ipv6", "reachability")}
    assert ran["ipv6"] and ran["reachability"], "the demo did not run both tests"
    for metric, method in (("ipv6_ready_pct", "ipv6"), ("tslcd_reachable_pct", "reachability")):
        row = network[metric]
        assert row["commune_code"] == "18754"
        assert int(row["tests"]) == len(ran[method])
        ok = sum(1 for r in ran[method] if not r["error"])
        assert float(row["value"]) == pytest.approx(100.0 * ok / len(ran[method]), abs=0.05)
        assert ok == len(ran[method]), [r["error"] for r in ran[method] if r["error"]]
