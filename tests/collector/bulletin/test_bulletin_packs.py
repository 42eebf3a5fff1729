"""Day packs (issue 20): the bulletin reads the rollups' per line-day packs instead of a
month of raw points, and must write the same files as from the raw points, whichever days
the packs hold: all of them, a late result rolled up after the first round, one not rolled
up yet, a month only partly packed (``rollups rebuild --since`` over some days)."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from collector import cli
from collector import config as config_mod
from collector.bulletin.generate import BulletinResult, generate
from collector.core import packs
from collector.core.service import ingest
from devstack import services
from netmon.contract import THROUGHPUT_METHODS, ResultMessage
from tests.helpers import bulletin as hb

NOW = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def url(influxd_module: services.Service) -> str:
    return f"http://{influxd_module.host}:{influxd_module.port}"


def _pdftext(path: Path) -> str:
    return subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True,
                          check=True, timeout=120).stdout.decode("utf-8")


def _config(tmp: Path, url: str, db: str, day_packs: bool) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    path = hb.write_config(tmp / f"collector-{day_packs}.toml", url, database=db)
    path.write_text(path.read_text(encoding="utf-8") +
                    f"day_packs = {'true' if day_packs else 'false'}\n", encoding="utf-8")
    return path


def _bulletin(url: str, db: str, tmp: Path, day_packs: bool, pdf: bool
              ) -> tuple[BulletinResult, dict[str, bytes | str]]:
    out = tmp / f"out-{db}-{day_packs}"
    cfg = config_mod.load(_config(tmp, url, db, day_packs))
    res = generate(cfg, "2026-10", out, now=NOW,
                   formats=("html", "csv", "pdf") if pdf else ("html", "csv"))
    assert res.has_data
    files: dict[str, bytes | str] = {"csv": res.files["csv"].read_bytes(),
                                     "html": res.files["html"].read_bytes()}
    if pdf:
        files["pdf_text"] = _pdftext(res.files["pdf"])
    return res, files


def _same_as_raw(url: str, db: str, tmp: Path, pdf: bool = False) -> BulletinResult:
    """The bulletin with day packs; asserts its files equal the raw read's (the PDF is
    made from the HTML: its text is compared where ``pdf``, the slow step)."""
    raw_res, raw = _bulletin(url, db, tmp, day_packs=False, pdf=pdf)
    assert raw_res.sources.pack_days == [] and len(raw_res.sources.raw_days) == 31
    res, got = _bulletin(url, db, tmp, day_packs=True, pdf=pdf)
    assert got.keys() == raw.keys()
    for key in raw:
        assert got[key] == raw[key], f"{key} differs between day packs and raw points"
    return res


def _tput_days(messages: list[ResultMessage]) -> list[int]:
    """Local days of October (0 = the 1st) with a throughput result."""
    days = set()
    for m in messages:
        local = m.started_at + hb.TZ_OFFSET
        if m.method in THROUGHPUT_METHODS and (local.year, local.month) == (2026, 10):
            days.add(local.day - 1)
    return sorted(days)


def _late(day: int, dl: float) -> ResultMessage:
    site = hb.SITES[0]
    return hb._msg(site, "fibre", "iperf3", hb.local(2026, 10, day, 14, 7),
                   metrics={"download_mbps": dl, "upload_mbps": dl / 2, "idle_rtt_ms": 9.0,
                            "loaded_rtt_ms": 55.0})


def test_pack_round_trips_every_value_exactly() -> None:
    day = 1_790_787_600_000
    vals = {"download_mbps": np.array([187.345, np.nan, 0.1 + 0.2, 1e-300]),
            "upload_mbps": np.array([np.nan, 3.0, 2.5, 7.0]),
            "loaded_rtt_ms": np.array([40.0, np.nan, 41.5, 1e9]),
            "idle_rtt_ms": np.array([8.0, 9.0, np.nan, 10.0]),
            "device_limited": np.array([1.0, 0.0, np.nan, 1.0])}
    dt = packs.DayTests(day, np.array([day, day + 5, day + 5, day + 86_399_999]),
                        ["ok", "lỗi"], np.array([0, 1, 0, 0], np.uint8),
                        np.array([False, False, True, False]), vals)
    back = packs.decode(packs.encode(dt), day)
    assert back.time_ms.tolist() == dt.time_ms.tolist()
    assert back.status == ["ok", "lỗi"] and back.status_idx.tolist() == [0, 1, 0, 0]
    assert back.cross.tolist() == [False, False, True, False]
    for f, v in vals.items():
        assert np.array_equal(back.values[f], v, equal_nan=True), f
    # Many at once (the bulletin's way): the same values, statuses mapped to one table.
    other = packs.DayTests(day, np.array([day + 7, day + 9]), ["timeout", "ok"],
                           np.array([1, 0], np.uint8), np.array([True, False]),
                           {f: np.array([2.0, 0.0]) if f == "device_limited"
                            else np.array([1.25, np.nan]) for f in vals})
    # A column of whole numbers is written narrow (u8) in one pack and wide in another.
    whole = packs.DayTests(day, np.array([day + 11]), ["ok"], np.zeros(1, np.uint8),
                           np.array([False]), {f: np.array([3.0]) for f in vals})
    many = packs.decode_many([packs.encode(dt), packs.encode(other), packs.encode(whole)], day)
    assert many.pack.tolist() == [0, 0, 0, 0, 1, 1, 2]
    assert [many.status[i] for i in many.status_idx] == ["ok", "lỗi", "ok", "ok", "ok",
                                                         "timeout", "ok"]
    assert many.time_ms.tolist() == [*dt.time_ms.tolist(), day + 7, day + 9, day + 11]
    assert many.cross.tolist() == [False, False, True, False, True, False, False]
    for f, v in vals.items():
        assert np.array_equal(many.values[f], np.concatenate([v, other.values[f], [3.0]]),
                              equal_nan=True), f
    for bad in (packs.encode(dt)[:-8], "not base64!"):
        with pytest.raises(packs.PackError, match=r"undecodable|left over"):
            packs.decode(bad, day)
        with pytest.raises(packs.PackError, match=r"undecodable|left over"):
            packs.decode_many([packs.encode(other), bad], day)
    with pytest.raises(packs.PackError, match="outside the pack's day"):
        packs.encode(packs.DayTests(day, np.array([day - 1]), ["ok"], np.zeros(1, np.uint8),
                                    np.zeros(1, bool), {f: np.ones(1) for f in vals}))


def test_fully_packed_month_same_files_as_raw_and_split_packs(
        url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two tests per pack point: the line-days with more are split into parts.
    monkeypatch.setattr(packs, "MAX_TESTS", 2)
    ds = hb.october_data_set()
    assert hb.publish(ds, url, database="full") == len(ds.messages)
    res = _same_as_raw(url, "full", tmp_path, pdf=True)
    # Days without any result have no pack: read raw (an empty answer).
    assert res.sources.pack_days == _tput_days(ds.messages)


def test_late_result_rolled_up_again_and_not_yet(url: str, tmp_path: Path) -> None:
    ds = hb.october_data_set()
    hb.publish(ds, url, database="late")
    before = _same_as_raw(url, "late", tmp_path / "0").report.totals.results
    # A probe's spool drains a week later: the rollups recompute that day's pack.
    report = ingest([_late(12, 1234.5)], ds.sites, url, database="late")
    assert report.accepted == 1
    res = _same_as_raw(url, "late", tmp_path / "1")
    assert 11 in res.sources.pack_days
    assert res.sources.pack_days == _tput_days([*ds.messages, _late(12, 0.0)])
    assert res.report.totals.results == before + 1
    # Written, but the rollups have not run yet (the collector stopped first): that day
    # no longer matches its packs and is read raw; the late result is in the figures.
    ingest([_late(20, 4321.0)], ds.sites, url, database="late", rollups=False)
    res = _same_as_raw(url, "late", tmp_path / "2")
    assert 19 in res.sources.raw_days
    assert res.sources.pack_days == [d for d in _tput_days(ds.messages) if d != 19]
    assert res.report.totals.results == before + 2


def test_month_partly_packed_by_rollups_rebuild(url: str, tmp_path: Path) -> None:
    ds = hb.october_data_set()
    # Data from before the rollups existed: no packs at all, every day raw.
    report = ingest(ds.messages, ds.sites, url, database="partly", rollups=False)
    assert report.accepted == len(ds.messages)
    res = _same_as_raw(url, "partly", tmp_path / "0")
    assert res.sources.pack_days == []
    cfg = _config(tmp_path, url, "partly", True)
    # UTC days 9-19 October: local days 10-19 in full, 9 and 20 in part (partly rebuilt
    # days are whole local days: the rollups recompute every day they touch).
    assert cli.main(["rollups", "rebuild", "--config", str(cfg), "--since", "2026-10-09",
                     "--until", "2026-10-20"]) == 0
    res = _same_as_raw(url, "partly", tmp_path / "1", pdf=True)
    days = _tput_days(ds.messages)
    assert res.sources.pack_days == [d for d in days if 8 <= d <= 19]
    assert set(days) - set(res.sources.pack_days), "no raw day left: not a mixed month"
