"""The v1 HTTP client against a real influxd."""

from __future__ import annotations

import pytest

from collector.config import InfluxSettings
from collector.core.influx import InfluxClient, InfluxError
from devstack import services


def test_write_query_and_errors(influxd: services.Service) -> None:
    settings = InfluxSettings(url=f"http://{influxd.host}:{influxd.port}", database="t1")
    with InfluxClient(settings) as client:
        assert client.ping()
        client.ensure_database()
        client.write_lines(['results,commune=C\\ ẩm\\,X download_mbps=1.5 1000',
                            'results,commune=C\\ ẩm\\,X download_mbps=2.5 2000'])
        [series] = client.query("SELECT mean(download_mbps) FROM results GROUP BY commune")
        assert series[0].tags == {"commune": "C ẩm,X"}
        assert series[0].rows()[0]["mean"] == pytest.approx(2.0)
        with pytest.raises(InfluxError) as err:
            client.write_lines(["results download_mbps=oops"])
        assert not err.value.retryable and err.value.status == 400
        with pytest.raises(InfluxError):
            client.query("SELEKT nonsense")
    influxd.stop()
    with InfluxClient(settings) as client, pytest.raises(InfluxError) as err:
        client.write_lines(["results x=1 1"])
    assert err.value.retryable
