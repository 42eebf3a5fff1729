"""``http`` throughput engine against the measurement nginx inside a namespace, compared
with iperf3 on the same shaped path in the same test; loaded latency, cross-traffic and
link binding."""

from __future__ import annotations

import socketserver
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import ValidationError

from agent.methods.registry import get
from devstack import netns
from netmon.contract import ResultMessage
from tests.helpers.methods import IPERF_PORT, Site, ctx_for, make_site, run, within

Shaped = Callable[[float], tuple[netns.ShapedLink, netns.ServerNamespace]]
TOLERANCE = 0.03


@pytest.fixture
def site(server_ns: netns.ServerNamespace, tmp_path: Path) -> Iterator[Site]:
    s = make_site(server_ns, tmp_path)
    yield s
    s.nginx.stop()


def iperf_ref(link: netns.ShapedLink) -> ResultMessage:
    res = run("iperf3", ctx_for(link), target=link.server_ip, duration_s=2, omit_s=1,
              loaded_latency=False)
    assert res.ok, res.error
    return res


def http(site: Site, link: netns.ShapedLink, **kw: object) -> ResultMessage:
    opts: dict[str, object] = {"duration_s": 3, "warmup_s": 1, "loaded_latency": False} | kw
    return run("http", ctx_for(link), target=site.url(link), **opts)


def test_registered_as_throughput() -> None:
    assert get("http").decl.kind == "throughput"


def test_bad_options_name_the_key() -> None:
    with pytest.raises(ValidationError, match="warmup_s"):
        get("http").decl.options(target="http://x", duration_s=2, warmup_s=2)
    with pytest.raises(ValidationError, match="http:// or https://"):
        get("http").decl.options(target="ftp://x")
    with pytest.raises(ValidationError, match="timeout_s"):
        get("http").decl.options(target="http://x", duration_s=60, timeout_s=90)
    with pytest.raises(ValidationError, match="stream"):
        get("http").decl.options(target="http://x", stream=3)


@pytest.mark.parametrize("rate", [71, 150, 1000])
def test_goodput_within_3pct_of_iperf3(site: Site, server_ns: netns.ServerNamespace,
                                       rate: float) -> None:
    link = server_ns.add_link(rate)
    misses = []
    # The reference is measured right before and right after; on a machine shared with
    # other tests a retry of the whole triple absorbs a neighbour's burst. Three tries, as
    # test_iperf3 has: at 1 Gb/s the client is CPU-bound on 2 cores (upload 881 of 930 Mb/s
    # once, twice in a row in a full run); a wrong shaper, parser or stream count misses all.
    for _attempt in range(3):
        before = iperf_ref(link).metrics
        res = http(site, link)
        after = iperf_ref(link).metrics
        assert res.ok, res.error
        misses = [
            (key, res.metrics.values()[key], ref)
            for key in ("download_mbps", "upload_mbps")
            if not within(res.metrics.values()[key], ref := [getattr(before, key),
                                                             getattr(after, key)], TOLERANCE)]
        if not misses:
            break
    assert not misses, misses
    m = res.metrics.values()
    assert m["bytes"] > 2 * 2.5 * rate * 0.95 * 1e6 / 8
    assert m["streams"] == 4
    assert "cross_traffic" not in res.flags, m


def test_loaded_latency_far_above_idle_on_a_deep_tbf_queue(site: Site,
                                                           server_ns: netns.ServerNamespace
                                                           ) -> None:
    link = server_ns.add_link(71, latency="100ms")
    for method, opts in (("http", {"target": site.url(link), "duration_s": 3, "warmup_s": 1,
                                   "direction": "download"}),
                         ("iperf3", {"target": link.server_ip, "duration_s": 2, "omit_s": 1,
                                     "direction": "download"})):
        res = run(method, ctx_for(link), loaded_latency=True, latency_interval_s=0.05, **opts)
        assert res.ok, res.error
        m = res.metrics
        assert m.idle_rtt_ms is not None and m.loaded_rtt_ms is not None, (method, m)
        # Idle is well under a millisecond on a veth; a queue of ~70 ms of data builds up.
        assert m.loaded_rtt_ms > 5 * max(m.idle_rtt_ms, 1.0), (method, m)
        assert m.loaded_rtt_ms > 5, (method, m)


def test_cross_traffic_is_detected_and_flagged(site: Site, server_ns: netns.ServerNamespace
                                               ) -> None:
    link = server_ns.add_link(150)
    site.start_iperf3(IPERF_PORT + 1)
    clean = http(site, link, direction="download")
    assert clean.ok and "cross_traffic" not in clean.flags, clean.metrics
    other = subprocess.Popen(
        ["iperf3", "-c", link.server_ip, "-p", str(IPERF_PORT + 1), "-R", "-t", "6", "-P", "4",
         "--bind-dev", link.host_if], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.7)
        busy = http(site, link, direction="download")
    finally:
        other.kill()
        other.wait()
    assert busy.ok, busy.error
    assert "cross_traffic" in busy.flags, busy.metrics
    m = busy.metrics
    assert m.cross_traffic_mbps is not None and m.download_mbps is not None
    # 4 + 4 flows share the link: together they fill it, the other side gets about half.
    assert m.cross_traffic_mbps > 35
    total = m.cross_traffic_mbps + m.download_mbps
    assert 0.85 * 150 * 0.956 < total < 1.1 * 150, m
    # iperf3 sees the same extra flow.
    site.start_iperf3(IPERF_PORT + 2)
    other = subprocess.Popen(
        ["iperf3", "-c", link.server_ip, "-p", str(IPERF_PORT + 2), "-t", "6", "-P", "4",
         "--bind-dev", link.host_if], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.7)
        res = run("iperf3", ctx_for(link), target=link.server_ip, duration_s=2, omit_s=1,
                  direction="upload", loaded_latency=False)
    finally:
        other.kill()
        other.wait()
    assert res.ok, res.error
    assert "cross_traffic" in res.flags, res.metrics


def test_binding_each_link_shows_its_own_rate(site: Site, server_ns: netns.ServerNamespace
                                              ) -> None:
    slow, fast = server_ns.add_link(71), server_ns.add_link(150)
    # Same server address for both: only the interface binding decides the path.
    url = site.url(fast)
    for link, rate in ((slow, 71), (fast, 150)):
        res = run("http", ctx_for(link, name=f"l{rate}"), target=url, duration_s=3, warmup_s=1,
                  direction="download", loaded_latency=False)
        assert res.ok, res.error
        assert res.link == f"l{rate}"
        assert abs(res.metrics.download_mbps - rate * 0.956) < rate * 0.05, (rate, res.metrics)
    # Binding by source address follows the routes of each address.
    for link, rate in ((slow, 71), (fast, 150)):
        res = run("http", ctx_for(link, by="source"), target=site.url(link), duration_s=2,
                  warmup_s=0.5, direction="upload", loaded_latency=False)
        assert res.ok, res.error
        assert abs(res.metrics.upload_mbps - rate * 0.956) < rate * 0.05, (rate, res.metrics)


def test_http_errors_are_error_results(site: Site, server_ns: netns.ServerNamespace) -> None:
    link = server_ns.add_link(150)
    res = run("http", ctx_for(link), target=site.url(link), download_path="/missing",
              duration_s=2, warmup_s=0.5, direction="download", loaded_latency=False)
    assert res.error is not None and res.error.code == "protocol"
    assert "404" in res.error.message
    res = run("http", ctx_for(link), target=f"http://{link.server_ip}:9", duration_s=2,
              warmup_s=0.5, loaded_latency=False)
    assert res.error is not None and res.error.code == "refused", res.error


class _ChunkedHandler(socketserver.BaseRequestHandler):
    """Answers every GET with a chunked body of 16 x 64 KiB (a LibreSpeed garbage.php)."""

    served: ClassVar[list[int]] = []
    chunk: ClassVar[bytes] = bytes(range(256)) * 256

    def handle(self) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = self.request.recv(4096)
                    if not data:
                        return
                    buf += data
                _, _, buf = buf.partition(b"\r\n\r\n")
                self.request.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                                     b"Content-Type: application/octet-stream\r\n\r\n")
                for _ in range(16):
                    self.request.sendall(b"%x;ext=1\r\n" % len(self.chunk) + self.chunk + b"\r\n")
                self.request.sendall(b"0\r\nX-Trailer: yes\r\n\r\n")
                self.served.append(16 * len(self.chunk))
        except OSError:
            return


def test_chunked_responses_are_counted_without_framing_and_never_stall() -> None:
    _ChunkedHandler.served = []
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _ChunkedHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        res = run("http", ctx_for(), target=f"http://127.0.0.1:{port}", direction="download",
                  download_path="/garbage.php?ckSize=1", streams=2, duration_s=1.5,
                  warmup_s=0.5, loaded_latency=False)
    finally:
        server.shutdown()
        server.server_close()
    assert res.ok, res.error
    sent = sum(_ChunkedHandler.served)
    # Many responses per connection: the parser found every end and asked for more.
    assert len(_ChunkedHandler.served) > 2 * 2 * 2
    moved = res.metrics.bytes
    assert moved is not None and moved <= sent + 2 * 2 * 16 * 65536  # no framing counted
    assert moved >= sent - (32 << 20)  # at most a few MB still in flight


def test_server_ignoring_icmp_still_measures_throughput(site: Site,
                                                        server_ns: netns.ServerNamespace
                                                        ) -> None:
    link = server_ns.add_link(150)
    server_ns.exec(["iptables", "-A", "INPUT", "-p", "icmp", "-j", "DROP"])
    t0 = time.monotonic()
    res = http(site, link, direction="download", duration_s=2, warmup_s=0.5,
               loaded_latency=True)
    assert res.ok, res.error
    assert res.metrics.download_mbps and res.metrics.download_mbps > 100
    assert res.metrics.idle_rtt_ms is None and res.metrics.loaded_rtt_ms is None
    assert time.monotonic() - t0 < 6  # the unanswered echoes cost about a second


def test_ipv6_path_for_http_and_iperf3(site: Site, server_ns: netns.ServerNamespace) -> None:
    link = server_ns.add_link(150)
    res = run("http", ctx_for(link), target=f"http://[{link.server_ip6}]:8080",
              direction="download", duration_s=2, warmup_s=0.5, loaded_latency=True)
    assert res.ok, res.error
    assert abs(res.metrics.download_mbps - 150 * 0.95) < 150 * 0.06, res.metrics
    assert res.metrics.idle_rtt_ms is not None  # ICMPv6 to the same server
    ref = run("iperf3", ctx_for(link), target=link.server_ip6, direction="download",
              duration_s=1, omit_s=1, loaded_latency=False)
    assert ref.ok, ref.error
    assert abs(ref.metrics.download_mbps - 150 * 0.95) < 150 * 0.06, ref.metrics
