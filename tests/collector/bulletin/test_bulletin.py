"""The bulletin against a real influxd holding a known data set.

Every figure in the CSV is recomputed here, independently, with :mod:`statistics` from the
raw values the test published, never from the bulletin's own code.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import unicodedata
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from collector import config as config_mod
from collector.bulletin.generate import BulletinInputError, generate
from devstack import services
from netmon.contract import ResultMessage
from tests.helpers import REPO
from tests.helpers import bulletin as hb

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
THROUGHPUT = {"iperf3", "speedtest", "http"}
TARGET = {"fixed": 150.0, "mobile": 71.0}


@pytest.fixture(scope="module")
def stack(influxd_module: services.Service) -> tuple[str, hb.DataSet]:
    """One influxd for the module with the October data set published into it."""
    url = f"http://{influxd_module.host}:{influxd_module.port}"
    ds = hb.october_data_set()
    assert hb.publish(ds, url) == len(ds.messages)
    return url, ds


def _cfg(tmp: Path, url: str, **kw: object) -> config_mod.CollectorConfig:
    return config_mod.load(hb.write_config(tmp / "collector.toml", url, **kw))  # type: ignore[arg-type]


def _read_csv(path: Path) -> list[dict[str, str]]:
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), "CSV must carry a BOM so Excel reads UTF-8"
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------- independent statistics

def _local(m: ResultMessage) -> datetime:
    return m.started_at.astimezone(TZ)


def _in_october(m: ResultMessage) -> bool:
    lt = _local(m)
    return (lt.year, lt.month) == (2026, 10)


def _q(values: list[float], n: int, i: int) -> float:
    """The i-th n-quantile, linear interpolation (PERCENTILE.INC), a single value as is."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=n, method="inclusive")[i]


def _expected(ds: hb.DataSet, key: Callable[[ResultMessage, hb.Site], tuple[str, ...] | None],
              direction: str = "download_mbps") -> dict[tuple[str, ...], dict[str, float]]:
    sites = {s.probe_id: s for s in ds.sites}
    groups: dict[tuple[str, ...], list[ResultMessage]] = defaultdict(list)
    for m in ds.messages:
        if m.method in THROUGHPUT and _in_october(m):
            k = key(m, sites[m.probe_id])
            if k is not None:
                groups[k].append(m)
    out: dict[tuple[str, ...], dict[str, float]] = {}
    for k, msgs in groups.items():
        valid = [m for m in msgs if m.ok and "cross_traffic" not in m.flags]
        values = [getattr(m.metrics, direction) for m in valid]
        per_line: dict[tuple[str, str], list[float]] = defaultdict(list)
        for m, v in zip(valid, values, strict=True):
            per_line[(m.probe_id, m.link)].append(v)
        line_p20 = [_q(v, 5, 0) for v in per_line.values()]
        access = msgs[0].access
        e: dict[str, float] = {
            "tests": len(values),
            "failed": sum(1 for m in msgs if not m.ok),
            "cross": sum(1 for m in msgs if m.ok and "cross_traffic" in m.flags),
            "probes": len({m.probe_id for m in valid}),
        }
        if values:
            e |= {"median": statistics.median(values), "mean": statistics.fmean(values),
                  "p10": _q(values, 10, 0), "p90": _q(values, 10, 8),
                  "c8080": _q(line_p20, 5, 0)}
            if direction == "download_mbps":
                e["share"] = 100.0 * sum(v >= TARGET[access] for v in values) / len(values)
        out[k] = e
    return out


def _check(row: dict[str, str], exp: dict[str, float]) -> None:
    ctx = f"{row['section']} {row['district']} {row['commune']} {row['isp']} {row['access']} " \
          f"{row['period']} {row['metric']}"
    assert int(row["tests"]) == exp["tests"], ctx
    assert int(row["failed"]) == exp["failed"], ctx
    assert int(row["cross_traffic_excluded"]) == exp["cross"], ctx
    assert int(row["probes"]) == exp["probes"], ctx
    for col, k in (("median", "median"), ("mean", "mean"), ("p10", "p10"), ("p90", "p90"),
                   ("consistent_80_80", "c8080"), ("share_at_target_pct", "share")):
        if k in exp:
            assert float(row[col]) == pytest.approx(exp[k], abs=6e-5), f"{ctx} {col}"


@pytest.fixture(scope="module")
def october_csv(stack: tuple[str, hb.DataSet], tmp_path_factory: pytest.TempPathFactory
                ) -> list[dict[str, str]]:
    url, _ = stack
    tmp = tmp_path_factory.mktemp("csv")
    res = generate(_cfg(tmp, url), "2026-10", tmp / "out", formats=("csv",))
    assert res.has_data
    return _read_csv(res.files["csv"])


def _rows(rows: list[dict[str, str]], section: str, metric: str = "download_mbps"
          ) -> list[dict[str, str]]:
    return [r for r in rows if r["section"] == section and r["metric"] == metric]


@pytest.mark.parametrize("direction", ["download_mbps", "upload_mbps"])
def test_csv_communes_equal_independent_statistics(
        october_csv: list[dict[str, str]], stack: tuple[str, hb.DataSet], direction: str) -> None:
    exp = _expected(stack[1], lambda m, s: (s.commune_code, m.access), direction)
    rows = [r for r in _rows(october_csv, "commune", direction) if int(r["tests"])
            or int(r["failed"])]
    assert {(r["commune_code"], r["access"]) for r in rows} == set(exp)
    for r in rows:
        _check(r, exp[(r["commune_code"], r["access"])])


def test_csv_province_district_isp_period_equal_independent_statistics(
        october_csv: list[dict[str, str]], stack: tuple[str, hb.DataSet]) -> None:
    ds = stack[1]
    cases: list[tuple[str, Callable[..., tuple[str, ...] | None],
                      Callable[[dict[str, str]], tuple[str, ...]]]] = [
        ("province", lambda m, s: (m.access,), lambda r: (r["access"],)),
        ("isp", lambda m, s: (m.isp, m.access), lambda r: (r["isp"], r["access"])),
        ("period", lambda m, s: ("peak" if 19 <= _local(m).hour < 23 else "off_peak", m.access),
         lambda r: (r["period"], r["access"])),
    ]
    for section, key, row_key in cases:
        exp = _expected(ds, key)
        rows = _rows(october_csv, section)
        assert {row_key(r) for r in rows} == set(exp), section
        for r in rows:
            _check(r, exp[row_key(r)])
    # The data set exercises what matters: peak tests, failures and exclusions exist.
    assert any(r["period"] == "peak" and int(r["tests"]) > 0 for r in october_csv)
    prov = {r["access"]: r for r in _rows(october_csv, "province")}
    assert int(prov["fixed"]["failed"]) > 0 and int(prov["fixed"]["cross_traffic_excluded"]) > 0


def test_month_boundaries_are_local_time(october_csv: list[dict[str, str]]) -> None:
    row = next(r for r in _rows(october_csv, "commune")
               if r["commune"] == "Xã Hương Bình" and r["access"] == "fixed")
    # 14 regular tests + 00:00:00 on 1 October local; 23:59:59 on 30 September and
    # 00:00:00 on 1 November are outside (the UTC month would have taken them).
    assert int(row["tests"]) == hb.VALID_COUNTS["phucdong-tyt"] + 1


def test_insufficient_data_rule_at_the_threshold(
        october_csv: list[dict[str, str]], stack: tuple[str, hb.DataSet],
        tmp_path: Path) -> None:
    by = {(r["commune"], r["access"]): r for r in _rows(october_csv, "commune")}
    at = by[("Xã Kỳ Khang", "fixed")]
    under = by[("Xã Phúc Trạch", "fixed")]
    assert int(at["tests"]) == hb.MIN_TESTS and at["rating"] in ("meets", "below")
    assert int(under["tests"]) == hb.MIN_TESTS - 1 and under["rating"] == "insufficient"
    # Failed and cross-traffic tests do not count towards the minimum.
    assert int(under["failed"]) == 2 and int(under["cross_traffic_excluded"]) == 1
    # One lower minimum and the same commune is rated.
    res = generate(_cfg(tmp_path, stack[0], min_tests=hb.MIN_TESTS - 1,
                        min_probe_days=hb.MIN_TESTS - 1), "2026-10",
                   tmp_path / "out", formats=("csv",))
    rows = {(r["commune"], r["access"]): r for r in _rows(_read_csv(res.files["csv"]),
                                                          "commune")}
    assert rows[("Xã Phúc Trạch", "fixed")]["rating"] in ("meets", "below")
    assert rows[("Xã Kỳ Khang", "fixed")]["rating"] == at["rating"]


def test_below_target_list_and_rating(october_csv: list[dict[str, str]]) -> None:
    ratings = {r["rating"] for r in _rows(october_csv, "commune")}
    assert {"meets", "below", "insufficient", "no_probe"} <= ratings
    for r in _rows(october_csv, "commune"):
        if r["rating"] in ("meets", "below"):
            assert (float(r["median"]) >= float(r["target"])) == (r["rating"] == "meets")
    # Upload has no target in plan 568: never rated meets/below.
    assert {r["rating"] for r in _rows(october_csv, "commune", "upload_mbps")} <= {
        "no_target", "insufficient", "no_data", "no_probe"}


def test_latency_ipv6_reachability_and_availability(october_csv: list[dict[str, str]],
                                                    stack: tuple[str, hb.DataSet]) -> None:
    ds = stack[1]
    icmp = [m for m in ds.messages if m.method == "icmp" and _in_october(m)]
    rtt = next(r for r in october_csv if r["section"] == "latency" and r["metric"] == "rtt_ms"
               and r["district"] == "" and r["access"] == "fixed")
    assert int(rtt["tests"]) == len(icmp)
    assert float(rtt["median"]) == pytest.approx(statistics.median(m.metrics.rtt_ms for m in icmp),
                                                 abs=1e-4)
    loss = next(r for r in october_csv if r["section"] == "latency"
                and r["metric"] == "loss_pct" and r["district"] == "" and r["access"] == "fixed")
    assert float(loss["mean"]) == pytest.approx(statistics.fmean(m.metrics.loss_pct
                                                                 for m in icmp), abs=1e-4)
    net = {(r["commune"], r["metric"]): r for r in october_csv
           if r["section"] == "commune_network"}
    assert float(net[("Xã Kỳ Khang", "ipv6_ready_pct")]["value"]) == 0.0
    assert float(net[("Xã Kỳ Hoa", "ipv6_ready_pct")]["value"]) == 100.0
    assert float(net[("Xã Kỳ Khang", "tslcd_reachable_pct")]["value"]) == pytest.approx(75.0)
    avail = next(r for r in october_csv if r["section"] == "availability"
                 and not r["district"] and not r["commune_code"])
    # No agent reported a plan: the configured fallback, over throughput results.
    n_tput = sum(1 for m in ds.messages if m.method in THROUGHPUT and _in_october(m))
    assert int(avail["tests"]) == n_tput
    assert 0 < float(avail["value"]) <= 100


def test_trend_and_previous_month_change(stack: tuple[str, hb.DataSet], tmp_path: Path) -> None:
    url, ds = stack
    res = generate(_cfg(tmp_path, url), "2026-10", tmp_path / "out", formats=("csv",))
    sept = [m.metrics.download_mbps for m in ds.messages
            if m.method in THROUGHPUT and m.access == "fixed" and m.ok
            and "cross_traffic" not in m.flags
            and (_local(m).year, _local(m).month) == (2026, 9)]
    head = {h.access: h for h in res.report.headline}["fixed"]
    assert head.prev_download == pytest.approx(statistics.median(sept))
    cur = head.row.download.summary.median  # type: ignore[union-attr]
    assert head.download_change_pct == pytest.approx((cur - statistics.median(sept))
                                                     / statistics.median(sept) * 100)
    trend = {(r["month"], r["access"]): r for r in _read_csv(res.files["csv"])
             if r["section"] == "trend"}
    assert float(trend[("2026-09", "fixed")]["median"]) == pytest.approx(statistics.median(sept),
                                                                         abs=1e-4)


def test_trend_reuses_earlier_bulletin_csv(stack: tuple[str, hb.DataSet],
                                           tmp_path: Path) -> None:
    url, _ = stack
    cfg = _cfg(tmp_path, url)
    out = tmp_path / "out"
    sept = generate(cfg, "2026-09", out, formats=("csv",)).files["csv"]
    rows = _read_csv(sept)
    fixed = next(r for r in rows if r["section"] == "province" and r["access"] == "fixed"
                 and r["metric"] == "download_mbps")
    # Mark September's published figure: October's bulletin must take it from the CSV.
    prefix = ",".join(fixed[c] for c in list(fixed)[:list(fixed).index("median")])
    text = sept.read_text(encoding="utf-8-sig").replace(
        f"{prefix},{fixed['median']},", f"{prefix},123.4567,")
    assert "123.4567" in text
    sept.write_text(text, encoding="utf-8-sig")
    res = generate(cfg, "2026-10", out, formats=("csv",))
    head = {h.access: h for h in res.report.headline}["fixed"]
    assert head.prev_download == pytest.approx(123.4567)


def test_trend_queries_start_at_the_first_throughput_result(
        stack: tuple[str, hb.DataSet]) -> None:
    """Months before the first throughput result are not asked for (a first bulletin's
    empty months cost influxd a cursor per series each); the bound must be that result."""
    url, ds = stack
    from collector.bulletin import data
    from collector.core.influx import InfluxClient

    oct_start, _ = data.Month(2026, 10, "Asia/Ho_Chi_Minh").bounds_ms()
    year_start, _ = data.Month(2025, 11, "Asia/Ho_Chi_Minh").bounds_ms()
    tput = sorted(int(m.started_at.timestamp() * 1000) for m in ds.messages
                  if m.method in THROUGHPUT)
    before_oct = [t for t in tput if year_start <= t < oct_start]
    assert before_oct and tput[0] < oct_start, "the data set has no month before October"
    with InfluxClient(config_mod.InfluxSettings(url=url, database="netmon")) as client:
        assert data.first_throughput_ms(client, year_start, oct_start) == before_oct[0]
        # From the middle of September: the first one after that instant, not the month's.
        mid = before_oct[len(before_oct) // 2]
        assert data.first_throughput_ms(client, mid + 1, oct_start) == min(
            t for t in before_oct if t > mid)
        assert data.first_throughput_ms(client, year_start, tput[0]) is None


def _pdftext(path: Path) -> str:
    out = subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True,
                         check=True, timeout=60).stdout.decode("utf-8")
    return " ".join(out.split())


@pytest.mark.parametrize(("lang", "headline", "words"), [
    ("vi", "Bản tin tốc độ băng rộng tỉnh Hà Tĩnh, tháng 10/2026",
     ["Tốc độ tải xuống trung vị", "Xã Kỳ Hoa", "Xã Phúc Trạch", "Chưa đủ dữ liệu", "Mb/s",
      "Không có điểm đo", "Trung bình cộng (tham khảo)"]),
    ("en", "Broadband speed bulletin, Hà Tĩnh province, October 2026",
     ["Median download speed", "Xã Kỳ Hoa", "Xã Phúc Trạch", "Insufficient data",
      "No measurement point", "Mean (for reference)"]),
])
def test_pdf_and_html_render_with_vietnamese_intact(
        stack: tuple[str, hb.DataSet], tmp_path: Path, lang: str, headline: str,
        words: list[str]) -> None:
    url, _ = stack
    res = generate(_cfg(tmp_path, url), "2026-10", tmp_path / "out", lang=lang)  # type: ignore[arg-type]
    text = _pdftext(res.files["pdf"])
    assert unicodedata.is_normalized("NFC", text)
    assert headline in text
    for w in words:
        assert w in text, w
    fonts = subprocess.run(["pdffonts", str(res.files["pdf"])], capture_output=True,
                           text=True, check=True).stdout
    assert "Noto" in fonts or "DejaVu" in fonts
    html = res.files["html"].read_text(encoding="utf-8")
    assert f'<html lang="{lang}">' in html and headline in html
    # The list of communes below target names Kỳ Khang (fixed median ~95 < 150) and not
    # Phúc Trạch's fixed line (one test short of the minimum: not rated).
    below = html.split(">" + ("Các xã/phường dưới mục tiêu" if lang == "vi"
                              else "Communes below target") + "<", 1)[1].split("<h2", 1)[0]
    assert "Xã Kỳ Khang" in below
    assert not any("Xã Phúc Trạch" in row and ("Cố định" in row or "Fixed" in row)
                   for row in below.split("<tr>"))
    assert "chart_districts" not in res.files  # no district level after the reform
    for key in ("distribution", "trend"):
        png = res.files[f"chart_{key}"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.name in html
    # Number format: decimal comma in Vietnamese, point in English.
    med = {h.access: h for h in res.report.headline}["fixed"].row.download.summary.median
    assert med is not None
    shown = f"{med:.1f}"
    assert (shown.replace(".", ",") if lang == "vi" else shown) + " Mb/s" in text


def test_device_limited_tests_counted_and_stated(stack: tuple[str, hb.DataSet],
                                                tmp_path: Path) -> None:
    url, ds = stack
    expected = sum(1 for m in ds.messages
                   if m.method in THROUGHPUT and _in_october(m) and m.ok
                   and "cross_traffic" not in m.flags and "device_limited" in m.flags)
    assert expected > 0
    res = generate(_cfg(tmp_path, url), "2026-10", tmp_path / "out", formats=("html",))
    assert res.report.totals.device_limited == expected
    html = res.files["html"].read_text(encoding="utf-8")
    assert f"Giới hạn của thiết bị đo: {expected} phép đo tốc độ hợp lệ" in html
    assert "không thể xác nhận gói cước cao hơn trần của thiết bị" in html
    assert "TLS" in html


def test_month_without_data_says_so(stack: tuple[str, hb.DataSet], tmp_path: Path) -> None:
    res = generate(_cfg(tmp_path, stack[0]), "2025-03", tmp_path / "out")
    assert not res.has_data
    text = _pdftext(res.files["pdf"])
    assert "Không có dữ liệu đo tốc độ nào trong tháng này" in text
    assert "tháng 03/2025" in text
    rows = _read_csv(res.files["csv"])
    assert not [r for r in rows if r["section"] in ("commune", "province")]


def test_bad_month_is_a_clear_error(stack: tuple[str, hb.DataSet], tmp_path: Path) -> None:
    for bad in ("2026-13", "2026/10", "10-2026", "2026-1"):
        with pytest.raises(BulletinInputError, match="YYYY-MM"):
            generate(_cfg(tmp_path, stack[0]), bad, tmp_path / "out")


# ---------------------------------------------------------------- the command line

def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector.cli", "bulletin", *args],
                          capture_output=True, text=True, timeout=120,
                          env=os.environ | {"PYTHONPATH": str(REPO)})


def test_cli_writes_files_and_json(stack: tuple[str, hb.DataSet], tmp_path: Path) -> None:
    cfg = hb.write_config(tmp_path / "c.toml", stack[0])
    out = tmp_path / "out"
    p = _cli("--config", str(cfg), "--month", "2026-10", "--out", str(out), "--json",
             "--lang", "en")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["has_data"] and summary["lang"] == "en"
    for kind in ("html", "pdf", "csv"):
        assert Path(summary["files"][kind]).is_file()
    assert (out / "bulletin-2026-10.pdf").is_file()
    assert summary["headline"]["fixed"]["target_mbps"] == 150.0


@pytest.mark.parametrize(("month", "needle"), [("2026-13", "YYYY-MM"), ("oct", "YYYY-MM")])
def test_cli_bad_month_exit_2(stack: tuple[str, hb.DataSet], tmp_path: Path, month: str,
                              needle: str) -> None:
    cfg = hb.write_config(tmp_path / "c.toml", stack[0])
    p = _cli("--config", str(cfg), "--month", month, "--out", str(tmp_path / "o"))
    assert p.returncode == 2 and needle in p.stderr and "Traceback" not in p.stderr


def test_cli_unreachable_influxdb_exit_2(tmp_path: Path) -> None:
    port = services.free_port()  # nothing listens there
    cfg = hb.write_config(tmp_path / "c.toml", f"http://127.0.0.1:{port}")
    p = _cli("--config", str(cfg), "--month", "2026-10", "--out", str(tmp_path / "o"))
    assert p.returncode == 2, p.stderr
    assert "unreachable" in p.stderr and "influxdb.url" in p.stderr
    assert "Traceback" not in p.stderr


def test_cli_missing_database_exit_2(stack: tuple[str, hb.DataSet], tmp_path: Path) -> None:
    cfg = hb.write_config(tmp_path / "c.toml", stack[0], database="no_such_db")
    p = _cli("--config", str(cfg), "--month", "2026-10", "--out", str(tmp_path / "o"))
    assert p.returncode == 2, p.stderr
    assert "no_such_db" in p.stderr and "influxdb.database" in p.stderr
    assert "Traceback" not in p.stderr


def test_cli_unknown_timezone_exit_2(stack: tuple[str, hb.DataSet], tmp_path: Path) -> None:
    cfg = hb.write_config(tmp_path / "c.toml", stack[0])
    cfg.write_text(cfg.read_text(encoding="utf-8").replace(
        "[bulletin]\n", '[bulletin]\ntimezone = "Asia/Ha_Tinh"\n'), encoding="utf-8")
    p = _cli("--config", str(cfg), "--month", "2026-10", "--out", str(tmp_path / "o"))
    assert p.returncode == 2 and "bulletin.timezone" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_cli_bad_config_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[bulletin]\nmin_tests = 0\n", encoding="utf-8")
    p = _cli("--config", str(cfg), "--month", "2026-10", "--out", str(tmp_path / "o"))
    assert p.returncode == 2 and "min_tests" in p.stderr and "Traceback" not in p.stderr


def test_cli_help() -> None:
    p = _cli("--help")
    assert p.returncode == 0 and "--month" in p.stdout and "--lang" in p.stdout
