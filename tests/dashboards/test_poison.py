"""One message cannot blank the dashboards or the bulletin (issue 14): a metric named
like any tag key or field of ``results`` (``status``, ``probe``, ``commune`` ...) is
dead-lettered, and every committed dashboard query and the bulletin's median query
return the same numbers after such messages as before. Real influxd, the collector's
own in-process pipeline (``collector.core.service.ingest``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from collector.config import InfluxSettings
from collector.core.influx import InfluxClient
from collector.core.schema import RESERVED_METRIC_NAMES, RESULT_TAGS
from collector.core.service import ingest
from devstack import services
from tests.dashboards.test_queries_influx import _all_queries, _run
from tests.helpers import dashboards as H

DB = "poison"
#: What the bulletin's headline rests on: status = 'ok' picks the valid tests.
BULLETIN_Q = ('SELECT median("download_mbps"), count("download_mbps") FROM "results" '
              "WHERE \"status\" = 'ok' AND \"cross_traffic\" = 0 GROUP BY \"access\"")


@pytest.fixture(scope="module")
def loaded(influxd_module: services.Service) -> Iterator[tuple[InfluxClient, H.DataSet]]:
    url = f"http://{influxd_module.host}:{influxd_module.port}"
    ds = H.make_dataset()
    report = ingest([*ds.results, *ds.statuses], H.SITES, url, database=DB)
    assert not report.dead
    client = InfluxClient(InfluxSettings(url=url, database=DB))
    yield client, ds
    client.close()


def _snapshot(client: InfluxClient, ds: H.DataSet) -> dict[str, Any]:
    out = {where: [(s.tags, s.values) for s in _run(client, query, ds)]
           for where, query in _all_queries()}
    out["bulletin"] = [(s.tags, s.values) for s in client.query(BULLETIN_Q)[0]]
    return out


def test_a_metric_named_like_a_tag_changes_no_figure(
        loaded: tuple[InfluxClient, H.DataSet]) -> None:
    client, ds = loaded
    before = _snapshot(client, ds)
    assert before["bulletin"] and any(before.values())  # the snapshot holds real figures
    template = json.loads(ds.results[0].to_json())
    poison = []
    for i, name in enumerate(sorted(RESERVED_METRIC_NAMES)):
        msg = dict(template, id=f"00000000-0000-4000-8000-{i:012d}")
        msg["metrics"] = {"download_mbps": 1.0, name: 0.0}
        poison.append((f"netmon/v1/probes/{template['probe_id']}/results",
                       json.dumps(msg).encode()))
    url = client.settings.url
    report = ingest(poison, H.SITES, url, database=DB)
    assert len(report.dead) == len(RESERVED_METRIC_NAMES)
    assert {d.reason for d in report.dead} == {"unstorable"}
    assert _snapshot(client, ds) == before
    # and the guard is what protects them: the field keys did not appear
    keys = {row[0] for s in client.query('SHOW FIELD KEYS FROM "results"')[0]
            for row in s.values}
    assert not keys & set(RESULT_TAGS)
