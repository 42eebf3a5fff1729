"""Is the system clock trustworthy? Raspberry Pis have no real-time clock: after a power
cut they boot at the last saved time (or 1970) until NTP answers.

The kernel knows: ``adjtimex(2)`` returns ``TIME_ERROR`` and sets ``STA_UNSYNC`` until an
NTP client (systemd-timesyncd, chrony, ntpd) disciplines the clock. A clock before
``not_before`` (a date this agent cannot have been built before) is wrong whatever the
kernel says. The scheduler runs no test while the clock is wrong and, under policy
``flag``, marks results ``clock_unsynced`` while it is merely unsynchronised.

Also the :class:`Clock` the scheduler uses, so tests can substitute a fake one.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

TIME_ERROR = 5
STA_UNSYNC = 0x0040
TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h> (same layout on arm64, armhf and x86-64: longs).
    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long), ("time", _Timeval), ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    ]


def kernel_synced() -> bool | None:
    """True/False from ``adjtimex`` (read-only call), None when it cannot be asked."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        tx = _Timex()  # modes = 0: only read
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != TIME_ERROR and not (tx.status & STA_UNSYNC)


@dataclass(frozen=True)
class ClockState:
    """The clock's trustworthiness right now."""

    plausible: bool  # not before the floor date: timestamps are not absurd
    synced: bool  # an NTP client says the clock is right

    @property
    def flags(self) -> tuple[str, ...]:
        """Result flags to add."""
        return () if self.synced else ("clock_unsynced",)


def clock_state(not_before: date, now: datetime | None = None,
                override: str | None = None) -> ClockState:
    """Judge the system clock. ``NETMON_CLOCK_ASSUME`` (``synced``/``unsynced``) overrides
    the kernel's answer, for containers without NTP and for tests."""
    now = now or datetime.now(UTC)
    plausible = now.date() >= not_before
    override = override if override is not None else os.environ.get("NETMON_CLOCK_ASSUME")
    if override == "synced":
        synced = True
    elif override == "unsynced":
        synced = False
    else:
        kernel = kernel_synced()
        synced = bool(kernel) or TIMESYNCD_FLAG.exists()
    return ClockState(plausible=plausible, synced=synced and plausible)


class Clock:
    """Time as the scheduler sees it: monotonic seconds for waiting, UTC wall time for
    months and peak hours. Suspend does not advance ``monotonic`` on Linux, so a resumed
    probe carries on with its schedule instead of running every missed test at once."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps."""
        return time.monotonic()

    def wall(self) -> datetime:
        """The current UTC time."""
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        """Wait (cancellable)."""
        await asyncio.sleep(max(0.0, seconds))
