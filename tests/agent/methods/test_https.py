"""``http`` over TLS (``https://`` targets) against the measurement nginx inside a
namespace, on tbf-shaped links: goodput next to plain HTTP and iperf3 on the same path,
and certificates that must not be accepted becoming ``protocol`` error results."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.methods.common.tls import client_context
from devstack import netns, services
from netmon.contract import ResultMessage
from netmon.methods import LOCAL, option_roles
from netmon.plan import TestPlan
from tests.agent.methods.tlssite import HTTPS_PORT, TlsSite, start_tls_site
from tests.helpers.methods import IPERF_PORT, ctx_for, run, within

#: https goodput against plain HTTP and iperf3 (measured right before and after).
TOLERANCE = 0.03


@pytest.fixture
def links(server_ns: netns.ServerNamespace) -> dict[int, netns.ShapedLink]:
    return {rate: server_ns.add_link(rate) for rate in (71, 150, 1000)}


@pytest.fixture
def site(server_ns: netns.ServerNamespace, links: dict[int, netns.ShapedLink],
         tmp_path: Path) -> Iterator[TlsSite]:
    # The certificate names the 71 and 1000 links' addresses, not the 150 link's.
    s = start_tls_site(server_ns, tmp_path, [links[71].server_ip, links[1000].server_ip])
    iperf = server_ns.spawn(["iperf3", "-s", "-p", str(IPERF_PORT)])
    services.wait_for(lambda: services._listening(IPERF_PORT, server_ns.name), 10,
                      "iperf3 in the server namespace", iperf)  # type: ignore[arg-type]
    yield s
    s.nginx.stop()


def _http(url: str, link: netns.ShapedLink, **kw: object) -> ResultMessage:
    opts: dict[str, object] = {"duration_s": 3, "warmup_s": 1, "loaded_latency": False} | kw
    return run("http", ctx_for(link), target=url, **opts)


@pytest.mark.parametrize("rate", [71, 1000])
def test_https_goodput_matches_http_and_iperf3_on_the_same_shaped_link(
        site: TlsSite, links: dict[int, netns.ShapedLink], rate: int) -> None:
    link = links[rate]
    misses: list[tuple[str, float, list[float]]] = []
    # As in test_http: the references right before and right after; retries of the
    # whole set absorb a neighbour's burst on this shared machine (at 1 Gb/s TLS is
    # CPU-bound on 2 cores: one retry missed once in three full runs).
    for _attempt in range(3):
        before = run("iperf3", ctx_for(link), target=link.server_ip, duration_s=2, omit_s=1,
                     loaded_latency=False)
        plain = _http(site.http(link), link)
        tls = _http(site.https(link), link, ca_file=site.ca)
        after = run("iperf3", ctx_for(link), target=link.server_ip, duration_s=2, omit_s=1,
                    loaded_latency=False)
        for res in (before, plain, tls, after):
            assert res.ok, res.error
        misses = []
        for key in ("download_mbps", "upload_mbps"):
            got = tls.metrics.values()[key]
            refs = {"iperf3": [getattr(before.metrics, key), getattr(after.metrics, key)],
                    "http": [getattr(plain.metrics, key)]}
            misses += [(f"{key} vs {name}", got, ref) for name, ref in refs.items()
                       if not within(got, ref, TOLERANCE)]  # type: ignore[arg-type]
        if not misses:
            break
    assert not misses, misses
    m = tls.metrics.values()
    assert m["streams"] == 4 and m["streams_upload"] == 4
    assert m["cpu_s"] > 0 and m["cpu_upload_s"] > 0
    assert tls.target.startswith("https://")


def test_certificates_that_must_not_be_accepted_are_protocol_errors(
        site: TlsSite, links: dict[int, netns.ShapedLink]) -> None:
    ok = _http(site.https(links[71]), links[71], direction="download", duration_s=2,
               warmup_s=0.5, ca_file=site.ca)
    assert ok.ok, ok.error
    # Unknown CA: the system store does not know the test CA.
    res = _http(site.https(links[71]), links[71], direction="download", duration_s=2,
                warmup_s=0.5)
    assert res.error is not None and res.error.code == "protocol", res.error
    assert "TLS certificate of" in res.error.message
    assert "unable to get local issuer certificate" in res.error.message, res.error
    assert res.metrics.download_mbps is None
    # Right CA, wrong name: the certificate does not name the 150 link's address.
    res = _http(site.https(links[150]), links[150], direction="download", duration_s=2,
                warmup_s=0.5, ca_file=site.ca)
    assert res.error is not None and res.error.code == "protocol", res.error
    assert "mismatch" in res.error.message and links[150].server_ip in res.error.message
    # A port that speaks plain HTTP.
    res = _http(site.https(links[71]).replace(str(HTTPS_PORT), "8080"), links[71],
                direction="download", duration_s=2, warmup_s=0.5, ca_file=site.ca)
    assert res.error is not None and res.error.code == "protocol", res.error
    assert "TLS handshake" in res.error.message
    # A CA file that is not there names the file.
    res = _http(site.https(links[71]), links[71], direction="download", duration_s=2,
                warmup_s=0.5, ca_file=str(Path(site.ca).with_name("missing.pem")))
    assert res.error is not None and res.error.code == "protocol"
    assert "missing.pem" in res.error.message


def test_measurement_server_picks_chacha20_for_the_probes_tls(
        site: TlsSite, links: dict[int, netns.ShapedLink]) -> None:
    # The probe's client context offers AES-256-GCM first and Python cannot reorder TLS 1.3
    # suites; the server role's preference gives ChaCha20-Poly1305 (a Pi 4 has no AES
    # instructions), so every https measurement pays the cheaper cipher.
    link = links[71]
    with socket.create_connection((link.server_ip, HTTPS_PORT), timeout=10) as raw, \
            client_context(site.ca).wrap_socket(raw, server_hostname=link.server_ip) as tls:
        assert tls.version() == "TLSv1.3"
        cipher = tls.cipher()
    assert cipher is not None and cipher[0] == "TLS_CHACHA20_POLY1305_SHA256", cipher


def test_ca_file_is_local_and_refused_in_remote_plans() -> None:
    from netmon.methods import DECLARATIONS
    for method in ("http", "responsiveness"):
        roles = option_roles(DECLARATIONS[method].options)
        assert roles["ca_file"] is LOCAL and roles["device_model_file"] is LOCAL
    # The plan model itself accepts the key (local configs use it); the remote-config
    # allowlist refuses LOCAL options (tests/fleet/test_allowlist.py walks them all).
    plan = TestPlan.model_validate({"tests": {"t": {
        "method": "http", "target": "https://127.0.0.1", "ca_file": "/etc/ssl/x.pem",
        "every_s": 3600, "jitter_s": 0}}})
    assert plan.tests["t"].method == "http"
