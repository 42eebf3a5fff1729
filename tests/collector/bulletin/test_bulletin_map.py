"""The bulletin on the current map (issue 16), against a real influxd.

Every expected figure is computed here from the raw messages published (``statistics``),
never from the bulletin's code: the June/July 2025 roll-up of untagged history into a 2026
unit's trend, the legacy view before the reorganisation, all 69 units listed after it, the
median/mean/threshold rules, availability from the agents' reported plans, and the i-Speed
reference row.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from collector import config as config_mod
from collector.bulletin.generate import BulletinInputError, generate
from collector.core.registry import table_from_rows
from collector.core.schema import Site
from collector.core.service import ingest
from collector.core.units import load_units
from devstack import services
from netmon.contract import LinkStatus, Metrics, ResultMessage, StatusMessage
from tests.helpers import bulletin as hb

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
UNITS = load_units()
#: Phường Sông Trí (18754), formed from Phường Kỳ Trinh (18820, Thị xã Kỳ Anh) and others.
ROWS = [
    ("sontri-01", "UBND phường Kỳ Trinh cũ", "18754", "18820", 18.07, 106.29, "ubnd"),
    ("kyhoa-ubnd", "UBND xã Kỳ Hoa", "18814", "18829", 18.07, 106.3, "ubnd"),
    ("huongbinh-tyt", "Trạm y tế Phúc Đồng", "18523", "18514", 18.25, 105.75, "health"),
]
SITES = {s.probe_id: s for s in table_from_rows(hb.registry_rows(ROWS)).current().values()}
ISPS = {"fixed": "VNPT", "mobile": "Viettel"}
LINK_ACCESS = {"fibre": "fixed", "lte": "mobile"}


def _msg(pid: str, link: str, method: str, at: datetime, dl: float | None = None
         ) -> ResultMessage:
    access = LINK_ACCESS[link]
    metrics = Metrics(download_mbps=dl, upload_mbps=dl / 3) if dl is not None else \
        Metrics(rtt_ms=12.0)
    return ResultMessage(probe_id=pid, link=link, access=access, isp=ISPS[access],
                         method=method, target="speed.hatinh.example", started_at=at,
                         duration_s=5.0, metrics=metrics, agent_version="1.0.0")


def _untagged(site: Site) -> Site:
    """The site as the collector wrote it before ``commune_code`` existed: the old unit's
    name, the old district, no code."""
    old = UNITS.old_units[site.legacy_commune_code]
    return replace(site, commune=old.name, district=old.district, commune_code="",
                   legacy_commune_code="")


def _history() -> tuple[list[ResultMessage], list[ResultMessage]]:
    """June 2025 (untagged, old map) and July 2025 (tagged, new map) throughput tests."""
    june, july = [], []
    for i in range(12):
        # Sông Trí's probe: 12 tests in June over 12 days; 12 in July over 3 days only.
        june.append(_msg("sontri-01", "fibre", "iperf3", hb.local(2025, 6, 1 + i, 10),
                         100.0 + 7 * i))
        july.append(_msg("sontri-01", "fibre", "iperf3", hb.local(2025, 7, 1 + i % 3, 3 + i),
                         160.0 + 3 * (i % 5) + i))
        june.append(_msg("kyhoa-ubnd", "fibre", "http", hb.local(2025, 6, 2 + i, 20),
                         210.0 - 4 * i))
    return june, july


@pytest.fixture(scope="module")
def url(influxd_module: services.Service) -> Iterator[str]:
    """One influxd with June 2025 untagged and July 2025 tagged history."""
    u = f"http://{influxd_module.host}:{influxd_module.port}"
    june, july = _history()
    old_sites = [_untagged(s) for s in SITES.values()]
    assert ingest(june, old_sites, u).accepted == len(june)
    assert ingest(july, list(SITES.values()), u).accepted == len(july)
    yield u


def _cfg(tmp: Path, url: str, **kw: object) -> config_mod.CollectorConfig:
    kw.setdefault("registry", hb.registry_toml(ROWS))
    return config_mod.load(hb.write_config(tmp / "collector.toml", url, **kw))  # type: ignore[arg-type]


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def _dl(msgs: list[ResultMessage]) -> list[float]:
    return [m.metrics.download_mbps for m in msgs if m.metrics.download_mbps is not None]


def test_june_july_2025_roll_into_one_trend_of_the_new_unit(url: str, tmp_path: Path) -> None:
    june, july = _history()
    res = generate(_cfg(tmp_path, url, min_tests=5, min_probe_days=1), "2026-05",
                   tmp_path / "out", formats=("csv",))
    trend = {(r["month"], r["access"]): r for r in _csv(res.files["csv"])
             if r["section"] == "unit_trend" and r["commune_code"] == "18754"}
    jun = _dl([m for m in june if m.probe_id == "sontri-01"])
    jul = _dl([m for m in july if m.probe_id == "sontri-01"])
    # June's results carry no code and the old names (Phường Kỳ Trinh): placed by probe id.
    assert int(trend[("2025-06", "fixed")]["tests"]) == len(jun)
    assert float(trend[("2025-06", "fixed")]["median"]) == pytest.approx(
        statistics.median(jun), abs=1e-4)
    assert float(trend[("2025-07", "fixed")]["median"]) == pytest.approx(
        statistics.median(jul), abs=1e-4)
    # Kỳ Hoa's June tests are Kỳ Hoa's (18814), not Sông Trí's.
    kyhoa = [r for r in _csv(res.files["csv"]) if r["section"] == "unit_trend"
             and r["commune_code"] == "18814" and r["month"] == "2025-06"]
    assert [int(r["tests"]) for r in kyhoa] == [12]


def test_unit_trend_keeps_published_months_on_this_map_and_recomputes_others(
        url: str, tmp_path: Path) -> None:
    june, _ = _history()
    cfg = _cfg(tmp_path, url, min_tests=5, min_probe_days=1)
    out = tmp_path / "out"
    july = generate(cfg, "2025-07", out, formats=("csv",)).files["csv"]
    rows = _csv(july)
    mine = [r for r in rows if r["section"] == "unit_trend" and r["month"] == "2025-07"
            and r["commune_code"] == "18754"]
    assert len(mine) == 1
    # Mark July's published figure for Sông Trí: May 2026's trend must take it from the CSV.
    mine[0]["median"] = "123.4567"
    with open(july, "w", encoding="utf-8-sig", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    # A June CSV made on the old map (a pre-reform unit's code): not used, June recomputed.
    old = {k: "" for k in rows[0]} | {"month": "2025-06", "section": "unit_trend",
                                      "commune_code": "18820", "access": "fixed",
                                      "metric": "download_mbps", "tests": "12",
                                      "median": "999.0"}
    with open(out / "bulletin-2025-06.csv", "w", encoding="utf-8-sig", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerow(old)
    res = generate(cfg, "2026-05", out, formats=("csv",))
    trend = {(r["month"], r["commune_code"]): r for r in _csv(res.files["csv"])
             if r["section"] == "unit_trend" and r["access"] == "fixed"}
    assert float(trend[("2025-07", "18754")]["median"]) == pytest.approx(123.4567)
    jun = _dl([m for m in june if m.probe_id == "sontri-01"])
    assert float(trend[("2025-06", "18754")]["median"]) == pytest.approx(
        statistics.median(jun), abs=1e-4)
    assert ("2025-06", "18820") not in trend


def test_pre_reform_month_has_the_labelled_legacy_view(url: str, tmp_path: Path) -> None:
    june, _ = _history()
    res = generate(_cfg(tmp_path, url, min_tests=5, min_probe_days=5), "2025-06",
                   tmp_path / "out", formats=("csv", "html"))
    rows = _csv(res.files["csv"])
    legacy = {(r["district"], r["access"]): r for r in rows
              if r["section"] == "legacy_district" and r["metric"] == "download_mbps"}
    # Both probes stood in the old Thị xã Kỳ Anh (Kỳ Trinh and Kỳ Hoa).
    assert set(legacy) == {("Thị xã Kỳ Anh", "fixed")}
    assert float(legacy[("Thị xã Kỳ Anh", "fixed")]["median"]) == pytest.approx(
        statistics.median(_dl(june)), abs=1e-4)
    old_communes = {r["commune"] for r in rows if r["section"] == "legacy_commune"}
    assert old_communes == {"Phường Kỳ Trinh", "Xã Kỳ Hoa"}
    # The same month on today's map: Sông Trí holds Kỳ Trinh's tests.
    unit = next(r for r in rows if r["section"] == "commune" and r["commune_code"] == "18754"
                and r["access"] == "fixed" and r["metric"] == "download_mbps")
    assert int(unit["tests"]) == 12
    html = res.files["html"].read_text(encoding="utf-8")
    assert "Trước sắp xếp đơn vị hành chính: theo huyện/thị xã/thành phố cũ (trước " \
           "01/07/2025)" in html
    assert "Thị xã Kỳ Anh" in html


def test_post_reform_month_lists_all_69_units_and_no_district(url: str, tmp_path: Path
                                                             ) -> None:
    res = generate(_cfg(tmp_path, url, min_tests=5, min_probe_days=1), "2025-07",
                   tmp_path / "out", formats=("csv", "html"))
    rows = _csv(res.files["csv"])
    assert not [r for r in rows if r["section"].startswith("legacy")]
    units = [r for r in rows if r["section"] == "commune" and r["metric"] == "download_mbps"]
    for acc in ("fixed", "mobile"):
        assert {r["commune_code"] for r in units if r["access"] == acc} == set(UNITS.units)
    assert len(UNITS.units) == 69
    by = {(r["commune_code"], r["access"]): r["rating"] for r in units}
    # Units with a registered probe but nothing this month: no data; the rest: no probe.
    assert by[("18754", "fixed")] in ("meets", "below")
    assert by[("18814", "fixed")] == "no_data" and by[("18523", "mobile")] == "no_data"
    assert by[("18073", "fixed")] == "no_probe"
    html = res.files["html"].read_text(encoding="utf-8")
    assert "huyện" not in html.split("<h2>", 2)[1].lower().split("theo xã/phường")[0]
    assert "Theo huyện" not in html and "Huyện/TX/TP cũ" not in html
    assert "chart_districts" not in res.files
    for unit in UNITS.units.values():
        assert unit.name in html, unit.name
    assert html.count("Không có điểm đo") >= 2 * (69 - 3)
    # Worst first: in each access table the rated rows come before the unrated ones.
    fixed = [r["rating"] for r in units if r["access"] == "fixed"]
    assert fixed[0] in ("meets", "below") and fixed[-1] == "no_probe"


def test_median_mean_and_thresholds_against_independent_values(url: str, tmp_path: Path
                                                                ) -> None:
    _, july = _history()
    jul = [m for m in july if m.probe_id == "sontri-01"]
    values = _dl(jul)
    probe_days = len({(m.probe_id, m.started_at.astimezone(TZ).date()) for m in jul})
    assert (len(values), probe_days) == (12, 3)

    def unit_row(**kw: object) -> dict[str, str]:
        res = generate(_cfg(tmp_path, url, **kw), "2025-07", tmp_path / "o", formats=("csv",))
        return next(r for r in _csv(res.files["csv"]) if r["section"] == "commune"
                    and r["commune_code"] == "18754" and r["access"] == "fixed"
                    and r["metric"] == "download_mbps")

    row = unit_row(min_tests=len(values), min_probe_days=probe_days)
    assert row["rating"] == ("meets" if statistics.median(values) >= 150 else "below")
    assert float(row["median"]) == pytest.approx(statistics.median(values), abs=1e-4)
    assert float(row["mean"]) == pytest.approx(statistics.fmean(values), abs=1e-4)
    assert int(row["probe_days"]) == probe_days
    # One probe-day short, or one test short: not rated.
    assert unit_row(min_tests=len(values), min_probe_days=probe_days + 1)["rating"] == \
        "insufficient"
    assert unit_row(min_tests=len(values) + 1, min_probe_days=1)["rating"] == "insufficient"
    # The headline is the median, with the mean beside it, labelled.
    res = generate(_cfg(tmp_path, url, min_tests=5, min_probe_days=1), "2025-07",
                   tmp_path / "h", formats=("html",))
    head = {h.access: h for h in res.report.headline}["fixed"]
    assert head.row.download is not None
    assert head.row.download.summary.median == pytest.approx(statistics.median(values))
    html = res.files["html"].read_text(encoding="utf-8")
    mean_vi = f"{statistics.fmean(values):.1f}".replace(".", ",")
    assert f"Trung bình cộng (tham khảo): {mean_vi} Mb/s" in html


REFERENCE = '''
[[median]]
month = "2025-07"
scope = "national"
access = "fixed"
download_mbps = 272.5
source = "VNNIC i-Speed, báo cáo tháng 7/2025 (test)"

[[median]]
month = "2025-07"
scope = "national"
access = "mobile"
download_mbps = 83.25
source = "VNNIC i-Speed, báo cáo tháng 7/2025 (test)"

[[median]]
month = "2025-07"
scope = "province"
access = "fixed"
download_mbps = 240.75
source = "VNNIC i-Speed, Hà Tĩnh, tháng 7/2025 (test)"
'''


def test_reference_row_present_when_entered_absent_otherwise(url: str, tmp_path: Path
                                                            ) -> None:
    res = generate(_cfg(tmp_path, url, reference=REFERENCE), "2025-07", tmp_path / "a",
                   formats=("csv", "html"))
    html = res.files["html"].read_text(encoding="utf-8")
    assert "Trung vị tải xuống: đối chiếu i-Speed" in html
    assert "272,5" in html and "83,2" in html and "240,8" in html
    assert "VNNIC i-Speed, Hà Tĩnh, tháng 7/2025 (test)" in html
    assert "i-Speed (VNNIC): tỉnh Hà Tĩnh" in html
    rows = [r for r in _csv(res.files["csv"]) if r["section"].startswith("ispeed_")]
    assert {(r["section"], r["access"], r["median"]) for r in rows} == {
        ("ispeed_national", "fixed", "272.5000"), ("ispeed_national", "mobile", "83.2500"),
        ("ispeed_province", "fixed", "240.7500")}
    # Another month of the same file, and no file at all: no reference row.
    for cfg_kw, month in (({"reference": REFERENCE}, "2025-06"), ({}, "2025-07")):
        res = generate(_cfg(tmp_path, url, **cfg_kw), month, tmp_path / f"b{month}",
                       formats=("html",))
        assert "đối chiếu i-Speed" not in res.files["html"].read_text(encoding="utf-8")
    # The probe-vs-i-Speed explanation is always there.
    assert "người dùng tự thực hiện" in html


def test_reference_file_without_source_is_a_clear_error(url: str, tmp_path: Path) -> None:
    bad = REFERENCE.replace('source = "VNNIC i-Speed, Hà Tĩnh, tháng 7/2025 (test)"\n', "")
    with pytest.raises(BulletinInputError, match=r"median\[2\]\.source"):
        generate(_cfg(tmp_path, url, reference=bad), "2025-07", tmp_path / "o")


# ---------------------------------------------------------------- availability

#: The deployed plan (deploy/ansible/inventories/hatinh/group_vars/probes.yml): iperf3
#: hourly on fixed links, http every 12 h on every link, icmp every 5 min, tcp and dns
#: every 15 min on every link. (method, every_s, accesses)
DEPLOYED = [("iperf3", 3600, ("fixed",)), ("http", 43200, ("fixed", "mobile")),
            ("icmp", 300, ("fixed", "mobile")), ("tcp", 900, ("fixed", "mobile")),
            ("dns", 900, ("fixed", "mobile"))]


def _runs_per_day(access: str) -> float:
    return sum(86400 / every for _, every, acc in DEPLOYED if access in acc)


def test_availability_is_about_100_for_a_healthy_fibre_4g_fleet(
        influxd: services.Service, tmp_path: Path) -> None:
    url = f"http://{influxd.host}:{influxd.port}"
    msgs: list[ResultMessage | StatusMessage] = []
    days = 2
    t0 = hb.local(2025, 8, 1, 0)
    for pid in ("sontri-01", "kyhoa-ubnd"):
        links = (LinkStatus(name="fibre", access="fixed", isp="VNPT"),
                 LinkStatus(name="lte", access="mobile", isp="Viettel"))
        for d in range(days):
            msgs.append(StatusMessage(
                probe_id=pid, state="online", at=t0 + timedelta(days=d, minutes=1),
                agent_version="1.0.0", links=links,
                expected_runs_per_day={"fibre": _runs_per_day("fixed"),
                                       "lte": _runs_per_day("mobile")}))
        for link, access in LINK_ACCESS.items():
            for method, every, accs in DEPLOYED:
                if access not in accs:
                    continue
                for k in range(days * 86400 // every):
                    at = t0 + timedelta(seconds=k * every + 7)
                    tput = method in ("iperf3", "http")
                    msgs.append(_msg(pid, link, method, at, 150.0 if tput else None))
    # A third probe on an agent that never reports its plan: the configured fallback.
    for k in range(days * 24):
        msgs.append(_msg("huongbinh-tyt", "fibre", "iperf3", t0 + timedelta(hours=k), 200.0))
    assert ingest(msgs, list(SITES.values()), url).accepted == len(msgs)
    now = (t0 + timedelta(days=days)).astimezone(TZ)
    res = generate(_cfg(tmp_path, url, expected_tests_per_day=24.0), "2025-08",
                   tmp_path / "out", formats=("csv",), now=now)
    avail = {r["commune_code"]: r for r in _csv(res.files["csv"])
             if r["section"] == "availability"}
    province = avail[""]
    assert int(float(province["expected"])) == pytest.approx(
        2 * days * (_runs_per_day("fixed") + _runs_per_day("mobile")) + days * 24, abs=1)
    assert float(province["value"]) == pytest.approx(100.0, abs=0.5)
    for code in ("18754", "18814", "18523"):
        assert float(avail[code]["value"]) == pytest.approx(100.0, abs=0.5), code
    # The mobile link alone (2 http tests a day) is not read as ~8% any more.
    lines = res.report.availability[0]
    assert lines.lines == 5 and lines.reported_lines == 4
