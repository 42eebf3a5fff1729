"""The measurement server module: template rendering and the web root nginx serves."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import jinja2
import pytest

from devstack import measurement_server as ms
from devstack import services


@pytest.fixture
def server(tmp_path: Path) -> Iterator[services.Service]:
    try:
        services.require_binary("nginx")
    except services.ServiceError as exc:
        pytest.skip(str(exc))
    svc = ms.start(tmp_path / "srv", sparse=True, blob_bytes=8 << 20)
    yield svc
    svc.stop()


def test_render_uses_every_variable(tmp_path: Path) -> None:
    conf = ms.render_nginx_conf(["127.0.0.1:8080", "[::1]:8080"], tmp_path / "www",
                                tmp_path / "nginx.pid", tmp_path / "tmp", tmp_path / "e.log",
                                worker_processes=2, user="www-data")
    assert "listen 127.0.0.1:8080;" in conf and "listen [::1]:8080;" in conf
    assert f"root {tmp_path / 'www'};" in conf
    assert f"pid {tmp_path / 'nginx.pid'};" in conf
    assert f"client_body_temp_path {tmp_path / 'tmp'}/client_body;" in conf
    assert "worker_processes 2;" in conf and "user www-data;" in conf
    assert "{{" not in conf and "{%" not in conf


def test_template_renders_with_plain_jinja2_and_defaults(tmp_path: Path) -> None:
    # What Ansible's template module does, minus Ansible: only the documented variables.
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(ms.TEMPLATE.parent)),
                             undefined=jinja2.StrictUndefined, trim_blocks=True)
    conf = env.get_template(ms.TEMPLATE.name).render(
        listen=["0.0.0.0:80"], webroot="/srv/www", pid_file="/run/nginx.pid",
        temp_dir="/var/lib/nginx", error_log="/var/log/nginx/error.log", access_log="off")
    assert "worker_processes auto;" in conf and "\nuser " not in conf
    with pytest.raises(jinja2.UndefinedError, match="webroot"):
        env.get_template(ms.TEMPLATE.name).render(listen=[], pid_file="x", temp_dir="x",
                                                  error_log="x", access_log="off")


def test_webroot_layout_is_idempotent(tmp_path: Path) -> None:
    root = ms.prepare_webroot(tmp_path / "www", blob_bytes=1 << 20)
    assert (root / "download/blob.bin").stat().st_size == 1 << 20
    for size in ms.SPEEDTEST_SIZES:
        path = root / f"speedtest/random{size}x{size}.jpg"
        assert path.stat().st_size == ms.speedtest_image_bytes(size)
    assert (root / "speedtest/latency.txt").read_bytes() == b"test=test\n"
    before = (root / "download/blob.bin").read_bytes()
    ms.prepare_webroot(tmp_path / "www", blob_bytes=1 << 20)
    assert (root / "download/blob.bin").read_bytes() == before  # not rewritten
    assert len(set(before[:4096])) > 200  # random, not zeros


def test_server_serves_the_layout(server: services.Service) -> None:
    base = server.extra["base_url"]

    def get(path: str, data: bytes | None = None) -> tuple[int, bytes]:
        with urllib.request.urlopen(urllib.request.Request(f"{base}{path}", data=data),
                                    timeout=10) as resp:
            return resp.status, resp.read()

    assert get("/speedtest/latency.txt") == (200, b"test=test\n")
    status, body = get("/speedtest/random350x350.jpg")
    assert status == 200 and len(body) == ms.speedtest_image_bytes(350)
    assert get("/upload", b"x" * 300_000) == (200, b"ok\n")
    assert get("/speedtest/upload.php", b"content1=" + b"A" * 1_000_000) == (200, b"size=0\n")
    assert get("/")[0] == 200
    status, body = get("/speedtest-config.php")
    root = ET.fromstring(body)
    assert root.find("download").attrib["testlength"] == "10"  # type: ignore[union-attr]
    status, body = get("/download/blob.bin")
    assert len(body) == 8 << 20


def test_speedtest_upload_is_answered_only_after_the_whole_body(
        server: services.Service) -> None:
    import socket

    body = b"content1=" + b"A" * 3_000_000
    for _with_file in (True, False):  # the Ansible role may not create upload.php
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            sock.sendall(b"POST /speedtest/upload.php HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body[:1_000_000])
            sock.settimeout(0.5)
            with pytest.raises(TimeoutError):
                sock.recv(100)  # an early answer would make clients reset and lose data
            sock.settimeout(5)
            sock.sendall(body[1_000_000:])
            answer = sock.recv(1000)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"size=0\n")
        (Path(str(server.extra["webroot"])) / "speedtest" / "upload.php").unlink(missing_ok=True)


def test_cancelled_http_test_stops_its_engine_thread(server: services.Service) -> None:
    """The runtime may cancel a test (shutdown, its own timeout): the engine thread and its
    connections must not outlive it."""
    import asyncio
    import threading
    import time

    from agent.methods.registry import get
    from tests.helpers.methods import ctx_for

    cls = get("http")
    opts = cls.decl.options(target=server.extra["base_url"], duration_s=20, warmup_s=1,
                            direction="download", loaded_latency=False)

    async def main() -> None:
        task = asyncio.ensure_future(cls().run(ctx_for(), opts))
        await asyncio.sleep(1.0)
        assert any(t.name == "netmon-http-engine" for t in threading.enumerate())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    t0 = time.monotonic()
    asyncio.run(main())
    deadline = time.monotonic() + 2
    while any(t.name == "netmon-http-engine" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "engine thread still running after cancel"
        time.sleep(0.05)
    assert time.monotonic() - t0 < 5


def test_tls_serves_the_same_paths_with_a_generated_ca(tmp_path: Path) -> None:
    try:
        services.require_binary("nginx")
    except services.ServiceError as exc:
        pytest.skip(str(exc))
    pki = ms.make_pki(tmp_path / "pki", ["127.0.0.1", "localhost"])
    assert oct(pki.key.stat().st_mode & 0o777) == "0o600"
    svc = ms.start(tmp_path / "srv", sparse=True, blob_bytes=1 << 20, tls=pki)
    try:
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        base = svc.extra["tls_url"]
        assert base.startswith("https://127.0.0.1:")
        with urllib.request.urlopen(f"{base}/download/blob.bin", context=ctx,
                                    timeout=10) as resp:
            assert len(resp.read()) == 1 << 20
        req = urllib.request.Request(f"{base}/upload", data=b"x" * 100_000, method="POST")
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            assert resp.read() == b"ok\n"
        # Plain HTTP is still served beside it, from the same server block.
        with urllib.request.urlopen(f"{svc.extra['base_url']}/speedtest/latency.txt",
                                    timeout=10) as resp:
            assert resp.read() == ms.LATENCY_TEXT
        # Without the CA the certificate is refused.
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(f"{base}/speedtest/latency.txt",
                                   context=ssl.create_default_context(), timeout=10)
    finally:
        svc.stop()


def test_tls_listen_needs_certificate_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tls="):
        ms.render_nginx_conf(["127.0.0.1:80"], tmp_path, tmp_path / "p", tmp_path,
                             tmp_path / "e", tls_listen=["127.0.0.1:443"])
    conf = ms.render_nginx_conf(["127.0.0.1:80"], tmp_path, tmp_path / "p", tmp_path,
                                tmp_path / "e")
    assert " ssl;" not in conf and "ssl_certificate" not in conf
