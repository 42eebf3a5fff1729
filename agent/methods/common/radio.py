"""4G/5G radio context from ModemManager (``mmcli -J``), attached to a mobile link's
results so a slow result can be told apart from weak signal, a congested cell or a
fallback to 3G.

Three reads per test, each ``mmcli -J -m <modem> ...`` (ModemManager's JSON: every value
a string, ``"--"`` when unknown; keys as in its ``cli/mmcli-output.c``):

* the modem (``modem.generic.access-technologies``, ``.signal-quality.value``,
  ``.current-bands``; ``modem.3gpp.operator-code``);
* ``--signal-get`` (``modem.signal.<tech>.rssi/rsrp/rsrq/snr`` of the technology in
  use; ModemManager's "s/n" is reported as SINR; polling is switched on
  with ``--signal-setup`` when its refresh rate reads 0, since the values stay ``--``
  until then);
* ``--get-cell-info`` (``modem.generic.cell-info``: one ``"cell type: lte, serving: yes,
  ..., ci: ..., earfcn: ..."`` string per cell; the serving cell's id and channel).

Throughput methods also read the modem's reported maximum (:func:`read_max`): the
modem's ``modem.generic.bearers``, then ``mmcli -J -b <path>`` of each; a connected
bearer's ``bearer.stats.downlink-speed`` / ``uplink-speed`` are the bit rates negotiated
with the network at the packet-service attach (ModemManager >= 1.20, reported by MBIM
modems; bits per second, absent or ``--`` when unknown). They become
``modem_max_down_mbps`` / ``modem_max_up_mbps`` and bound the device's ceiling
(``device.py``).

Everything becomes a number (the contract's metrics): ``radio_generation`` (2/3/4/5),
``radio_band`` (the 3GPP band number, from the serving cell's EARFCN or a single
configured band), ``radio_operator`` (MCC+MNC digits, 45204 = Viettel), ``radio_cell_id``,
the signal in dBm/dB and ``radio_signal_pct``. Numbers keep the InfluxDB schema's tags
as they are (no new series per cell) while staying bounded and plottable.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from typing import TYPE_CHECKING, Any

from netmon.contractbase import MAX_SPEED_MBPS

if TYPE_CHECKING:
    from agent.runconfig import Modem

log = logging.getLogger("netmon.agent.radio")

#: ModemManager access technology -> generation (``mm_modem_access_technology`` strings).
GENERATIONS: dict[str, int] = {
    "gsm": 2, "gsm-compact": 2, "gprs": 2, "edge": 2, "pots": 2, "1xrtt": 2,
    "umts": 3, "hsdpa": 3, "hsupa": 3, "hspa": 3, "hspa-plus": 3, "evdo0": 3, "evdoa": 3,
    "evdob": 3,
    "lte": 4, "lte-cat-m": 4, "lte-nb-iot": 4,
    "5gnr": 5,
}

#: E-UTRA downlink EARFCN ranges (3GPP TS 36.101 table 5.7.3-1) of the bands used in
#: Vietnam and its neighbours: (first, last, band).
EARFCN_BANDS: tuple[tuple[int, int, int], ...] = (
    (0, 599, 1), (1200, 1949, 3), (2400, 2649, 5), (2750, 3449, 7), (3450, 3799, 8),
    (6150, 6449, 20), (9210, 9659, 28), (37750, 38249, 38), (38650, 39649, 40),
    (39650, 41589, 41),
)

#: ``--signal-get`` section per generation, and its keys -> metric.
SIGNAL_SECTIONS: dict[int, tuple[str, ...]] = {5: ("5g", "lte"), 4: ("lte",), 3: ("umts",),
                                               2: ("gsm",)}
SIGNAL_KEYS: dict[str, str] = {"rssi": "radio_rssi_dbm", "rsrp": "radio_rsrp_dbm",
                               "rsrq": "radio_rsrq_db", "snr": "radio_sinr_db"}

#: Plausible ranges: a value outside is a modem's placeholder, not a measurement.
RANGES: dict[str, tuple[float, float]] = {
    "radio_rssi_dbm": (-140.0, 0.0), "radio_rsrp_dbm": (-160.0, 0.0),
    "radio_rsrq_db": (-40.0, 20.0), "radio_sinr_db": (-30.0, 60.0),
}


#: ``bearer.stats`` keys (bits per second) -> metric (Mb/s).
SPEED_KEYS: dict[str, str] = {"downlink-speed": "modem_max_down_mbps",
                              "uplink-speed": "modem_max_up_mbps"}
#: A bearer's D-Bus path as the modem lists it; anything else is not passed to mmcli.
BEARER_PATH = re.compile(r"/[A-Za-z0-9_/]{1,200}")


class RadioError(Exception):
    """mmcli failed or printed something that is not its JSON."""


def _value(doc: dict[str, Any], *path: str) -> Any:
    node: Any = doc
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return None if node == "--" else node


def _number(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return float(text)
    except ValueError:
        return None


def earfcn_band(earfcn: int) -> int | None:
    """The E-UTRA band of a downlink EARFCN, None when not in :data:`EARFCN_BANDS`."""
    for first, last, band in EARFCN_BANDS:
        if first <= earfcn <= last:
            return band
    return None


def parse_modem(doc: dict[str, Any]) -> dict[str, float]:
    """Metrics from ``mmcli -J -m M``: generation, signal %, operator, single band."""
    out: dict[str, float] = {}
    techs = _value(doc, "modem", "generic", "access-technologies")
    if isinstance(techs, list):
        gens = [GENERATIONS[t] for t in techs if isinstance(t, str) and t in GENERATIONS]
        if gens:
            out["radio_generation"] = float(max(gens))
    pct = _number(_value(doc, "modem", "generic", "signal-quality", "value"))
    if pct is not None and 0 <= pct <= 100:
        out["radio_signal_pct"] = pct
    code = _value(doc, "modem", "3gpp", "operator-code")
    if isinstance(code, str) and re.fullmatch(r"\d{5,6}", code):
        out["radio_operator"] = float(code)
    bands = _value(doc, "modem", "generic", "current-bands")
    if isinstance(bands, list) and len(bands) == 1 and isinstance(bands[0], str):
        # A modem locked to one band says which band it uses; a list says nothing.
        found = re.fullmatch(r"(?:eutran|ngran|utran)-(\d{1,3})", bands[0])
        if found:
            out["radio_band"] = float(found.group(1))
    return out


def parse_signal(doc: dict[str, Any], generation: float | None = None) -> dict[str, float]:
    """Metrics from ``mmcli -J -m M --signal-get``: the section of the technology in use
    (``generation``; unknown: the newest section reporting anything), never a mix."""
    sections = SIGNAL_SECTIONS.get(int(generation or 0), ("5g", "lte", "umts", "gsm"))
    for tech in sections:
        out: dict[str, float] = {}
        for key, metric in SIGNAL_KEYS.items():
            value = _number(_value(doc, "modem", "signal", tech, key))
            low, high = RANGES[metric]
            if value is not None and low <= value <= high:
                out[metric] = value
        if out:
            return out
    return {}


def signal_polling(doc: dict[str, Any]) -> bool:
    """Whether ModemManager polls extended signal values (refresh rate above 0)."""
    rate = _number(_value(doc, "modem", "signal", "refresh", "rate"))
    return bool(rate)


def parse_cells(doc: dict[str, Any]) -> dict[str, float]:
    """Metrics from ``mmcli -J -m M --get-cell-info``: the serving cell's id and band."""
    cells = _value(doc, "modem", "generic", "cell-info")
    if not isinstance(cells, list):
        return {}
    for text in cells:
        if not isinstance(text, str):
            continue
        fields = dict(part.split(": ", 1) for part in text.split(", ") if ": " in part)
        if fields.get("serving") != "yes":
            continue
        out: dict[str, float] = {}
        ci = fields.get("ci", "")
        if re.fullmatch(r"[0-9A-Fa-f]{1,12}", ci):
            out["radio_cell_id"] = float(int(ci, 16))
        earfcn = fields.get("earfcn", "")
        if fields.get("cell type") == "lte" and earfcn.isdigit():
            band = earfcn_band(int(earfcn))
            if band is not None:
                out["radio_band"] = float(band)
        return out
    return {}


def bearer_paths(doc: dict[str, Any]) -> list[str]:
    """The bearers ``mmcli -J -m M`` lists (``modem.generic.bearers``)."""
    paths = _value(doc, "modem", "generic", "bearers")
    if not isinstance(paths, list):
        return []
    return [p for p in paths if isinstance(p, str) and BEARER_PATH.fullmatch(p)]


def parse_bearer(doc: dict[str, Any]) -> dict[str, float]:
    """Metrics from ``mmcli -J -b B``: the modem's reported maximum per direction, Mb/s, of
    a connected bearer; a speed that is unknown (``--``, 0) or implausible is left out."""
    if _value(doc, "bearer", "status", "connected") != "yes":
        return {}
    out: dict[str, float] = {}
    for key, metric in SPEED_KEYS.items():
        bits = _number(_value(doc, "bearer", "stats", key))
        mbps = round(bits / 1e6, 3) if bits is not None and math.isfinite(bits) else 0.0
        if 0 < mbps <= MAX_SPEED_MBPS:
            out[metric] = mbps
    return out


def bearer_interface(doc: dict[str, Any]) -> str | None:
    """The network interface a bearer carries its data on (``bearer.status.interface``)."""
    name = _value(doc, "bearer", "status", "interface")
    return name if isinstance(name, str) and name else None


async def _mmcli(cfg: Modem, *args: str, expect_json: bool = True,
                 modem: bool = True) -> dict[str, Any]:
    # A bearer is named by its own path (-b), not within a modem (-m).
    argv = [cfg.mmcli, "-J", *(("-m", cfg.modem) if modem else ()), *args]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        raise RadioError(f"{cfg.mmcli}: {exc.strerror or exc}") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), cfg.timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RadioError(f"{' '.join(argv[1:])}: no answer in {cfg.timeout_s:g} s") from None
    if proc.returncode != 0:
        words = err.decode(errors="replace").strip()[-300:] or f"exit {proc.returncode}"
        raise RadioError(f"mmcli {' '.join(args) or '(modem)'}: {words}")
    if not expect_json:
        return {}
    try:
        doc = json.loads(out)
    except ValueError:
        raise RadioError(f"mmcli {' '.join(args) or '(modem)'}: not JSON") from None
    if not isinstance(doc, dict):
        raise RadioError(f"mmcli {' '.join(args) or '(modem)'}: not a JSON object")
    return doc


async def read(cfg: Modem) -> dict[str, float]:
    """The radio metrics now; what cannot be read is left out (logged), never guessed."""
    metrics: dict[str, float] = {}
    try:
        metrics |= parse_modem(await _mmcli(cfg))
        signal = await _mmcli(cfg, "--signal-get")
        if not signal_polling(signal):
            await _mmcli(cfg, f"--signal-setup={cfg.signal_rate_s}", expect_json=False)
            signal = await _mmcli(cfg, "--signal-get")
        metrics |= parse_signal(signal, metrics.get("radio_generation"))
    except RadioError as exc:
        log.warning("radio context unavailable: %s", exc)
        return metrics
    try:
        # Older ModemManager (< 1.20) and some modems have no cell info: not an error.
        metrics |= parse_cells(await _mmcli(cfg, "--get-cell-info"))
    except RadioError as exc:
        log.info("no cell info: %s", exc)
    return metrics


async def read_max(cfg: Modem, interface: str | None = None) -> dict[str, float]:
    """The modem's reported maximum (``modem_max_down_mbps`` / ``modem_max_up_mbps``) of
    its connected bearer (the one on ``interface`` when several are connected); empty when
    ModemManager reports none or cannot be asked (logged), never guessed."""
    found: list[tuple[str | None, dict[str, float]]] = []
    try:
        for path in bearer_paths(await _mmcli(cfg)):
            doc = await _mmcli(cfg, "-b", path, modem=False)
            speeds = parse_bearer(doc)
            if speeds:
                found.append((bearer_interface(doc), speeds))
    except RadioError as exc:
        log.warning("modem's reported maximum unavailable: %s", exc)
        return {}
    on_link = [speeds for name, speeds in found if interface and name == interface]
    return (on_link or [speeds for _, speeds in found] or [{}])[0]


def __getattr__(name: str) -> Any:
    # The config model lives in agent.config (pydantic: the start stage's validation);
    # kept reachable here for the code and tests that name it by its old home.
    if name == "ModemConfig":
        from agent.config import ModemConfig
        return ModemConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
