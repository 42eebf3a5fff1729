"""Monthly data budgets on metered (mobile) links: pure arithmetic, no I/O.

A SIM with 20 GB a month cannot run a 300 MB speed test every hour. Given what the link
has used this month, what each throughput test moves per run (estimated from the
``bytes`` metric of past results) and how much of the month is left, each throughput
test gets an *effective* interval: its configured one while the budget allows, longer
when it does not (so the remaining runs are spread evenly over the rest of the month,
peak hours included), and none at all (stop) when the next run would eat into the
reserve kept for latency tests. Latency tests are never stopped by the budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo


def month_key(wall: datetime, tz: ZoneInfo) -> str:
    """``YYYY-MM`` of ``wall`` in the budget's time zone (SIM months follow local time)."""
    return wall.astimezone(tz).strftime("%Y-%m")


def seconds_left_in_month(wall: datetime, tz: ZoneInfo) -> float:
    """Seconds from ``wall`` to the start of next month in ``tz``."""
    local = wall.astimezone(tz)
    first = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    nxt = (first + timedelta(days=32)).replace(day=1)
    return max(1.0, (nxt - local).total_seconds())


@dataclass(frozen=True)
class Demand:
    """One throughput test on a metered link."""

    key: str
    bytes_per_run: float
    every_s: float


def effective_intervals(budget_bytes: float, reserve_pct: float, used_bytes: float,
                        demands: list[Demand], seconds_left: float) -> dict[str, float | None]:
    """Effective interval per demand key; None means: do not run (budget spent).

    ``usable`` is what is left before the reserve. If running every test at its
    configured interval for the rest of the month fits, intervals stay; otherwise all of
    them stretch by the same factor. A test whose single next run does not fit stops.
    """
    usable = budget_bytes * (1 - reserve_pct / 100.0) - used_bytes
    want = sum(d.bytes_per_run * seconds_left / d.every_s for d in demands)
    out: dict[str, float | None] = {}
    for d in demands:
        if usable <= 0 or d.bytes_per_run > usable:
            out[d.key] = None
        elif want <= usable or want == 0:
            out[d.key] = d.every_s
        else:
            out[d.key] = d.every_s * want / usable
    return out
