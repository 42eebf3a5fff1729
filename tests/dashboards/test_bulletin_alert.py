"""The bulletin's self-metric alert: its query runs on a real influxd holding the
``bulletin_runs`` points the editions command writes (editions.run_metric_line, through
the product's writer), and fires exactly for the editions whose last run failed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from collector.bulletin import editions
from collector.config import InfluxSettings, Targets
from collector.core.influx import InfluxClient
from collector.dashboards.build import BuildConfig
from collector.dashboards.provisioning import alert_rules
from devstack import services


def _firing(client: InfluxClient, rule: dict[str, object]) -> set[str]:
    """What Grafana's reduce(last) + threshold would fire on."""
    data = rule["data"]
    assert isinstance(data, list)
    cond = data[2]["model"]["conditions"][0]["evaluator"]
    assert cond["type"] == "lt"
    out = set()
    for s in client.query(data[0]["model"]["query"])[0]:
        value = [v for v in s.values if v[1] is not None][-1][1]
        if value < cond["params"][0]:
            out.add(s.tags["edition"])
    return out


def test_bulletin_failed_alert_fires_for_the_edition_whose_last_run_failed(
        influxd: services.Service) -> None:
    settings = InfluxSettings(url=f"http://{influxd.host}:{influxd.port}", database="alerts")
    with InfluxClient(settings) as client:
        client.ensure_database()
        rule = next(r for r in alert_rules(BuildConfig(targets=Targets()))["groups"][0]["rules"]
                    if r["uid"] == "netmon-bulletin-failed")
        assert rule["noDataState"] == "OK"  # a new install has no runs yet
        assert _firing(client, rule) == set()
        now = datetime.now(UTC)
        points = [
            # October: the provisional edition failed once, then succeeded on a re-run.
            editions.run_metric_line("2026-10", "provisional", False, 4,
                                     at=now - timedelta(days=4, hours=2)),
            editions.run_metric_line("2026-10", "provisional", True, 1,
                                     at=now - timedelta(days=4)),
            # The final edition failed after its retries (InfluxDB was down).
            editions.run_metric_line("2026-10", "final", False, 4, at=now - timedelta(hours=1)),
        ]
        for p in points:
            assert editions.write_run_metric(settings, p) is None
        assert _firing(client, rule) == {"final"}
        # Re-run by hand: the alert clears.
        assert editions.write_run_metric(settings, editions.run_metric_line(
            "2026-10", "final", True, 1, late_results=12, at=now)) is None
        assert _firing(client, rule) == set()
        # A run that could not write its point reports why instead of raising.
        down = InfluxSettings(url=f"http://127.0.0.1:{services.free_port()}", database="x")
        assert editions.write_run_metric(down, points[0])
