"""The bulletin's deployment (deploy/ansible/roles/netmon_collector/tasks/bulletin.yml):
the rendered timers and service pass ``systemd-analyze verify`` and fire at the right
local times; bulletin.toml loads; the rendered nginx server block serves a real archive
(editions made from a real influxd) that headless Chromium renders at desktop and phone
widths.

Screenshots are saved in the test's tmp folder and, when ``NETMON_TEST_ARTIFACTS`` names a
folder, copied there (CI keeps that folder as an artifact).
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import stat
import struct
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from collector import config as config_mod
from collector.bulletin import editions
from devstack import services
from tests.helpers import bulletin as hb
from tests.helpers import chromium, need
from tests.helpers.ansible import Ansible, inventory_groups, make_secrets, tool

COLLECTOR = inventory_groups()["collector"][0]
TZ = ZoneInfo("Asia/Ho_Chi_Minh")
pytestmark = pytest.mark.timeout(900)
RECIPIENTS = ["lanhdao@hatinh.gov.vn", "noc@hatinh.gov.vn"]



@dataclass
class Rendered:
    """The bulletin tasks of the collector role, rendered once for the module."""

    base: Path
    conf: Path
    units: Path
    archive: Path
    nginx_conf: Path
    port: int
    secrets: dict[str, Any]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    base = tmp_path_factory.mktemp("bulletin-deploy")
    # nginx workers (started as root here) read the archive: let them traverse.
    for d in (base, base.parent, base.parent.parent):
        d.chmod(d.stat().st_mode | 0o011)
    ans = Ansible(base / "home")
    port = services.free_port()
    r = Rendered(base, base / "etc", base / "systemd", base / "archive", base / "nginx",
                 port, make_secrets())
    play = base / "bulletin.yml"
    play.write_text(yaml.safe_dump([{
        "name": "bulletin only", "hosts": COLLECTOR, "connection": "local",
        "gather_facts": False,
        "tasks": [{"name": "bulletin", "ansible.builtin.include_role": {
            "name": "netmon_collector", "tasks_from": "bulletin"}}]}]), encoding="utf-8")
    for d in (r.conf, r.units, r.nginx_conf):
        d.mkdir()
    ans.playbook(play, r.secrets | {
        "netmon_collector_manage_service": False,
        "netmon_collector_conf_dir": str(r.conf),
        "netmon_collector_systemd_dir": str(r.units),
        "netmon_collector_bulletin_archive_dir": str(r.archive),
        "netmon_collector_bulletin_nginx_conf_dir": str(r.nginx_conf),
        "netmon_collector_bulletin_nginx_listen": [f"127.0.0.1:{port}"],
        "netmon_collector_bulletin_mail_recipients": RECIPIENTS,
        "netmon_collector_bulletin_mail_username": "bantin",
        "netmon_collector_bulletin_mail_password": "mật khẩu SMTP thử nghiệm 2026",
    }, limit=COLLECTOR)
    return r


# --------------------------------------------------------------------------- systemd


def test_bulletin_units_verify(rendered: Rendered, tmp_path: Path) -> None:
    analyze = need("systemd-analyze")
    collector = tool("netmon-collector")
    assert collector
    service = (rendered.units / "netmon-bulletin@.service").read_text()
    # The venv does not exist here: point at the installed entry point.
    assert "/opt/netmon/venv/bin/netmon-collector bulletin " in service
    service = service.replace("/opt/netmon/venv/bin/netmon-collector", collector)
    (tmp_path / "netmon-bulletin@.service").write_text(service)
    (tmp_path / "netmon-bulletin@final.service").write_text(service)
    names = ["netmon-bulletin@final.service"]
    for ed in ("provisional", "final"):
        name = f"netmon-bulletin-{ed}.timer"
        shutil.copy(rendered.units / name, tmp_path / name)
        names.append(name)
    for name in names:
        proc = subprocess.run([analyze, "verify", "--man=no", str(tmp_path / name)],
                              capture_output=True, text=True, timeout=60, check=False,
                              cwd=tmp_path)
        problems = [line for line in (proc.stdout + proc.stderr).splitlines()
                    if "netmon-bulletin" in line or "Unknown" in line]
        assert proc.returncode == 0 and not problems, (name, proc.stdout, proc.stderr)


def _exec_start(rendered: Rendered) -> list[str]:
    text = (rendered.units / "netmon-bulletin@.service").read_text()
    m = re.search(r"^ExecStart=(.+)$", text, flags=re.M)
    assert m
    return m.group(1).split()


def test_service_publishes_the_previous_month_s_edition_named_by_the_instance(
        rendered: Rendered) -> None:
    argv = _exec_start(rendered)
    assert argv[1:2] == ["bulletin"]
    opts = dict(zip(argv[2::2], argv[3::2], strict=False))
    assert opts["--edition"] == "%i" and opts["--month"] == "previous"
    assert opts["--config"] == str(rendered.conf / "bulletin.toml")
    assert opts["--metrics-config"] == str(rendered.conf / "collector.toml")
    assert int(opts["--retries"]) >= 1 and float(opts["--retry-wait"]) >= 60
    for ed in ("provisional", "final"):
        timer = (rendered.units / f"netmon-bulletin-{ed}.timer").read_text()
        assert f"Unit=netmon-bulletin@{ed}.service" in timer
        assert "Persistent=true" in timer


def _elapses(spec: str, base: str, n: int) -> list[datetime]:
    proc = subprocess.run(["systemd-analyze", "calendar", f"--iterations={n}",
                           f"--base-time={base}", spec], capture_output=True, text=True,
                          timeout=60, check=True, env={**os.environ, "TZ": "UTC"})
    out = []
    for line in proc.stdout.splitlines():
        m = re.match(r"\s*(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+) UTC$", line)
        if m:
            out.append(datetime.fromisoformat(m.group(1)).replace(tzinfo=UTC))
    assert len(out) == n, proc.stdout
    return out


@pytest.mark.parametrize(("edition", "day"), [("provisional", 1), ("final", 5)])
def test_timers_fire_at_local_times(rendered: Rendered, edition: str, day: int) -> None:
    need("systemd-analyze")
    timer = (rendered.units / f"netmon-bulletin-{edition}.timer").read_text()
    m = re.search(r"^OnCalendar=(.+)$", timer, flags=re.M)
    assert m and m.group(1).endswith(" Asia/Ho_Chi_Minh")
    got = _elapses(m.group(1), "2026-10-15 12:00:00 UTC", 14)
    # 06:00 in Hà Tĩnh on the given day of each month: 23:00 UTC the evening before for
    # the 1st, a year round (no daylight saving), across the new year.
    want = []
    y, mo = 2026, 11
    for _ in range(14):
        want.append(datetime(y, mo, day, 6, 0, tzinfo=TZ).astimezone(UTC))
        y, mo = (y + 1, 1) if mo == 12 else (y, mo + 1)
    assert got == want
    if edition == "provisional":
        assert got[0] == datetime(2026, 10, 31, 23, 0, tzinfo=UTC)
    # At each firing, --month previous is the month that has just ended locally.
    assert [editions.previous_month("Asia/Ho_Chi_Minh", t) for t in got[:3]] == [
        "2026-10", "2026-11", "2026-12"]


# --------------------------------------------------------------------------- config


def test_bulletin_config_loads_with_the_read_only_account_and_private_secrets(
        rendered: Rendered) -> None:
    cfg = config_mod.load(rendered.conf / "bulletin.toml")
    assert cfg.influxdb.username == "netmon_grafana"  # the read-only account
    assert cfg.influxdb.password_file == rendered.conf / "bulletin-influxdb.password"
    assert cfg.influxdb.password_file.read_text().strip() == \
        rendered.secrets["vault_netmon_influxdb_grafana_password"]
    assert cfg.bulletin.archive_dir == rendered.archive
    assert cfg.bulletin.timezone == "Asia/Ho_Chi_Minh"
    mail = cfg.bulletin.mail
    assert mail.enabled and mail.recipients == RECIPIENTS and mail.tls == "starttls"
    assert mail.password_file is not None
    assert stat.S_IMODE(mail.password_file.stat().st_mode) == 0o600
    assert mail.password_file.read_text(encoding="utf-8").strip() == \
        "mật khẩu SMTP thử nghiệm 2026"
    assert "mật khẩu" not in (rendered.conf / "bulletin.toml").read_text(encoding="utf-8")
    assert stat.S_IMODE((rendered.conf / "bulletin.toml").stat().st_mode) == 0o640


# --------------------------------------------------------------------------- archive


@pytest.fixture(scope="module")
def archive(rendered: Rendered, influxd_module: services.Service,
            tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two months in the archive: September (final) and October (provisional, final)."""
    url = f"http://{influxd_module.host}:{influxd_module.port}"
    hb.publish(hb.october_data_set(), url, database="archive")
    tmp = tmp_path_factory.mktemp("archive-cfg")
    cfg = config_mod.load(hb.write_config(tmp / "c.toml", url, database="archive",
                                          min_tests=3, min_probe_days=3))
    for month, ed in (("2026-09", "final"), ("2026-10", "provisional"), ("2026-10", "final")):
        editions.publish(cfg, month, ed, rendered.archive)  # type: ignore[arg-type]
    return rendered.archive


@pytest.fixture(scope="module")
def web(rendered: Rendered, archive: Path, tmp_path_factory: pytest.TempPathFactory
        ) -> Any:
    """nginx with the rendered server block, included as the role installs it."""
    need("nginx")
    run = tmp_path_factory.mktemp("nginx")
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = (f"{user}worker_processes 1;\npid {run}/nginx.pid;\nerror_log {run}/error.log;\n"
            f"events {{ worker_connections 64; }}\n"
            f"http {{\n  access_log off;\n  client_body_temp_path {run}/tmp;\n"
            f"  include {rendered.nginx_conf}/netmon-bulletin.conf;\n}}\n")
    (run / "test.conf").write_text(conf)
    proc = subprocess.run(["nginx", "-t", "-c", str(run / "test.conf"), "-p", str(run)],
                          text=True, capture_output=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    svc = services.start_nginx(run, conf, rendered.port)
    yield f"http://127.0.0.1:{rendered.port}"
    svc.stop()


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, "", b""


def test_nginx_serves_every_linked_file_and_hides_editions_in_the_making(
        web: str, archive: Path) -> None:
    status, ctype, body = _get(f"{web}/")
    assert status == 200 and ctype.startswith("text/html")
    html = body.decode("utf-8")
    links = re.findall(r'href="(20[^"]+\.(?:html|pdf|csv))"', html)
    assert len(set(links)) == 9  # three editions x HTML, PDF, CSV
    links.append("index.en.html")
    for href in links:
        status, ctype, body = _get(f"{web}/{href}")
        want = {"html": "text/html", "pdf": "application/pdf", "csv": "text/csv"}[
            href.rsplit(".", 1)[1]]
        assert status == 200 and ctype.startswith(want) and body, href
    hidden = next(p for p in (archive / "2026-10").iterdir() if p.name.startswith("."))
    assert _get(f"{web}/2026-10/{hidden.name}/edition.json")[0] == 404


VIEWPORTS = {"desktop": (1280, 900, False, 1.0), "phone": (375, 740, True, 2.0)}


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", head[16:24])
    return w, h


def _province_median(csv_path: Path, access: str) -> str:
    with open(csv_path, encoding="utf-8-sig", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["section"] == "province"
                   and r["access"] == access and r["metric"] == "download_mbps")
    return f"{float(row['median']):.1f}".replace(".", ",")


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_archive_in_headless_chromium(web: str, archive: Path, tmp_path: Path,
                                      viewport: str) -> None:
    if chromium.binary() is None:
        pytest.skip("chromium not installed (scripts/setup installs it)")
    width, height, mobile, scale = VIEWPORTS[viewport]
    final_csv = archive / "2026-10" / "final" / "bulletin-2026-10-final.csv"
    pages = {
        "index-vi": (f"{web}/", ["Bản tin tốc độ băng rộng tỉnh Hà Tĩnh: lưu trữ", "10/2026",
                                 "09/2026", "Bản chính thức", "Bản tạm tính",
                                 f"trung vị {_province_median(final_csv, 'fixed')} Mb/s",
                                 f"trung vị {_province_median(final_csv, 'mobile')} Mb/s",
                                 "English"]),
        "index-en": (f"{web}/index.en.html", ["archive", "October 2026", "September 2026",
                                              "Final edition", "Tiếng Việt"]),
        "bulletin": (f"{web}/2026-10/final/bulletin-2026-10-final.html",
                     ["Bản tin tốc độ băng rộng tỉnh Hà Tĩnh, tháng 10/2026",
                      "Bản chính thức", "kết quả đến sau bản tạm tính"]),
    }
    artifacts = os.environ.get("NETMON_TEST_ARTIFACTS")
    with chromium.Browser(tmp_path / "chromium") as browser:
        for name, (url, texts) in pages.items():
            page = browser.open(url, width, height, mobile=mobile, scale=scale)
            facts = page.evaluate(
                "({text: document.body.innerText, lang: document.documentElement.lang,"
                " scroll: document.documentElement.scrollWidth, inner: window.innerWidth,"
                " images: [...document.images].map(i => ({src: i.src, ok: i.complete &&"
                " i.naturalWidth > 0, alt: i.alt}))})")
            for text in texts:
                assert text in facts["text"], (viewport, name, text)
            assert facts["lang"] == ("en" if name == "index-en" else "vi")
            assert facts["inner"] == width
            assert facts["scroll"] <= facts["inner"], (
                f"{name} scrolls sideways at {width}px: {facts['scroll']}px wide")
            assert facts["images"], name
            for img in facts["images"]:
                assert img["ok"], (name, img["src"])
                assert img["alt"], (name, img["src"], "image without alt text")
            shot = page.screenshot(tmp_path / f"{name}-{viewport}.png")
            w, h = _png_size(shot)
            assert w == int(width * scale) and h >= int(height * scale) // 2
            if artifacts:
                Path(artifacts).mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, Path(artifacts) / shot.name)
