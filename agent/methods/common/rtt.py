"""RTT statistics of a probe series, the same for every method that reports ``rtt_ms``."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence


def rtt_metrics(samples_ms: Sequence[float], sent: int) -> dict[str, float]:
    """min / median / mean / max RTT, jitter and loss for a series of RTT samples.

    Jitter is the mean absolute difference of consecutive samples (RFC 3550 style, without
    smoothing); loss is the share of ``sent`` probes that got no answer.
    """
    out: dict[str, float] = {"samples": float(len(samples_ms))}
    if sent > 0:
        out["loss_pct"] = round(100.0 * (sent - len(samples_ms)) / sent, 3)
    if samples_ms:
        out |= {
            "rtt_ms": round(statistics.median(samples_ms), 3),
            "rtt_min_ms": round(min(samples_ms), 3),
            "rtt_mean_ms": round(statistics.fmean(samples_ms), 3),
            "rtt_max_ms": round(max(samples_ms), 3),
        }
        if len(samples_ms) > 1:
            diffs = [abs(b - a) for a, b in itertools.pairwise(samples_ms)]
            out["jitter_ms"] = round(statistics.fmean(diffs), 3)
    return out
