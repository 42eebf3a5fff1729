"""The v1 HTTP client against a real influxd."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from collector.config import InfluxSettings
from collector.core.influx import (
    SHARD_DAYS,
    InfluxClient,
    InfluxError,
    duration_s,
    shard_duration,
)
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


def _rp(client: InfluxClient, database: str) -> list[object]:
    [series] = client.query(f'SHOW RETENTION POLICIES ON "{database}"')[0]
    [default] = [v for v in series.values if v[4]]
    return list(default)


def test_ensure_database_makes_52_week_shard_groups(influxd: services.Service) -> None:
    """The collector's own database (local stack, tests, benchmarks) gets the Ansible
    role's 52-week shard groups, capped at a shorter retention; an existing database is
    left as it is (no conflict error on a second start)."""
    url = f"http://{influxd.host}:{influxd.port}"
    with InfluxClient(InfluxSettings(url=url, database="forever")) as client:
        client.ensure_database()
        client.ensure_database()
        assert _rp(client, "forever")[1:3] == ["0s", f"{SHARD_DAYS * 24}h0m0s"]
    with InfluxClient(InfluxSettings(url=url, database="ten_years", retention="520w")) as c:
        c.ensure_database()
        assert _rp(c, "ten_years")[1:3] == ["87360h0m0s", f"{SHARD_DAYS * 24}h0m0s"]
    with InfluxClient(InfluxSettings(url=url, database="month", retention="30d")) as c:
        c.ensure_database()
        assert _rp(c, "month")[1:3] == ["720h0m0s", "720h0m0s"]
        c.query('ALTER RETENTION POLICY "autogen" ON "month" SHARD DURATION 1d')
        c.ensure_database()  # an existing database: not changed, no error
        assert _rp(c, "month")[2] == "24h0m0s"


def test_shard_days_is_the_ansible_roles_default() -> None:
    """One number: the role's netmon_influxdb_shard_days default is SHARD_DAYS."""
    defaults = Path(__file__).resolve().parents[2] / "deploy" / "ansible" / "roles" / \
        "influxdb" / "defaults" / "main.yml"
    value = yaml.safe_load(defaults.read_text(encoding="utf-8"))["influxdb_shard_days"]
    assert value == f"{{{{ netmon_influxdb_shard_days | default({SHARD_DAYS}) }}}}"


def test_duration_parsing() -> None:
    assert duration_s("520w") == 520 * 604_800 and duration_s("8760h0m0s") == 8760 * 3600
    assert duration_s("INF") == 0 and duration_s("0s") == 0
    assert duration_s("1y") is None and duration_s("30 d") is None
    assert shard_duration("0s") == f"{SHARD_DAYS}d" and shard_duration("2h") == "7200s"
