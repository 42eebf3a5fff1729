"""Mail of the final edition, received by a real SMTP server (aiosmtpd) that the test
starts on loopback with STARTTLS and AUTH required; the stored message is parsed back."""

from __future__ import annotations

import email
import email.policy
import json
import re
import statistics
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from devstack import services
from devstack.measurement_server import make_pki
from tests.helpers import REPO
from tests.helpers import bulletin as hb

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")
aiosmtpd_smtp = pytest.importorskip("aiosmtpd.smtp")

USER, PASSWORD = "bantin", "mật-khẩu-thử-0123456789"
RECIPIENTS = ["chu-tich@hatinh.gov.vn", "so-tttt@hatinh.gov.vn"]
THROUGHPUT = {"iperf3", "speedtest", "http"}


class _Store:
    """aiosmtpd handler: keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes, bool]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content,
                              session.ssl is not None))
        return "250 OK stored"


def _auth(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
    ok = (auth_data.login.decode() == USER and auth_data.password.decode() == PASSWORD)
    # handled=False: aiosmtpd then answers 535 itself (its default, True, answers nothing).
    return aiosmtpd_smtp.AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp(tmp_path: Path) -> Any:
    import ssl

    pki = make_pki(tmp_path / "smtp-pki", ["127.0.0.1"])
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.cert, pki.key)
    store = _Store()
    port = services.free_port()
    ctl = aiosmtpd_controller.Controller(
        store, hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True,
        auth_required=True, auth_require_tls=True, authenticator=_auth, ready_timeout=60)
    ctl.start()
    try:
        yield store, port, pki.ca
    finally:
        ctl.stop()


def _config(tmp: Path, url: str, port: int, ca: Path, secret_mode: int = 0o600) -> Path:
    path = hb.write_config(tmp / "bulletin.toml", url, database="mail")
    secret = tmp / "smtp.password"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    secret.chmod(secret_mode)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f'public_url = "https://bantin.hatinh.example"\n\n'
                 f'[bulletin.mail]\nenabled = true\nhost = "127.0.0.1"\nport = {port}\n'
                 f'tls = "starttls"\nca_file = "{ca}"\nusername = "{USER}"\n'
                 f'password_file = "{secret.name}"\nsender = "bantin@hatinh.example"\n'
                 f"recipients = {json.dumps(RECIPIENTS)}\n")
    return path


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector.cli", "bulletin", *map(str, args)],
                          capture_output=True, text=True, timeout=600, cwd=REPO, check=False)


def _vi(value: float) -> str:
    return f"{value:.1f}".replace(".", ",")


@pytest.fixture(scope="module")
def data_url(influxd_module: services.Service) -> tuple[str, hb.DataSet]:
    url = f"http://{influxd_module.host}:{influxd_module.port}"
    ds = hb.october_data_set()
    hb.publish(ds, url, database="mail")
    return url, ds


def test_final_edition_is_mailed_with_its_pdf_and_figures(
        data_url: tuple[str, hb.DataSet], smtp: Any, tmp_path: Path) -> None:
    url, ds = data_url
    store, port, ca = smtp
    cfg = _config(tmp_path, url, port, ca)
    root = tmp_path / "archive"
    # The provisional edition is never mailed.
    proc = _cli("--config", cfg, "--edition", "provisional", "--month", "2026-10",
                "--archive", root)
    assert proc.returncode == 0, proc.stderr
    assert store.messages == []
    proc = _cli("--config", cfg, "--edition", "final", "--month", "2026-10",
                "--archive", root, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["mail"] == "sent"
    assert len(store.messages) == 1
    mail_from, rcpt, raw, over_tls = store.messages[0]
    assert over_tls, "the message must travel after STARTTLS"
    assert mail_from == "bantin@hatinh.example" and sorted(rcpt) == sorted(RECIPIENTS)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    assert "tháng 10/2026" in str(msg["Subject"]) and "bản chính thức" in str(msg["Subject"])
    # The attachment is the final edition's PDF, byte for byte.
    pdfs = [p for p in msg.iter_attachments() if p.get_content_type() == "application/pdf"]
    assert len(pdfs) == 1
    assert pdfs[0].get_filename() == "bulletin-2026-10-final.pdf"
    on_disk = root / "2026-10" / "final" / "bulletin-2026-10-final.pdf"
    assert pdfs[0].get_content() == on_disk.read_bytes()
    # The body states the province medians, recomputed here from the raw messages.
    body_part = msg.get_body(preferencelist=("plain",))
    assert body_part is not None
    body = body_part.get_content()
    for access, label, target in (("fixed", "Băng rộng cố định", "150"),
                                  ("mobile", "Băng rộng di động", "71")):
        values = [m.metrics.download_mbps for m in ds.messages
                  if m.method in THROUGHPUT and m.access == access and m.ok
                  and "cross_traffic" not in m.flags
                  and (m.started_at + hb.TZ_OFFSET).strftime("%Y-%m") == "2026-10"]
        median = statistics.median(v for v in values if v is not None)
        assert re.search(rf"{label}: {re.escape(_vi(median))} Mb/s \(mục tiêu {target} Mb/s\)",
                         body), body
    assert "0 kết quả đến sau bản tạm tính" in body
    assert "https://bantin.hatinh.example/" in body
    assert PASSWORD not in proc.stdout + proc.stderr


def test_password_file_readable_by_others_is_refused(
        data_url: tuple[str, hb.DataSet], smtp: Any, tmp_path: Path) -> None:
    url, _ = data_url
    store, port, ca = smtp
    cfg = _config(tmp_path, url, port, ca, secret_mode=0o644)
    proc = _cli("--config", cfg, "--edition", "final", "--month", "2026-10",
                "--archive", tmp_path / "archive")
    assert proc.returncode == 2
    assert "password_file" in proc.stderr and "0644" in proc.stderr and "0600" in proc.stderr
    assert PASSWORD not in proc.stderr
    assert store.messages == []
    # Refused before any work: no edition was made with a mail that could not go.
    assert not (tmp_path / "archive" / "2026-10").exists()


def test_wrong_password_is_a_runtime_failure(
        data_url: tuple[str, hb.DataSet], smtp: Any, tmp_path: Path) -> None:
    url, _ = data_url
    store, port, ca = smtp
    cfg = _config(tmp_path, url, port, ca)
    (tmp_path / "smtp.password").write_text("not-the-password\n", encoding="utf-8")
    proc = _cli("--config", cfg, "--edition", "final", "--month", "2026-10",
                "--archive", tmp_path / "archive")
    assert proc.returncode == 1
    assert "refused the login" in proc.stderr and store.messages == []
    # The edition itself is published: only the mail failed.
    assert (tmp_path / "archive" / "2026-10" / "final" / "edition.json").is_file()
