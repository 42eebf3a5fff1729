"""Pure statistics for the bulletin, over individual test values (never averages of averages).

Every percentile uses linear interpolation between closest ranks (Hyndman & Fan type 7,
numpy's default, ``statistics.quantiles(method="inclusive")``), so a reader can reproduce
each figure with a spreadsheet's ``PERCENTILE.INC``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


def _arr(values: ArrayLike) -> FloatArray:
    a = np.asarray(values, dtype=np.float64)
    return a[~np.isnan(a)]


def median(values: ArrayLike) -> float | None:
    """Median of the non-NaN values; None when there are none."""
    a = _arr(values)
    return float(np.median(a)) if a.size else None


def mean(values: ArrayLike) -> float | None:
    """Arithmetic mean (what VNNIC i-Speed publishes); None when empty."""
    a = _arr(values)
    return float(a.mean()) if a.size else None


def percentile(values: ArrayLike, q: float) -> float | None:
    """The ``q``-th percentile (0-100), linear interpolation; None when empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q={q} is outside 0-100")
    a = _arr(values)
    return float(np.percentile(a, q)) if a.size else None


def share_at_or_above(values: ArrayLike, target: float) -> float | None:
    """Share (0-1) of the values that reach the target (``>=``); None when empty."""
    a = _arr(values)
    return float(np.count_nonzero(a >= target) / a.size) if a.size else None


def consistent_speed(per_line: Sequence[ArrayLike]) -> float | None:
    """The "80/80" consistent speed, after the FCC's Measuring Broadband America.

    For each line (one probe's link) take the speed it reached in 80% of its tests
    (its 20th percentile); the 80/80 figure is the speed that 80% of the lines reach
    (the 20th percentile of those). Lines without values are left out; None when no line
    has any.
    """
    line_p20 = [percentile(v, 20) for v in per_line]
    kept = [p for p in line_p20 if p is not None]
    return percentile(kept, 20) if kept else None


def grouped_percentile(values: ArrayLike, group_ids: ArrayLike, q: float
                       ) -> tuple[NDArray[np.int64], FloatArray]:
    """The ``q``-th percentile of each group at once (same interpolation as :func:`percentile`).

    Returns (group ids in ascending order, their percentiles). One sort for all groups
    instead of one call per group: a month has thousands of lines.
    """
    v = np.asarray(values, dtype=np.float64)
    g = np.asarray(group_ids, dtype=np.int64)
    keep = ~np.isnan(v)
    v, g = v[keep], g[keep]
    if not v.size:
        return np.zeros(0, np.int64), np.zeros(0)
    # By value (any order among equal values: they give the same figure; the
    # interpolation below turns -0.0 into 0.0 either way), then stably by group: the
    # order np.lexsort((v, g)) gives, 3-4 times faster (stable_order).
    order = np.argsort(v)
    order = order[stable_order(g[order])]
    v, g = v[order], g[order]
    starts = np.flatnonzero(np.concatenate([[True], g[1:] != g[:-1]]))
    counts = np.diff(np.concatenate([starts, [v.size]]))
    pos = (counts - 1) * (q / 100.0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, counts - 1)
    frac = pos - lo
    a, b = v[starts + lo], v[starts + hi]
    return g[starts], a + frac * (b - a)


def stable_order(ids: NDArray[np.integer]) -> NDArray[np.intp]:
    """``np.argsort(ids, kind="stable")``: integer ids that fit 16 bits (a month's lines,
    units, groups) are sorted by numpy's radix sort, ~6 times faster than its merge sort
    of 64-bit ids; the order is the same (stable either way)."""
    if ids.size and int(ids.min()) >= 0 and int(ids.max()) < 1 << 16:
        return np.argsort(ids.astype(np.uint16), kind="stable")
    return np.argsort(ids, kind="stable")


#: Above this, :func:`distinct` hashes instead of counting in a table this long.
_TABLE_MAX = 1 << 22


def distinct(ids: ArrayLike) -> NDArray[np.int64]:
    """The distinct values of small non-negative integer ids, ascending: what ``np.unique``
    returns, by counting in a table (numpy 2's hashing ``np.unique`` is ~100 times
    slower on a month's line and probe-day ids); other ids go to ``np.unique``."""
    a = np.asarray(ids)
    if not a.size:
        return np.zeros(0, np.int64)
    if a.dtype.kind in "iu" and int(a.min()) >= 0 and int(a.max()) < _TABLE_MAX:
        return np.flatnonzero(np.bincount(a)).astype(np.int64)
    return np.unique(a).astype(np.int64)


def has_enough(n_tests: int, min_tests: int) -> bool:
    """The insufficient-data rule: a group is rated only with at least ``min_tests`` tests."""
    return n_tests >= min_tests


@dataclass(frozen=True)
class Summary:
    """The speed statistics of one group of tests."""

    tests: int
    median: float | None
    mean: float | None
    p10: float | None
    p90: float | None
    share_at_target: float | None
    consistent_80_80: float | None


def summarize(values: ArrayLike, line_ids: ArrayLike, target: float | None,
              line_p20: NDArray[np.float64] | None = None) -> Summary:
    """All speed statistics of one group; ``line_ids`` says which line each value came from.

    ``line_p20`` (indexed by line id) may carry each line's 20th percentile precomputed
    over exactly the values of that line that are in this group (true when the group holds
    whole lines), sparing a sort per group.
    """
    a = np.asarray(values, dtype=np.float64)
    ids = np.asarray(line_ids)
    keep = ~np.isnan(a)
    a, ids = a[keep], ids[keep]
    if not a.size:
        return Summary(0, None, None, None, None, None, None)
    p10, p50, p90 = (float(x) for x in np.percentile(a, [10, 50, 90]))
    if line_p20 is None:
        _, per_line = grouped_percentile(a, ids, 20)  # == consistent_speed(), vectorised
    else:
        per_line = line_p20[distinct(ids)]
    return Summary(
        tests=int(a.size),
        median=p50,
        mean=float(a.mean()),
        p10=p10,
        p90=p90,
        share_at_target=share_at_or_above(a, target) if target is not None else None,
        consistent_80_80=percentile(per_line, 20),
    )


def change_pct(current: float | None, previous: float | None) -> float | None:
    """Relative change in percent from ``previous`` to ``current``; None if either is missing."""
    if current is None or previous is None or previous == 0:
        return None
    return (current - previous) / previous * 100.0
