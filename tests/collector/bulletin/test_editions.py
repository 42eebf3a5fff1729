"""Provisional and final editions published into the archive, against a real influxd.

The late results, the medians and the counts the change report states are recomputed
here from the messages the test published (with :mod:`statistics`), not from the
bulletin's code. Failures are real ones: InfluxDB not listening, a full disk (a tmpfs).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from collector import config as config_mod
from collector.bulletin import archive, editions
from devstack import services
from netmon.contract import ResultMessage
from tests.helpers import REPO
from tests.helpers import bulletin as hb

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
THROUGHPUT = {"iperf3", "speedtest", "http"}


def _october(m: ResultMessage) -> bool:
    lt = m.started_at.astimezone(TZ)
    return (lt.year, lt.month) == (2026, 10)


def _late(m: ResultMessage) -> bool:
    """Held back until after the provisional edition: Phúc Đồng's fibre speed tests after
    the 5th (a spool that delivered days late)."""
    return (m.probe_id == "phucdong-tyt" and m.link == "fibre" and m.method in THROUGHPUT
            and _october(m) and m.started_at.astimezone(TZ).day > 5)


def _split() -> tuple[hb.DataSet, hb.DataSet]:
    ds = hb.october_data_set()
    return (hb.DataSet([m for m in ds.messages if not _late(m)]),
            hb.DataSet([m for m in ds.messages if _late(m)]))


def _results(msgs: list[ResultMessage]) -> int:
    """Throughput results of the month: what the bulletin counts (valid, failed, busy)."""
    return sum(1 for m in msgs if m.method in THROUGHPUT and _october(m))


def _median(msgs: list[ResultMessage], access: str) -> float:
    return statistics.median(
        m.metrics.download_mbps for m in msgs  # type: ignore[misc]
        if m.method in THROUGHPUT and _october(m) and m.access == access and m.ok
        and "cross_traffic" not in m.flags)


def _tree(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (hidden ones too): file digests and symlink targets."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


def _pdf_first_page(path: Path) -> str:
    pdftotext = shutil.which("pdftotext")
    if pdftotext is None:
        pytest.skip("pdftotext not installed (package poppler-utils)")
    return subprocess.run([pdftotext, "-f", "1", "-l", "1", "-layout", str(path), "-"],
                          capture_output=True, text=True, check=True, timeout=60).stdout


def _vi(value: float) -> str:
    return f"{value:.1f}".replace(".", ",")


@pytest.fixture(scope="module")
def url(influxd_module: services.Service) -> str:
    return f"http://{influxd_module.host}:{influxd_module.port}"


def _cfg(tmp: Path, url: str, database: str) -> config_mod.CollectorConfig:
    return config_mod.load(hb.write_config(tmp / f"{database}.toml", url, database=database))


def test_provisional_then_final_with_late_results(url: str, tmp_path: Path) -> None:
    early, late = _split()
    assert len(late.messages) >= 5
    hb.publish(early, url, database="editions")
    cfg = _cfg(tmp_path, url, "editions")
    root = tmp_path / "archive"
    prov = editions.publish(cfg, "2026-10", "provisional", root,
                            now=hb.local(2026, 11, 1, 6))
    assert (root / "2026-10" / "provisional").is_symlink()
    assert prov.files["pdf"].name == "bulletin-2026-10-provisional.pdf"
    assert {p.name for p in prov.files.values()} >= {
        "bulletin-2026-10-provisional.html", "bulletin-2026-10-provisional.csv"}
    assert prov.results == _results(early.messages)
    assert "Bản tạm tính" in _pdf_first_page(prov.files["pdf"])
    before = _tree(root / "2026-10" / "provisional")

    hb.publish(late, url, database="editions")
    final = editions.publish(cfg, "2026-10", "final", root, now=hb.local(2026, 11, 5, 6))
    change = final.change
    assert change is not None
    everything = early.messages + late.messages
    assert change.late_results == _results(late.messages) == len(late.messages)
    assert final.results == _results(everything)
    # The fixed median moved by exactly what the late results make it move; mobile did not.
    moved = {(c.access, c.figure): c for c in change.changes}
    fixed = moved[("fixed", "download_median_mbps")]
    assert fixed.before == pytest.approx(_median(early.messages, "fixed"), abs=6e-5)
    assert fixed.after == pytest.approx(_median(everything, "fixed"), abs=6e-5)
    assert fixed.delta == pytest.approx(fixed.after - fixed.before)
    assert fixed.delta_pct == pytest.approx(100 * fixed.delta / fixed.before)
    assert ("mobile", "download_median_mbps") not in moved
    # Each edition's CSV agrees with what the change report says about communes.
    prov_figs = archive.load_edition(root, "2026-10", "provisional")
    final_figs = archive.load_edition(root, "2026-10", "final")
    assert prov_figs and final_figs
    for acc in ("fixed", "mobile"):
        p, f = prov_figs.figures[acc], final_figs.figures[acc]
        if (p.communes_meeting, p.communes_rated) != (f.communes_meeting, f.communes_rated):
            c = moved[(acc, "communes_meeting")]
            assert (c.before, c.after) == (p.share_meeting, f.share_meeting)
        else:
            assert (acc, "communes_meeting") not in moved
    # The first page names the edition and states the change.
    page = _pdf_first_page(final.files["pdf"])
    assert "Bản chính thức" in page
    assert f"{len(late.messages)} kết quả đến sau bản tạm tính" in page
    assert f"{_vi(fixed.before)} → {_vi(fixed.after)} Mb/s" in page
    # Both editions are kept: the provisional one is byte for byte what it was.
    assert _tree(root / "2026-10" / "provisional") == before
    manifest = json.loads((final.folder / "edition.json").read_text(encoding="utf-8"))
    assert manifest["change"]["late_results"] == len(late.messages)
    # The index lists both, each link to a file that exists.
    for page_name in ("index.html", "index.en.html"):
        html = (root / page_name).read_text(encoding="utf-8")
        for ed in (prov, final):
            for p in ed.files.values():
                if p.suffix in (".html", ".pdf", ".csv"):
                    href = f"2026-10/{ed.edition}/{p.name}"
                    assert f'href="{href}"' in html, (page_name, href)
                    assert (root / href).is_file()
    assert "Bản chính thức" in (root / "index.html").read_text(encoding="utf-8")
    assert "Final edition" in (root / "index.en.html").read_text(encoding="utf-8")
    assert not [p for p in (root / "2026-10").iterdir() if p.name.startswith(".")
                and "link" in p.name], "no leftover temporary symlink"


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector.cli", "bulletin", *map(str, args)],
                          capture_output=True, text=True, timeout=600, cwd=REPO, check=False)


def _runs(url: str, database: str) -> list[dict[str, object]]:
    """The bulletin_runs points in time order (read with a plain HTTP query)."""
    q = urllib.parse.urlencode({"db": database, "q": 'SELECT "ok", "attempts", "edition", '
                                '"month" FROM "bulletin_runs"'})
    with urllib.request.urlopen(f"{url}/query?{q}", timeout=30) as resp:
        series = json.loads(resp.read())["results"][0].get("series", [])
    if not series:
        return []
    cols = series[0]["columns"]
    return [dict(zip(cols, row, strict=True)) for row in series[0]["values"]]


def test_failed_run_leaves_the_archive_intact_and_is_reported(url: str,
                                                              tmp_path: Path) -> None:
    ds = hb.october_data_set()
    hb.publish(ds, url, database="failing")
    good = hb.write_config(tmp_path / "good.toml", url, database="failing")
    root = tmp_path / "archive"
    assert _cli("--config", good, "--edition", "provisional", "--month", "2026-10",
                "--archive", root).returncode == 0
    before = _tree(root)
    # InfluxDB "down": nothing listens on the data config's port; the bulletin_runs point
    # goes to the real one (--metrics-config), as on the NOC host.
    down = hb.write_config(tmp_path / "down.toml",
                           f"http://127.0.0.1:{services.free_port()}", database="failing")
    proc = _cli("--config", down, "--metrics-config", good, "--edition", "final",
                "--month", "2026-10", "--archive", root, "--retries", "1",
                "--retry-wait", "0.2")
    assert proc.returncode == 1, proc.stderr
    assert "failed after 2 attempt(s)" in proc.stderr and "unreachable" in proc.stderr
    assert _tree(root) == before, "a failed run must leave the archive as it was"
    runs = _runs(url, "failing")
    assert [(r["edition"], r["ok"], r["attempts"]) for r in runs] == [
        ("provisional", 1, 1), ("final", 0, 2)]
    # Once InfluxDB answers again, the same command publishes the final edition.
    proc = _cli("--config", good, "--edition", "final", "--month", "2026-10",
                "--archive", root, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["edition"] == "final" and out["change"]["late_results"] == 0
    assert Path(out["files"]["pdf"]).is_file()
    assert _runs(url, "failing")[-1]["ok"] == 1
    # The index can be rebuilt by hand from the editions alone (no InfluxDB: "down").
    (root / "index.html").unlink()
    proc = _cli("--config", down, "--reindex", "--archive", root, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["files"]["index_vi"] == str(root / "index.html")
    assert 'href="2026-10/final/bulletin-2026-10-final.pdf"' in \
        (root / "index.html").read_text(encoding="utf-8")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_disk_full_mid_edition_is_retried_and_never_half_published(
        url: str, tmp_path: Path) -> None:
    mount = shutil.which("mount")
    assert mount, "mount (util-linux) missing"
    hb.publish(hb.october_data_set(), url, database="diskfull")
    cfg = _cfg(tmp_path, url, "diskfull")
    root = tmp_path / "archive"
    root.mkdir()
    subprocess.run([mount, "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(root)], check=True)
    try:
        editions.publish(cfg, "2026-10", "provisional", root)
        before = _tree(root)
        filler = root / "filler"
        # Leave room for a few kilobytes: the edition's charts and PDF cannot fit.
        free = os.statvfs(root).f_bavail * os.statvfs(root).f_frsize
        with open(filler, "wb") as fh:
            fh.write(b"\0" * max(0, free - 16 * 1024))
        before["filler"] = hashlib.sha256(filler.read_bytes()).hexdigest()
        failures: list[BaseException] = []

        def on_failure(attempt: int, exc: BaseException) -> None:
            failures.append(exc)
            # What a reader sees between attempts: the archive as it was, nothing partial.
            assert _tree(root) == before
            filler.unlink()  # the operator frees space before the next attempt

        waits: list[float] = []
        res = editions.publish(cfg, "2026-10", "final", root, retries=2, retry_wait_s=5.0,
                               on_failure=on_failure, sleep=waits.append)
        assert len(failures) == 1 and isinstance(failures[0], OSError)
        assert res.attempts == 2 and waits == [5.0]
        assert res.files["pdf"].stat().st_size > 0
        assert (root / "2026-10" / "provisional").is_symlink()
        leftovers = [p.name for p in (root / "2026-10").iterdir() if p.name.startswith(".")]
        assert len(leftovers) == 2, leftovers  # the two editions' folders, nothing else
    finally:
        subprocess.run(["umount", str(root)], check=False)


def test_usage_errors_exit_2(url: str, tmp_path: Path) -> None:
    cfg = hb.write_config(tmp_path / "c.toml", url, database="usage")
    proc = _cli("--config", cfg, "--edition", "final", "--month", "2026-13",
                "--archive", tmp_path / "a")
    assert proc.returncode == 2 and "2026-13" in proc.stderr
    proc = _cli("--config", cfg, "--edition", "final", "--month", "2026-10")
    assert proc.returncode == 2 and "--archive" in proc.stderr
    proc = _cli("--config", cfg, "--edition", "final", "--archive", tmp_path / "a")
    assert proc.returncode == 2 and "--month" in proc.stderr
    assert not (tmp_path / "a" / "2026-13").exists()


def test_previous_month_is_the_local_month_just_ended() -> None:
    tz = "Asia/Ho_Chi_Minh"
    # 23:00 UTC on 31 October is 06:00 on 1 November in Hà Tĩnh.
    assert editions.previous_month(tz, datetime(2026, 10, 31, 23, 0, tzinfo=ZoneInfo("UTC"))
                                   ) == "2026-10"
    assert editions.previous_month(tz, datetime(2026, 10, 31, 16, 0, tzinfo=ZoneInfo("UTC"))
                                   ) == "2026-09"
    assert editions.previous_month(tz, hb.local(2027, 1, 1, 6)) == "2026-12"
