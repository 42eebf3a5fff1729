"""The device's own ceiling on throughput results: read from a board-model file the test
writes (the form of /proc/device-tree/model) or configured, flagged when a shaped link
runs the probe at it, and absent when the model is unknown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.methods.common import device
from devstack import netns
from netmon.methods import HttpOptions
from tests.helpers.methods import Site, ctx_for, make_site, run

#: Model strings as the device tree of each board spells them (NUL-terminated).
PI3BPLUS = b"Raspberry Pi 3 Model B Plus Rev 1.3\0"
PI4 = b"Raspberry Pi 4 Model B Rev 1.4\0"


@pytest.fixture
def site(server_ns: netns.ServerNamespace, tmp_path: Path) -> Iterator[Site]:
    s = make_site(server_ns, tmp_path)
    yield s
    s.nginx.stop()


@pytest.mark.parametrize(("model", "ceiling"), [
    ("Raspberry Pi 3 Model B Plus Rev 1.3", 300.0),
    ("Raspberry Pi 3 Model B Rev 1.2", 94.0),
    ("Raspberry Pi 4 Model B Rev 1.4", 940.0),
    ("Raspberry Pi 400 Rev 1.0", 940.0),
    ("Raspberry Pi 5 Model B Rev 1.0", 940.0),
    ("Raspberry Pi Compute Module 4 Rev 1.0", 940.0),
    ("Raspberry Pi Zero 2 W Rev 1.0", None),
    ("QEMU Virtual Machine", None),
])
def test_board_table(model: str, ceiling: float | None) -> None:
    found = device.board_ceiling(model)
    assert (found[0] if found else None) == ceiling


def test_model_file_is_read_and_a_missing_one_gives_no_ceiling(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_bytes(PI4)
    assert device.read_model(str(model)) == "Raspberry Pi 4 Model B Rev 1.4"
    opts = HttpOptions(target="http://x", device_model_file=str(model))
    assert device.ceiling_for(opts) == device.Ceiling(940.0, 940.0,
                                                      "Raspberry Pi 4 Model B Rev 1.4")
    gone = HttpOptions(target="http://x", device_model_file=str(tmp_path / "absent"))
    assert device.ceiling_for(gone) is None
    # A configured ceiling wins over the table (a Cat 4 modem behind a Pi 4).
    modem = HttpOptions(target="http://x", device_model_file=str(model),
                        device_ceiling_mbps=150, device_ceiling_upload_mbps=50)
    assert device.ceiling_for(modem) == device.Ceiling(150.0, 50.0, "configured")


def test_a_result_at_the_ceiling_is_flagged_and_one_below_is_not(
        site: Site, server_ns: netns.ServerNamespace, tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_bytes(PI3BPLUS)
    fast, slow = server_ns.add_link(300), server_ns.add_link(150)
    for link, flagged in ((fast, True), (slow, False)):
        res = run("http", ctx_for(link), target=site.url(link), duration_s=3, warmup_s=1,
                  loaded_latency=False, device_model_file=str(model))
        assert res.ok, res.error
        m = res.metrics.values()
        assert m["device_ceiling_mbps"] == 300 and m["device_ceiling_upload_mbps"] == 300
        assert ("at_device_ceiling" in res.flags) is flagged, (link.rate_mbit, m)
        assert ("device_limited" in res.flags) is flagged, (link.rate_mbit, m)
    # Configured: a Cat 4 modem's 50 Mb/s upload is reached on a 71 Mbit/s link, its
    # 150 Mb/s download is not.
    link = server_ns.add_link(71)
    res = run("http", ctx_for(link), target=site.url(link), duration_s=3, warmup_s=1,
              loaded_latency=False, device_ceiling_mbps=150, device_ceiling_upload_mbps=50)
    assert res.ok, res.error
    assert res.metrics.values()["device_ceiling_mbps"] == 150
    assert "at_device_ceiling" in res.flags and "device_limited" in res.flags


def test_cpu_share_of_the_measuring_thread_and_the_cpu_bound_flag(
        site: Site, server_ns: netns.ServerNamespace) -> None:
    # The thread's CPU share is measured for real; whether a given machine saturates a
    # core is not (the machine is shared), so the threshold is moved around the figure.
    link = server_ns.add_link(150)
    res = run("http", ctx_for(link), target=site.url(link), duration_s=3, warmup_s=1,
              direction="download", loaded_latency=False, device_model="QEMU")
    assert res.ok, res.error
    pct = res.metrics.values()["cpu_pct"]
    assert 0 < pct <= 100
    assert "cpu_bound" not in res.flags or pct >= 90
    low = run("http", ctx_for(link), target=site.url(link), duration_s=3, warmup_s=1,
              direction="download", loaded_latency=False, device_model="QEMU",
              cpu_bound_pct=min(pct, 100) / 100)
    assert low.ok, low.error
    assert {"cpu_bound", "device_limited"} <= set(low.flags), low.metrics.values()
    high = run("http", ctx_for(link), target=site.url(link), duration_s=3, warmup_s=1,
               direction="download", loaded_latency=False, device_model="QEMU",
               cpu_bound_pct=100)
    assert high.ok, high.error
    assert ("device_limited" in high.flags) is (high.metrics.values()["cpu_pct"] >= 100)


def test_unknown_model_records_no_ceiling(site: Site, server_ns: netns.ServerNamespace,
                                          tmp_path: Path) -> None:
    link = server_ns.add_link(150)
    model = tmp_path / "model"
    model.write_bytes(b"Generic x86 board\0")
    for opts in ({"device_model_file": str(model)},
                 {"device_model_file": str(tmp_path / "no-such-file")}):
        res = run("http", ctx_for(link), target=site.url(link), duration_s=2, warmup_s=0.5,
                  direction="download", loaded_latency=False, **opts)
        assert res.ok, res.error
        assert "device_ceiling_mbps" not in res.metrics.values()
        assert "at_device_ceiling" not in res.flags


def test_negotiated_link_speed_lowers_the_ceiling(tmp_path: Path) -> None:
    # sysfs as the kernel lays it out: /sys/class/net/<if>/speed, "-1" when unknown
    for name, text in (("eth0", "100\n"), ("wlan0", "-1\n"), ("gige", "1000\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "speed").write_text(text)
    assert device.negotiated_mbps("eth0", tmp_path) == 100.0
    assert device.negotiated_mbps("wlan0", tmp_path) is None
    assert device.negotiated_mbps("absent", tmp_path) is None
    pi4 = device.Ceiling(940.0, 940.0, "Raspberry Pi 4 Model B Rev 1.4")
    # A Pi 4 on a 100 Mb/s port: the port's TCP goodput is the ceiling.
    slow = device.with_link_speed(pi4, device.negotiated_mbps("eth0", tmp_path))
    assert slow is not None and slow.download_mbps == pytest.approx(94.1, abs=0.1)
    # At gigabit the board's own figure stands; unknown speed changes nothing.
    assert device.with_link_speed(pi4, 1000.0) == pi4
    assert device.with_link_speed(pi4, None) == pi4
    # A configured ceiling (a modem) wins; an unknown board stays without one (a veth
    # reports 10000 Mb/s).
    modem = device.Ceiling(150.0, 50.0, "configured")
    assert device.with_link_speed(modem, 100.0) == modem
    assert device.with_link_speed(None, 1000.0) is None


def test_iperf3_result_above_a_configured_ceiling_is_device_limited(
        server_ns: netns.ServerNamespace, tmp_path: Path) -> None:
    # The reference method too: a Cat 4 modem's 50 Mb/s upload ceiling on a 71 Mbit/s link.
    from devstack import services

    link = server_ns.add_link(71)
    iperf = services.start_iperf3(tmp_path / "iperf3", host=link.server_ip,
                                  netns=server_ns.name)
    try:
        res = run("iperf3", ctx_for(link), target=link.server_ip, port=iperf.port,
                  duration_s=3, omit_s=1, loaded_latency=False, device_ceiling_mbps=150,
                  device_ceiling_upload_mbps=50)
    finally:
        iperf.stop()
    assert res.ok, res.error
    m = res.metrics.values()
    assert m["device_ceiling_mbps"] == 150 and m["device_ceiling_upload_mbps"] == 50
    assert 0 <= m["cpu_pct"] <= 100  # iperf3's own CPU report
    assert {"at_device_ceiling", "device_limited"} <= set(res.flags), m
