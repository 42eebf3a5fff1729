"""The probe's own throughput ceiling: what this board (or this modem) can carry at most.

A Raspberry Pi 3B+ reaches the network through USB 2.0 and tops out near 300 Mb/s on a
300 Mb/s or 1 Gb/s plan; a result at that speed says nothing about the line. So every
throughput result carries ``device_ceiling_mbps`` (and ``device_ceiling_upload_mbps``)
when the ceiling is known, and the flag ``at_device_ceiling`` when a measured direction
reached ``device_ceiling_share`` of it: the bulletin can then count such tests apart.

The board model comes from the device tree (``/proc/device-tree/model``, a NUL-terminated
string such as ``Raspberry Pi 4 Model B Rev 1.4``) or a configured override; the ceiling
from :data:`BOARD_CEILINGS` (sources in ``docs/methods.md``) or a configured override
(a Cat 4 USB modem: 150 down, 50 up). A model that cannot be read or is not in the table
gives no ceiling at all: never a guess. The path can be narrower than the board: a port
negotiated below it (sysfs), or on a mobile link the maximum the modem reports
(ModemManager, ``radio.read_max``); the lowest known figure per direction is the ceiling,
unless one is configured.

The measuring process itself can be the limit: the http engine runs in one thread, and
TLS on a Pi 4 (no AES instructions) saturates a core near 550 Mb/s. The thread's CPU time
over the transfer's wall time is ``cpu_pct``; at ``cpu_bound_pct`` the result is flagged
``cpu_bound``. Either reason also sets ``device_limited``, the flag the bulletin and the
dashboards count: such a result is a floor of the line's speed, not a measure of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.methods.common import radio

if TYPE_CHECKING:
    from agent.runconfig import Modem
    from netmon.methods import DeviceOptions

#: (pattern on the model string, download Mb/s, upload Mb/s): TCP goodput ceilings of
#: the board's Ethernet port, first match wins (the "Plus" row before the plain 3B).
BOARD_CEILINGS: tuple[tuple[re.Pattern[str], float, float], ...] = (
    # Gigabit Ethernet behind the USB 2.0 hub: "maximum throughput 300 Mbps".
    (re.compile(r"Raspberry Pi 3 Model B Plus"), 300.0, 300.0),
    # 10/100 Ethernet (LAN9514 on USB 2.0): about 94 Mb/s of TCP goodput.
    (re.compile(r"Raspberry Pi (3 Model B|2 Model B|Model B)\b"), 94.0, 94.0),
    # Native Gigabit Ethernet: about 940 Mb/s of TCP goodput (Pi 4, 400, CM4, Pi 5, CM5).
    (re.compile(r"Raspberry Pi (4|400|5|Compute Module [45])\b"), 940.0, 940.0),
)


@dataclass(frozen=True)
class Ceiling:
    """The device's ceiling per direction (None: not known for that direction) and where
    it came from."""

    download_mbps: float | None
    upload_mbps: float | None
    source: str  # "configured", the board model, "modem", or the model plus what lowered it


def _lowest(*values: float | None) -> float | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


def read_model(path: str) -> str | None:
    """The board model in ``path`` (device-tree strings end with NUL); None if unreadable."""
    try:
        with open(path, "rb") as f:
            raw = f.read(512)
    except OSError:
        return None
    text = raw.split(b"\0", 1)[0].decode("utf-8", errors="replace").strip()
    return text or None


def board_ceiling(model: str) -> tuple[float, float] | None:
    """``(download, upload)`` Mb/s for a board model, None when it is not in the table."""
    for pattern, down, up in BOARD_CEILINGS:
        if pattern.search(model):
            return down, up
    return None


SYS_NET = Path("/sys/class/net")
#: TCP payload per Ethernet line-rate bit at MTU 1500 (1448 of 1538 bytes on the wire).
GOODPUT_SHARE = 1448 / 1538


def negotiated_mbps(interface: str | None, sys_net: Path = SYS_NET) -> float | None:
    """The interface's negotiated link speed (sysfs ``speed``, Mb/s); None when the
    driver does not know it (``-1``, an error: Wi-Fi, loopback, a link that is down)."""
    if not interface:
        return None
    try:
        speed = int((sys_net / interface / "speed").read_text().strip())
    except (OSError, ValueError):
        return None
    return float(speed) if speed > 0 else None


def with_link_speed(ceiling: Ceiling | None, speed_mbps: float | None) -> Ceiling | None:
    """A port negotiated below a known board's ceiling (a Pi 4 on a 100 Mb/s switch port
    or a bad cable) is the ceiling: its TCP goodput, ``GOODPUT_SHARE`` of the line rate."""
    if speed_mbps is None or ceiling is None or ceiling.source == "configured":
        # An unknown board stays without a ceiling: virtual and some USB adapters report
        # speeds (a veth says 10000) that bound nothing.
        return ceiling
    port = round(speed_mbps * GOODPUT_SHARE, 1)
    return _lowered(ceiling, port, port, f"link {speed_mbps:g}")


def with_modem_max(ceiling: Ceiling | None, reported: dict[str, float]) -> Ceiling | None:
    """A mobile link's ceiling: per direction the lower of the board's and the modem's
    reported maximum (``modem_max_down_mbps`` / ``modem_max_up_mbps``, :mod:`radio`).
    A configured ceiling is kept; a direction the modem does not report keeps the board's
    figure (or none)."""
    down, up = reported.get("modem_max_down_mbps"), reported.get("modem_max_up_mbps")
    if (down is None and up is None) or (ceiling is not None
                                         and ceiling.source == "configured"):
        return ceiling
    if ceiling is None:
        return Ceiling(down, up, "modem")
    return _lowered(ceiling, down, up, "modem")


def _lowered(ceiling: Ceiling, down: float | None, up: float | None, why: str) -> Ceiling:
    """``ceiling`` lowered per direction to ``down``/``up`` where they are lower, its
    source naming ``why``; unchanged (source too) when neither is lower."""
    lowered = Ceiling(_lowest(down, ceiling.download_mbps), _lowest(up, ceiling.upload_mbps),
                      f"{ceiling.source}, {why}")
    if (lowered.download_mbps, lowered.upload_mbps) != (ceiling.download_mbps,
                                                        ceiling.upload_mbps):
        return lowered
    return ceiling


def ceiling_for(options: DeviceOptions) -> Ceiling | None:
    """The ceiling the options configure or the board implies; None when unknown."""
    if options.device_ceiling_mbps is not None:
        up = options.device_ceiling_upload_mbps or options.device_ceiling_mbps
        return Ceiling(options.device_ceiling_mbps, up, "configured")
    model = options.device_model or read_model(options.device_model_file)
    if model is None:
        return None
    found = board_ceiling(model)
    if found is None:
        return None
    return Ceiling(found[0], found[1], model)


async def path_ceiling(metrics: dict[str, float], options: DeviceOptions,
                       interface: str | None, modem: Modem | None) -> Ceiling | None:
    """The ceiling of the path a test ran on: configured, else the board's, lowered by the
    interface's negotiated speed and, on a link with a modem, by the modem's reported
    maximum. Records ``link_speed_mbps`` and ``modem_max_*_mbps`` in ``metrics``."""
    speed = negotiated_mbps(interface)
    if speed is not None:
        metrics["link_speed_mbps"] = speed
    ceiling = with_link_speed(ceiling_for(options), speed)
    if modem is not None:
        reported = await radio.read_max(modem, interface)
        metrics |= reported
        ceiling = with_modem_max(ceiling, reported)
    return ceiling


def add_ceiling(metrics: dict[str, float], ceiling: Ceiling | None, share: float,
                measured: dict[str, float] | None = None) -> tuple[str, ...]:
    """Set ``device_ceiling_mbps`` (+ ``device_ceiling_upload_mbps`` when an upload was
    measured) and return ``("at_device_ceiling",)`` when a measured direction reached
    ``share`` of its ceiling. ``measured`` maps ``download`` / ``upload`` to Mb/s; by
    default the result's own ``download_mbps`` / ``upload_mbps``."""
    if ceiling is None:
        return ()
    if measured is None:
        measured = {d: metrics[f"{d}_mbps"] for d in ("download", "upload")
                    if f"{d}_mbps" in metrics}
    at = False
    if ceiling.download_mbps is not None:
        metrics["device_ceiling_mbps"] = ceiling.download_mbps
        down = measured.get("download")
        at = down is not None and down >= share * ceiling.download_mbps
    up = measured.get("upload")
    if up is not None and ceiling.upload_mbps is not None:
        metrics["device_ceiling_upload_mbps"] = ceiling.upload_mbps
        at = at or up >= share * ceiling.upload_mbps
    return ("at_device_ceiling",) if at else ()


#: The flags that make a result ``device_limited`` (the probe, not the line, set the speed).
LIMIT_REASONS = ("at_device_ceiling", "cpu_bound")


def add_cpu(metrics: dict[str, float], cpu_s: float, elapsed_s: float,
            bound_pct: float) -> tuple[str, ...]:
    """Set ``cpu_pct`` (the measuring thread's CPU over the transfer, the busiest
    direction so far) and return ``("cpu_bound",)`` when it reached ``bound_pct``."""
    if elapsed_s <= 0:
        return ()
    pct = min(100.0, round(cpu_s / elapsed_s * 100, 1))
    metrics["cpu_pct"] = max(pct, metrics.get("cpu_pct", 0.0))
    return ("cpu_bound",) if pct >= bound_pct else ()


def limited(flags: tuple[str, ...]) -> tuple[str, ...]:
    """``flags`` plus ``device_limited`` when a :data:`LIMIT_REASONS` flag is among them."""
    if any(f in LIMIT_REASONS for f in flags) and "device_limited" not in flags:
        return (*flags, "device_limited")
    return flags
