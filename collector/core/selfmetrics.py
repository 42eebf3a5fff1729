"""The collector's own metrics: measurement ``collector_stats``, written and logged every
``writer.stats_interval_s`` (default one minute).

Fields (counters are integers since the process started, never mixed with floats):
``received``, ``written`` (points), ``results``, ``statuses``, ``dead_lettered``,
``retries``, ``influx_errors``, ``batches``, ``acked``, ``receipts_sent`` (receipt
messages published), ``receipted`` (result ids they named), ``dead_rotated`` (dead
letters rotated out by the size caps), ``unknown_isp`` (results whose ``isp`` is not in
``integrity.known_isps``: stored, but counted); floats: ``write_latency_ms_avg``,
``write_latency_ms_max`` and ``batch_size_avg`` over the last interval, ``received_per_s``
and ``written_per_s`` over the last interval. Tag: ``instance`` (the MQTT client id).
Dead letters per reason go to the same measurement with an extra tag ``reason`` and a
single integer field ``dead_lettered``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from collector.core.schema import COLLECTOR_STATS, line

log = logging.getLogger(__name__)


@dataclass
class Stats:
    """Thread-safe counters shared by the network thread and the writer thread."""

    received: int = 0
    results: int = 0
    statuses: int = 0
    written: int = 0
    acked: int = 0
    retries: int = 0
    influx_errors: int = 0
    batches: int = 0
    receipts_sent: int = 0
    receipted: int = 0
    dead_rotated: int = 0
    unknown_isp: int = 0
    dead_reasons: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # per-interval accumulators
    _lat_sum: float = 0.0
    _lat_max: float = 0.0
    _lat_n: int = 0
    _batch_points: int = 0
    _last_t: float = field(default_factory=time.monotonic)
    _last_received: int = 0
    _last_written: int = 0

    @property
    def dead_lettered(self) -> int:
        """Every dead letter, any reason."""
        return sum(self.dead_reasons.values())

    def add(self, **counts: int) -> None:
        """Increment counters by name (``received=1``)."""
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def dead(self, reason: str, n: int = 1) -> None:
        """Count a dead letter."""
        with self._lock:
            self.dead_reasons[reason] += n

    def batch(self, points: int, latency_s: float) -> None:
        """Count one successful HTTP write."""
        with self._lock:
            self.batches += 1
            self.written += points
            self._batch_points += points
            self._lat_sum += latency_s
            self._lat_n += 1
            self._lat_max = max(self._lat_max, latency_s)

    def snapshot(self, reset_interval: bool = False) -> dict[str, int | float]:
        """Counters and interval figures as one dict."""
        with self._lock:
            now = time.monotonic()
            dt = max(now - self._last_t, 1e-9)
            snap: dict[str, int | float] = {
                "received": self.received, "results": self.results,
                "statuses": self.statuses, "written": self.written, "acked": self.acked,
                "dead_lettered": sum(self.dead_reasons.values()), "retries": self.retries,
                "influx_errors": self.influx_errors, "batches": self.batches,
                "receipts_sent": self.receipts_sent, "receipted": self.receipted,
                "dead_rotated": self.dead_rotated, "unknown_isp": self.unknown_isp,
                "write_latency_ms_avg": 1000.0 * self._lat_sum / self._lat_n
                if self._lat_n else 0.0,
                "write_latency_ms_max": 1000.0 * self._lat_max,
                "batch_size_avg": float(self._batch_points / self._lat_n) if self._lat_n
                else 0.0,
                "received_per_s": (self.received - self._last_received) / dt,
                "written_per_s": (self.written - self._last_written) / dt,
            }
            if reset_interval:
                self._lat_sum = self._lat_max = 0.0
                self._lat_n = self._batch_points = 0
                self._last_t = now
                self._last_received = self.received
                self._last_written = self.written
            return snap

    def lines(self, instance: str, ts_ms: int, snap: dict[str, int | float]) -> list[str]:
        """``collector_stats`` points for a :meth:`snapshot`."""
        fields: dict[str, float | int | bool | str] = {
            k: (float(v) if isinstance(v, float) else int(v)) for k, v in snap.items()}
        out = [line(COLLECTOR_STATS, {"instance": instance}, fields, ts_ms)]
        with self._lock:
            reasons = dict(self.dead_reasons)
        out += [line(COLLECTOR_STATS, {"instance": instance, "reason": r},
                     {"dead_lettered": n}, ts_ms) for r, n in sorted(reasons.items())]
        return out

    def log_line(self, snap: dict[str, int | float]) -> str:
        """One human line for the journal."""
        reasons = ", ".join(f"{r}={n}" for r, n in sorted(self.dead_reasons.items())) or "none"
        return (f"received={snap['received']} written={snap['written']} "
                f"acked={snap['acked']} receipts={snap['receipts_sent']} "
                f"receipted={snap['receipted']} "
                f"dead_lettered={snap['dead_lettered']} ({reasons}) "
                f"dead_rotated={snap['dead_rotated']} unknown_isp={snap['unknown_isp']} "
                f"retries={snap['retries']} influx_errors={snap['influx_errors']} "
                f"batches={snap['batches']} batch_avg={snap['batch_size_avg']:.0f} "
                f"write_ms_avg={snap['write_latency_ms_avg']:.1f} "
                f"write_ms_max={snap['write_latency_ms_max']:.1f} "
                f"in/s={snap['received_per_s']:.0f} out/s={snap['written_per_s']:.0f}")
