"""Radio context from ModemManager: the parser on recorded ``mmcli -J`` outputs
(tests/agent/methods/mmcli/README.md says where each comes from), and the agent with a
STAND-IN ``mmcli`` executable (no modem and no ModemManager daemon can run here)."""

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
from agent.methods.base import Method
from agent.methods.common import radio
from agent.runtime import Runtime
from netmon.contract import Metrics
from tests.helpers.agent import TestOnlyLatencyMethod, TestOnlyThroughputMethod, agent_config

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
import sys
from pathlib import Path
data, state = Path({data!r}), Path({state!r})
args = sys.argv[1:]
with open(state / "calls.log", "a") as log:
    log.write(" ".join(args) + "\\n")
if (state / "fail").exists():
    sys.stderr.write("error: couldn't find modem\\n")
    sys.exit(1)
if any(a.startswith("--signal-setup=") for a in args):
    (state / "polling").touch()
    print("successfully setup signal quality information polling")
elif "--signal-get" in args:
    name = "signal-lte-polling.json" if (state / "polling").exists() else "signal-polling-off.json"
    sys.stdout.write((data / name).read_text())
elif "--get-cell-info" in args:
    sys.stdout.write((data / "cell-info-lte.json").read_text())
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
