"""``probes list``: the inventory from a real InfluxDB holding points written with the
collector's own schema functions, joined with the site registry."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector import cli
from collector.config import InfluxSettings
from collector.core.influx import InfluxClient
from collector.core.schema import Site, result_line, status_lines
from collector.fleet.inventory import inventory
from devstack import services
from netmon.contract import LinkStatus, ResultMessage, StatusMessage, UpdateStatus
from tests.helpers.collector import sites_toml

SITES = {  # on the map from 1 July 2025 (collector/core/reference/)
    "ht-kyanh-01": Site("ht-kyanh-01", "UBND phường Kỳ Trinh", "Phường Sông Trí",
                        "Thị xã Kỳ Anh", 18.07, 106.29, "commune_office",
                        commune_code="18754", legacy_commune_code="18820"),
    "ht-huongkhe-02": Site("ht-huongkhe-02", "Trạm y tế Hương Khê", "Xã Hương Khê",
                           "Huyện Hương Khê", 18.18, 105.71, "health_station",
                           commune_code="18496", legacy_commune_code="18496"),
    "ht-camxuyen-03": Site("ht-camxuyen-03", "Trường THCS Cẩm Xuyên", "Xã Cẩm Xuyên",
                           "Huyện Cẩm Xuyên", 18.25, 106.0, "school", commune_code="18673",
                           legacy_commune_code="18673"),
    "ht-thachha-04": Site("ht-thachha-04", "UBND xã Thạch Hà", "Xã Thạch Hà", "Huyện Thạch Hà",
                          18.35, 105.9, "commune_office", commune_code="18562",
                          legacy_commune_code="18562"),
}


def _status(probe: str, at: datetime, state: str = "online", **kw: object) -> StatusMessage:
    fields: dict[str, object] = {"probe_id": probe, "state": state, "at": at,
                                 "agent_version": "0.1.0"} | kw
    return StatusMessage.model_validate(fields)


def _seed(client: InfluxClient, now: datetime) -> None:
    received = int(now.timestamp() * 1000)
    lines: list[str] = []
    # online, fresh, remote config 42, two links with usage
    lines += status_lines(_status(
        "ht-kyanh-01", now - timedelta(minutes=2), spool_depth=3, config_version=42,
        clock_synced=True, board_model="Raspberry Pi 4 Model B Rev 1.5",
        oldest_waiting_at=now - timedelta(minutes=40), spool_lost=2, results_maybe_lost=4,
        update=UpdateStatus(failed={"0.1.2": "health check not passed within 300 s"},
                            last_event="rolled back from 0.1.2 to 0.1.0: health check not "
                                       "passed within 300 s", last_event_at=now),
        links=(LinkStatus(name="fibre", access="fixed", isp="VNPT", data_used_bytes=5_000_000),
               LinkStatus(name="4g", access="mobile", isp="Viettel",
                          data_used_bytes=1_200_000_000, data_budget_bytes=3_000_000_000))),
        SITES["ht-kyanh-01"], received)
    lines.append(result_line(ResultMessage.model_validate({
        "probe_id": "ht-kyanh-01", "link": "4g", "access": "mobile", "isp": "Viettel",
        "method": "iperf3", "target": "speed.hatinh.vn:5201",
        "started_at": now - timedelta(minutes=5), "duration_s": 10.0,
        "metrics": {"download_mbps": 63.5}, "agent_version": "0.1.0"}),
        SITES["ht-kyanh-01"]))
    # said online 2 hours ago and then nothing: silent
    lines += status_lines(_status(
        "ht-huongkhe-02", now - timedelta(hours=2), spool_depth=0, config_version=3,
        config_error="config version 4 rejected: target_not_allowed: not in the probe's "
                     "allowlist: 192.0.2.1"), SITES["ht-huongkhe-02"], received)
    # online with figures, then a last will: offline, but the figures stay known
    lines += status_lines(_status(
        "ht-camxuyen-03", now - timedelta(hours=2), config_version=6,
        config_error="config version 7 rejected: bad_signature: x",
        update=UpdateStatus(failed={"0.1.9": "hash_mismatch"})), SITES["ht-camxuyen-03"],
        received)
    lines += status_lines(_status("ht-camxuyen-03", now - timedelta(hours=1), spool_depth=17,
                                  config_version=7), SITES["ht-camxuyen-03"], received)

    lines += status_lines(_status("ht-camxuyen-03", now - timedelta(minutes=30),
                                  state="offline"), SITES["ht-camxuyen-03"], received)
    # a probe that reports but is not in the registry
    lines += status_lines(_status("ht-rogue-99", now - timedelta(minutes=1)), None, received)
    client.write_lines(lines)


@pytest.fixture
def seeded(influxd: services.Service) -> tuple[InfluxClient, datetime]:
    """influxd holding the fleet's statuses, timed from now: ages are relative to the
    moment the test runs, not to when the module was imported (the CLI reads the clock)."""
    client = InfluxClient(InfluxSettings(url=f"http://{influxd.host}:{influxd.port}",
                                         database="netmon"))
    client.ensure_database()
    now = datetime.now(UTC).replace(microsecond=0)
    _seed(client, now)
    return client, now


def test_inventory_states_and_figures(seeded: tuple[InfluxClient, datetime]) -> None:
    influx_client, now = seeded
    rows = {r.probe_id: r for r in inventory(influx_client, SITES, stale_after_s=900, now=now)}
    assert sorted(rows) == ["ht-camxuyen-03", "ht-huongkhe-02", "ht-kyanh-01", "ht-rogue-99",
                            "ht-thachha-04"]
    ky = rows["ht-kyanh-01"]
    assert ky.config_error is None
    assert (ky.state, ky.spool_depth, ky.config_version) == ("online", 3, 42)
    assert ky.last_seen == now - timedelta(minutes=2)
    assert ky.last_result_at == now - timedelta(minutes=5)
    assert ky.last_result["method"] == "iperf3" and ky.last_result["download_mbps"] == 63.5
    assert ky.data_used_bytes == 1_205_000_000
    # Fleet health (issue 18): version, board, clock, oldest waiting result, update events.
    assert (ky.agent_version, ky.board_model, ky.clock_synced) == (
        "0.1.0", "Raspberry Pi 4 Model B Rev 1.5", True)
    assert ky.oldest_waiting_at == now - timedelta(minutes=40)
    assert (ky.update_event or "").startswith("rolled back from 0.1.2")
    assert ky.update_failed == "0.1.2: health check not passed within 300 s"
    assert ky.update_trial is None
    # What the probe knows it lost: a full disk (spool_lost), an unclean stop (the bound).
    assert (ky.spool_lost, ky.results_maybe_lost) == (2, 4)
    assert (rows["ht-camxuyen-03"].spool_lost, rows["ht-camxuyen-03"].results_maybe_lost) \
        == (0, 0)  # a status without losses says 0, never a stale figure
    # A status without update problems clears them (written as "", never stale).
    assert rows["ht-camxuyen-03"].update_failed is None
    assert {(u.link, u.budget_bytes) for u in ky.links} == {("4g", 3_000_000_000),
                                                            ("fibre", None)}
    assert rows["ht-huongkhe-02"].state == "silent"
    assert "target_not_allowed" in (rows["ht-huongkhe-02"].config_error or "")
    cx = rows["ht-camxuyen-03"]
    assert (cx.state, cx.spool_depth, cx.config_version) == ("offline", 17, 7)
    assert cx.config_error is None  # cleared by the later status, not shown stale
    assert cx.last_seen == now - timedelta(minutes=30)
    assert rows["ht-thachha-04"].state == "never_seen" and rows["ht-thachha-04"].registered
    assert not rows["ht-rogue-99"].registered and rows["ht-rogue-99"].state == "online"


def test_probes_list_cli(seeded: tuple[InfluxClient, datetime], influxd: services.Service,
                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reg = tmp_path / "sites.toml"
    reg.write_text(sites_toml(SITES.values()), encoding="utf-8")
    cfg = tmp_path / "collector.toml"
    cfg.write_text(f'[influxdb]\nurl = "http://{influxd.host}:{influxd.port}"\n'
                   f'[registry]\npath = "sites.toml"\n')
    assert cli.main(["probes", "list", "--config", str(cfg), "--json"]) == 0
    data = {r["probe_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert data["ht-kyanh-01"]["state"] == "online"
    assert data["ht-kyanh-01"]["commune"] == "Phường Sông Trí"  # from the reference data
    assert data["ht-kyanh-01"]["district"] == "Thị xã Kỳ Anh"
    assert data["ht-kyanh-01"]["config_version"] == 42
    assert data["ht-thachha-04"]["state"] == "never_seen"
    assert cli.main(["probes", "list", "--config", str(cfg)]) == 0
    text = capsys.readouterr().out
    assert "UBND phường Kỳ Trinh" in text and "silent" in text and "1205/3000" in text
    assert "! config version 4 rejected: target_not_allowed" in text
    assert "Raspberry Pi 4 Model B Rev 1.5" in text and "40m ago" in text
    assert "update: rolled back from 0.1.2 to 0.1.0" in text and "FAILED 0.1.2:" in text
    assert "! lost: 2 result(s) could not be stored" in text
    assert "up to 4 result(s) held for their receipt may have been lost" in text
    assert data["ht-kyanh-01"]["results_maybe_lost"] == 4
    assert data["ht-kyanh-01"]["board_model"] == "Raspberry Pi 4 Model B Rev 1.5"
    assert data["ht-kyanh-01"]["clock_synced"] is True
    # InfluxDB unreachable: runtime failure; bad config: usage error naming the key.
    cfg.write_text('[influxdb]\nurl = "http://127.0.0.1:9"\n[registry]\npath = "sites.toml"\n')
    assert cli.main(["probes", "list", "--config", str(cfg)]) == 1
    assert "unreachable" in capsys.readouterr().err
    cfg.write_text('[influxdb]\nurll = "x"\n')
    assert cli.main(["probes", "list", "--config", str(cfg)]) == 2
    assert "influxdb.urll" in capsys.readouterr().err
