"""Radio context from ModemManager: the parser on recorded ``mmcli -J`` outputs
(tests/agent/methods/mmcli/README.md says where each comes from), and the agent with a
STAND-IN ``mmcli`` executable (no modem and no ModemManager daemon can run here): radio
metrics on results, and the modem's reported maximum as the ceiling of a mobile link
shaped with tc in a network namespace."""

from __future__ import annotations

import asyncio
import json
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent import config
from agent.methods.base import LinkBinding, Method, MethodContext
from agent.methods.common import device, radio
from agent.runtime import Runtime
from devstack import netns
from netmon.contract import Metrics
from tests.helpers.agent import TestOnlyLatencyMethod, TestOnlyThroughputMethod, agent_config
from tests.helpers.methods import make_site, run

RECORDED = Path(__file__).parent / "mmcli"


def recorded(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((RECORDED / name).read_text(encoding="utf-8"))
    return doc


def test_recorded_lte_modem() -> None:
    got = radio.parse_modem(recorded("modem-quectel-eg25-lte.json"))
    # no band: the modem lists no current band (a list of several would say nothing either)
    assert got == {"radio_generation": 4.0, "radio_signal_pct": 60.0,
                   "radio_operator": 23002.0}


def test_recorded_fallback_to_edge() -> None:
    got = radio.parse_modem(recorded("modem-huawei-e3131-edge.json"))
    # operator-code "--": unknown, left out rather than guessed
    assert got == {"radio_generation": 2.0, "radio_signal_pct": 74.0}


def test_recorded_lte_signal_reads_the_lte_section_only() -> None:
    doc = recorded("signal-lte-polling.json")
    assert radio.signal_polling(doc)
    # The 5g section's RSRQ (-14) and the GSM RSSI are not the LTE carrier's.
    assert radio.parse_signal(doc, 4.0) == {"radio_rsrp_dbm": -104.0, "radio_sinr_db": 2.0}
    assert radio.parse_signal(doc, 2.0) == {"radio_rssi_dbm": -69.0}


def test_recorded_signal_before_polling_is_empty() -> None:
    doc = recorded("signal-polling-off.json")
    assert not radio.signal_polling(doc)
    assert radio.parse_signal(doc, 4.0) == {}


def test_serving_cell_and_band_from_cell_info() -> None:
    got = radio.parse_cells(recorded("cell-info-lte.json"))
    assert got == {"radio_cell_id": float(0x1A2B3C4), "radio_band": 3.0}
    assert radio.earfcn_band(1650) == 3 and radio.earfcn_band(3050) == 7
    assert radio.earfcn_band(9500) == 28 and radio.earfcn_band(5000) is None


def test_single_configured_band_is_the_band() -> None:
    doc = recorded("modem-quectel-eg25-lte.json")
    doc["modem"]["generic"]["current-bands"] = ["eutran-3"]
    assert radio.parse_modem(doc)["radio_band"] == 3.0


BEARER = "bearer-sierra-em7565-mbim.json"
BEARER_PATH = "/org/freedesktop/ModemManager1/Bearer/3"


def test_recorded_bearer_gives_the_modems_reported_maximum() -> None:
    doc = recorded(BEARER)
    # 600000000 bit/s each way: a Cat 12 modem's 600 Mb/s, in Mb/s
    assert radio.parse_bearer(doc) == {"modem_max_down_mbps": 600.0,
                                       "modem_max_up_mbps": 600.0}
    assert radio.bearer_interface(doc) == "wwan0"


@pytest.mark.parametrize("change", ["unknown", "zero", "disconnected", "absurd", "tiny"])
def test_bearer_without_a_usable_speed_gives_nothing(change: str) -> None:
    doc = recorded(BEARER)
    stats, status = doc["bearer"]["stats"], doc["bearer"]["status"]
    if change == "unknown":  # a QMI or AT modem: ModemManager has no speeds
        stats["downlink-speed"] = stats["uplink-speed"] = "--"
    elif change == "zero":
        stats["downlink-speed"] = stats["uplink-speed"] = "0"
    elif change == "disconnected":  # the speeds of a past connection bound nothing now
        status["connected"] = "no"
    elif change == "absurd":  # 200 Gb/s: above the contract's 100,000 Mb/s
        stats["downlink-speed"] = "200000000000"
        stats["uplink-speed"] = "nan"
    else:  # 400 bit/s is 0.000 Mb/s: no ceiling, and no 0 the contract would refuse
        stats["downlink-speed"] = stats["uplink-speed"] = "400"
    assert radio.parse_bearer(doc) == {}


def test_bearer_paths_listed_by_the_modem() -> None:
    doc = recorded("modem-quectel-eg25-lte.json")
    assert radio.bearer_paths(doc) == ["/org/freedesktop/ModemManager1/Bearer/0"]
    doc["modem"]["generic"]["bearers"] = ["--help", BEARER_PATH]
    assert radio.bearer_paths(doc) == [BEARER_PATH]  # nothing mmcli would take as an option


def test_modem_maximum_lowers_the_ceiling_per_direction() -> None:
    pi4 = device.Ceiling(940.0, 940.0, "Raspberry Pi 4 Model B Rev 1.4")
    cat4 = {"modem_max_down_mbps": 150.0, "modem_max_up_mbps": 50.0}
    assert device.with_modem_max(pi4, cat4) == device.Ceiling(
        150.0, 50.0, "Raspberry Pi 4 Model B Rev 1.4, modem")
    # The board is the lower one both ways: it stays.
    pi3 = device.Ceiling(94.0, 94.0, "Raspberry Pi 3 Model B Rev 1.2")
    assert device.with_modem_max(pi3, {"modem_max_down_mbps": 150.0,
                                       "modem_max_up_mbps": 100.0}) == pi3
    assert device.with_modem_max(pi3, cat4) == device.Ceiling(
        94.0, 50.0, "Raspberry Pi 3 Model B Rev 1.2, modem")
    # Unknown board: the modem's figures alone; a direction it does not report has none.
    assert device.with_modem_max(None, cat4) == device.Ceiling(150.0, 50.0, "modem")
    only_down = {"modem_max_down_mbps": 150.0}
    assert device.with_modem_max(None, only_down) == device.Ceiling(150.0, None, "modem")
    assert device.with_modem_max(pi4, only_down) == device.Ceiling(
        150.0, 940.0, "Raspberry Pi 4 Model B Rev 1.4, modem")
    # Nothing reported: nothing changes, never a guess. Configured: it wins.
    assert device.with_modem_max(None, {}) is None
    assert device.with_modem_max(pi4, {}) == pi4
    configured = device.Ceiling(300.0, 100.0, "configured")
    assert device.with_modem_max(configured, cat4) == configured
    # A ceiling without an upload figure flags on download only.
    metrics = {"download_mbps": 60.0, "upload_mbps": 60.0}
    assert device.add_ceiling(metrics, device.Ceiling(None, 50.0, "modem"), 0.9) \
        == ("at_device_ceiling",)
    assert "device_ceiling_mbps" not in metrics and metrics["device_ceiling_upload_mbps"] == 50
    assert device.add_ceiling({"download_mbps": 60.0}, device.Ceiling(150.0, None, "modem"),
                              0.9) == ()


def test_contract_bounds_the_modem_maximum() -> None:
    assert Metrics(modem_max_down_mbps=600.0, modem_max_up_mbps=50.0).values() == {
        "modem_max_down_mbps": 600.0, "modem_max_up_mbps": 50.0}
    with pytest.raises(ValidationError, match="modem_max_down_mbps"):
        Metrics(modem_max_down_mbps=0.0)  # unknown is absent, not 0
    with pytest.raises(ValidationError, match="modem_max_up_mbps"):
        Metrics(modem_max_up_mbps=200_000.0)


def test_contract_takes_signed_radio_levels_only() -> None:
    Metrics(radio_rsrp_dbm=-104.0, radio_sinr_db=-2.5, radio_rsrq_db=-11.0,
            radio_rssi_dbm=-69.0)
    with pytest.raises(ValidationError, match="radio_rsrp_dbm"):
        Metrics(radio_rsrp_dbm=-200.0)
    with pytest.raises(ValidationError, match="negative"):
        Metrics(**{"download_rsrp_dbm": -5.0})  # only the declared radio levels are signed


# --------------------------------------------------------------------------- stand-in mmcli

STAND_IN = '''#!{python}
"""STAND-IN for mmcli (no modem here): answers from recorded outputs, logs its calls."""
import json
import sys
from pathlib import Path
data, state = Path({data!r}), Path({state!r})
args = sys.argv[1:]
with open(state / "calls.log", "a") as log:
    log.write(" ".join(args) + "\\n")
if (state / "fail").exists():
    sys.stderr.write("error: couldn't find modem\\n")
    sys.exit(1)
if "-b" in args:
    path = args[args.index("-b") + 1]
    for f in (state / "bearer.json", data / "bearer-sierra-em7565-mbim.json"):
        if f.exists() and json.loads(f.read_text())["bearer"]["dbus-path"] == path:
            sys.stdout.write(f.read_text())
            sys.exit(0)
    sys.stderr.write("error: couldn't find bearer at '%s'\\n" % path)
    sys.exit(1)
if any(a.startswith("--signal-setup=") for a in args):
    (state / "polling").touch()
    print("successfully setup signal quality information polling")
elif "--signal-get" in args:
    name = "signal-lte-polling.json" if (state / "polling").exists() else "signal-polling-off.json"
    sys.stdout.write((data / name).read_text())
elif "--get-cell-info" in args:
    sys.stdout.write((data / "cell-info-lte.json").read_text())
elif (state / "modem.json").exists():
    sys.stdout.write((state / "modem.json").read_text())
else:
    sys.stdout.write((data / "modem-quectel-eg25-lte.json").read_text())
'''


@pytest.fixture
def stand_in_mmcli(tmp_path: Path) -> tuple[Path, Path]:
    state = tmp_path / "mmcli-state"
    state.mkdir()
    exe = tmp_path / "mmcli-stand-in"
    exe.write_text(STAND_IN.format(python=sys.executable, data=str(RECORDED),
                                   state=str(state)), encoding="utf-8")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe, state


@pytest.fixture
def test_only_methods(register_method: Callable[[type[Method[Any]]], None]) -> None:
    register_method(TestOnlyThroughputMethod)
    register_method(TestOnlyLatencyMethod)


def mobile_runtime(tmp_path: Path, exe: Path) -> Runtime:
    data = agent_config(tmp_path, None, tests={
        "speed": {"method": "test_only_throughput", "every_s": 3600, "target": "speed"},
        "ping": {"method": "test_only_latency", "every_s": 60, "target": "ping"}})
    data["links"] = {"lte": {"access": "mobile", "isp": "Viettel",
                             "modem": {"modem": "0", "mmcli": str(exe)}}}
    return Runtime(config.load(None, data=data), publish=False)


@pytest.mark.usefixtures("test_only_methods")
def test_throughput_results_carry_radio_context_from_stand_in_mmcli(
        tmp_path: Path, stand_in_mmcli: tuple[Path, Path]) -> None:
    exe, state = stand_in_mmcli
    runtime = mobile_runtime(tmp_path, exe)
    plan = runtime.plan.tests
    [result] = asyncio.run(runtime.measure("speed", plan["speed"], "lte"))
    assert result.ok
    assert result.metrics.values() == {
        "download_mbps": 50.0, "radio_generation": 4.0, "radio_signal_pct": 60.0,
        "radio_operator": 23002.0, "radio_rsrp_dbm": -104.0, "radio_sinr_db": 2.0,
        "radio_cell_id": float(0x1A2B3C4), "radio_band": 3.0}
    calls = (state / "calls.log").read_text().splitlines()
    # polling was off: switched on once, then read again
    assert calls == ["-J -m 0", "-J -m 0 --signal-get", "-J -m 0 --signal-setup=10",
                     "-J -m 0 --signal-get", "-J -m 0 --get-cell-info"]
    # latency tests do not pay for three mmcli calls each
    [ping] = asyncio.run(runtime.measure("ping", plan["ping"], "lte"))
    assert not any(k.startswith("radio_") for k in ping.metrics.values())


@pytest.mark.usefixtures("test_only_methods")
def test_failing_mmcli_leaves_the_result_without_radio_context(
        tmp_path: Path, stand_in_mmcli: tuple[Path, Path],
        caplog: pytest.LogCaptureFixture) -> None:
    exe, state = stand_in_mmcli
    (state / "fail").touch()
    runtime = mobile_runtime(tmp_path, exe)
    [result] = asyncio.run(runtime.measure("speed", runtime.plan.tests["speed"], "lte"))
    assert result.ok and result.metrics.values() == {"download_mbps": 50.0}
    assert "couldn't find modem" in caplog.text


def test_modem_table_checked_by_the_config() -> None:
    with pytest.raises(Exception, match=r"links\.lte\.modem\.signal_rate_s"):
        config.load(None, data={"probe_id": "p-01", "links": {"lte": {
            "access": "mobile", "isp": "Viettel", "modem": {"signal_rate_s": 0}}}},
            check_files=False)


# ----------------------------------------------- the modem's maximum as a mobile link's ceiling


def serve_bearer(state: Path, down_bps: str, up_bps: str, interface: str) -> None:
    """The stand-in's modem lists the recorded bearer, reporting these speeds on that
    interface (the recording with its speeds and interface replaced)."""
    modem = recorded("modem-quectel-eg25-lte.json")
    modem["modem"]["generic"]["bearers"] = [BEARER_PATH]
    (state / "modem.json").write_text(json.dumps(modem))
    bearer = recorded(BEARER)
    bearer["bearer"]["stats"].update({"downlink-speed": down_bps, "uplink-speed": up_bps})
    bearer["bearer"]["status"]["interface"] = interface
    (state / "bearer.json").write_text(json.dumps(bearer))


def test_modem_maximum_read_through_stand_in_mmcli(
        stand_in_mmcli: tuple[Path, Path]) -> None:
    exe, state = stand_in_mmcli
    cfg = radio.ModemConfig(modem="0", mmcli=str(exe))
    # The recorded modem lists Bearer/0, which the stand-in does not have: no maximum.
    assert asyncio.run(radio.read_max(cfg)) == {}
    serve_bearer(state, "50000000", "--", "wwan0")
    assert asyncio.run(radio.read_max(cfg, "wwan0")) == {"modem_max_down_mbps": 50.0}
    calls = (state / "calls.log").read_text().splitlines()
    assert calls[-2:] == ["-J -m 0", f"-J -b {BEARER_PATH}"]
    (state / "fail").touch()
    assert asyncio.run(radio.read_max(cfg)) == {}


def test_mobile_result_above_the_modems_maximum_is_device_limited(
        stand_in_mmcli: tuple[Path, Path], server_ns: netns.ServerNamespace,
        tmp_path: Path) -> None:
    exe, state = stand_in_mmcli
    site = make_site(server_ns, tmp_path)
    try:
        link = server_ns.add_link(71)
        ctx = MethodContext("probe-test", "0.0-test", LinkBinding(
            "lte", "mobile", "Viettel", interface=link.host_if,
            modem=radio.ModemConfig(modem="0", mmcli=str(exe))))
        # "QEMU": no board ceiling, so only the modem can bound this link.
        opts: dict[str, Any] = {"target": site.url(link), "duration_s": 3, "warmup_s": 1,
                                "loaded_latency": False, "device_model": "QEMU"}
        # The modem reports 50 Mb/s down, 20 up; the 71 Mbit/s link carries ~68 both ways.
        serve_bearer(state, "50000000", "20000000", link.host_if)
        res = run("http", ctx, **opts)
        assert res.ok, res.error
        m = res.metrics.values()
        assert m["modem_max_down_mbps"] == 50 and m["modem_max_up_mbps"] == 20
        assert m["device_ceiling_mbps"] == 50 and m["device_ceiling_upload_mbps"] == 20
        assert {"at_device_ceiling", "device_limited"} <= set(res.flags), m
        # A configured ceiling still wins over what the modem reports.
        res = run("http", ctx, **opts, direction="download", device_ceiling_mbps=300)
        assert res.ok, res.error
        m = res.metrics.values()
        assert m["modem_max_down_mbps"] == 50 and m["device_ceiling_mbps"] == 300
        assert "device_limited" not in res.flags, m
        # The recording's 600 Mb/s: the same link is well below the modem's maximum.
        serve_bearer(state, "600000000", "600000000", link.host_if)
        res = run("http", ctx, **opts, direction="download")
        assert res.ok, res.error
        m = res.metrics.values()
        assert m["modem_max_down_mbps"] == 600 and m["device_ceiling_mbps"] == 600
        assert m["download_mbps"] > 45  # above the first run's ceiling share: not flagged
        assert "device_limited" not in res.flags, m
    finally:
        site.nginx.stop()
