"""Pure parts of the bulletin: statistics, number format, months, local hours."""

from __future__ import annotations

import statistics
import unicodedata
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.bulletin import i18n, stats
from collector.bulletin.compute import local_hours
from collector.bulletin.data import Month, MonthError

speeds = st.lists(st.floats(min_value=0, max_value=2000, allow_nan=False), min_size=2,
                  max_size=200)


@settings(max_examples=200, deadline=None)
@given(speeds)
def test_median_percentiles_mean_match_statistics_module(values: list[float]) -> None:
    q10 = statistics.quantiles(values, n=10, method="inclusive")
    assert stats.median(values) == pytest.approx(statistics.median(values), abs=1e-9)
    assert stats.mean(values) == pytest.approx(statistics.fmean(values), abs=1e-9)
    assert stats.percentile(values, 10) == pytest.approx(q10[0], abs=1e-9)
    assert stats.percentile(values, 90) == pytest.approx(q10[8], abs=1e-9)
    s = stats.summarize(values, [0] * len(values), 71.0)
    assert s.median == pytest.approx(statistics.median(values), abs=1e-9)
    assert s.share_at_target == sum(v >= 71.0 for v in values) / len(values)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.floats(0, 2000, allow_nan=False)), min_size=1,
                max_size=150))
def test_vectorised_80_80_equals_the_reference(pairs: list[tuple[int, float]]) -> None:
    ids = [p[0] for p in pairs]
    values = [p[1] for p in pairs]
    per_line = [[v for i, v in pairs if i == line] for line in sorted(set(ids))]
    expect = stats.consistent_speed(per_line)
    assert stats.summarize(values, ids, 71.0).consistent_80_80 == pytest.approx(expect, abs=1e-9)
    gids, p = stats.grouped_percentile(values, ids, 37.5)
    for g, got in zip(gids, p, strict=True):
        assert got == pytest.approx(np.percentile([v for i, v in pairs if i == g], 37.5),
                                    abs=1e-9)


def _lexsort_grouped_percentile(values: list[float], ids: list[int], q: float
                                ) -> tuple[np.ndarray, np.ndarray]:
    """grouped_percentile as it was before issue 20's faster sort (np.lexsort)."""
    v, g = np.asarray(values, np.float64), np.asarray(ids, np.int64)
    keep = ~np.isnan(v)
    v, g = v[keep], g[keep]
    order = np.lexsort((v, g))
    v, g = v[order], g[order]
    starts = np.flatnonzero(np.concatenate([[True], g[1:] != g[:-1]]))
    counts = np.diff(np.concatenate([starts, [v.size]]))
    pos = (counts - 1) * (q / 100.0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, counts - 1)
    a, b = v[starts + lo], v[starts + hi]
    return g[starts], a + (pos - lo) * (b - a)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 3, 7, 65_535, 65_536, 10**9, -4]),
                          st.one_of(st.sampled_from([0.0, -0.0, 1.5, 71.0, float("nan")]),
                                    st.floats(-10, 2000, allow_nan=False))),
                min_size=1, max_size=200),
       st.sampled_from([0.0, 10.0, 20.0, 37.5, 50.0, 90.0, 100.0]))
def test_grouped_percentile_is_bit_identical_to_the_lexsort_one(
        pairs: list[tuple[int, float]], q: float) -> None:
    """The bulletin's CSV must not change by a bit with the faster sort: same groups, same
    figures (ties, zeros of either sign, NaN, ids beyond 16 bits and negative ones)."""
    ids, values = [p[0] for p in pairs], [p[1] for p in pairs]
    if all(np.isnan(values)):
        return
    want_ids, want = _lexsort_grouped_percentile(values, ids, q)
    got_ids, got = stats.grouped_percentile(values, ids, q)
    assert got_ids.tolist() == want_ids.tolist()
    assert got.tobytes() == want.tobytes()
    small = [i % 7 for i in ids]  # the 16-bit (radix sort) path
    want_ids, want = _lexsort_grouped_percentile(values, small, q)
    got_ids, got = stats.grouped_percentile(values, small, q)
    assert got_ids.tolist() == want_ids.tolist()
    assert got.tobytes() == want.tobytes()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 70), st.integers(0, (1 << 16) + 3),
                          st.integers(-3, 3)), max_size=300))
def test_stable_order_is_numpys_stable_argsort(ids: list[int]) -> None:
    """The grouping order (radix sort for 16-bit ids) is exactly np.argsort's stable one:
    equal ids keep their positions' order, ids outside 16 bits take the merge sort."""
    for arr in (np.asarray(ids, np.int64), np.asarray([abs(i) % 70 for i in ids], np.int64)):
        assert stats.stable_order(arr).tolist() == np.argsort(arr, kind="stable").tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 70), st.integers(0, 1 << 23), st.integers(-5, 5)),
                max_size=300))
def test_distinct_is_np_unique(ids: list[int]) -> None:
    """Counting probes and probe-days with a table gives np.unique's answer (negative and
    large ids go to np.unique itself)."""
    for arr in (np.asarray(ids, np.int64), np.asarray([abs(i) % 70 for i in ids], np.int32)):
        got = stats.distinct(arr)
        assert got.dtype == np.int64
        assert got.tolist() == np.unique(arr).tolist()


def test_share_counts_the_target_itself_as_reached() -> None:
    assert stats.share_at_or_above([70.9, 71.0, 71.1, 10.0], 71.0) == 0.5


def test_consistent_speed_is_two_level_80_80() -> None:
    # Line A reaches 100 in 80% of tests; B 50; C 10; D 200; E 150.
    lines = [[100.0] * 8 + [1.0] * 2, [50.0] * 10, [10.0] * 10, [200.0] * 10, [150.0] * 10]
    per_line_p20 = [statistics.quantiles(v, n=5, method="inclusive")[0] for v in lines]
    expect = statistics.quantiles(per_line_p20, n=5, method="inclusive")[0]
    assert stats.consistent_speed(lines) == pytest.approx(expect)
    values = [v for line in lines for v in line]
    ids = [i for i, line in enumerate(lines) for _ in line]
    assert stats.summarize(values, ids, 71.0).consistent_80_80 == pytest.approx(expect)
    assert stats.consistent_speed([[], []]) is None


def test_nan_values_are_ignored_and_empty_is_none() -> None:
    assert stats.median([np.nan, 3.0, 1.0]) == 2.0
    assert stats.median([]) is None and stats.share_at_or_above([], 1) is None
    s = stats.summarize([np.nan], [0], 71.0)
    assert s.tests == 0 and s.median is None
    with pytest.raises(ValueError):
        stats.percentile([1.0], 101)


def test_insufficient_rule_at_threshold() -> None:
    assert stats.has_enough(30, 30) and not stats.has_enough(29, 30)


def test_change_pct() -> None:
    assert stats.change_pct(110.0, 100.0) == pytest.approx(10.0)
    assert stats.change_pct(None, 100.0) is None and stats.change_pct(1.0, 0.0) is None


@pytest.mark.parametrize(("value", "vi", "en"), [
    (71.24, "71,2", "71.2"), (1234.56, "1.234,6", "1,234.6"), (0.0, "0,0", "0.0"),
    (1000000.0, "1.000.000,0", "1,000,000.0")])
def test_number_format(value: float, vi: str, en: str) -> None:
    assert i18n.fmt_num(value, "vi") == vi
    assert i18n.fmt_num(value, "en") == en


def test_formatting_helpers() -> None:
    assert i18n.fmt_mbps(71.2, "vi") == "71,2 Mb/s"
    assert i18n.fmt_pct(0.853, "vi") == "85,3%"
    assert i18n.fmt_change(-3.14, "vi") == "−3,1%" and i18n.fmt_change(4.2, "en") == "+4.2%"
    assert i18n.fmt_int(12345, "vi") == "12.345" and i18n.fmt_num(None, "vi") == "–"
    assert i18n.month_label(2026, 10, "vi") == "10/2026"
    assert i18n.month_label(2026, 10, "en") == "October 2026"


def test_every_string_is_nfc_in_both_languages() -> None:
    for key, pair in i18n.STRINGS.items():
        assert len(pair) == 2, key
        for text in pair:
            assert unicodedata.is_normalized("NFC", text), key
    # A decomposed input comes out composed.
    assert unicodedata.is_normalized("NFC", i18n.t("headline", "vi", province="Ha\u0300 Ti\u0303nh",
                                                   month="10/2026"))


def test_vietnamese_dictionary_order() -> None:
    names = ["Vũ Quang", "Đức Thọ", "Can Lộc", "Cẩm Xuyên", "Hương Sơn", "Hương Khê", "Ân Phú",
             "An Hòa", "Ăn Lợi", "Kỳ Anh", "Ký Anh", "Kỳ Hoa", "Ðức"]
    assert sorted(names, key=i18n.sort_key)[:3] == ["An Hòa", "Ăn Lợi", "Ân Phú"]
    order = sorted(names, key=i18n.sort_key)
    assert order.index("Can Lộc") < order.index("Cẩm Xuyên")
    assert order.index("Đức Thọ") < order.index("Hương Khê") < order.index("Hương Sơn")
    assert order.index("Kỳ Anh") < order.index("Kỳ Hoa") and order[-1] == "Vũ Quang"
    assert abs(order.index("Ðức") - order.index("Đức Thọ")) == 1


def test_month_bounds_in_local_time() -> None:
    m = Month.parse("2026-10", "Asia/Ho_Chi_Minh")
    a, b = m.bounds_ms()
    assert datetime.fromtimestamp(a / 1000, UTC) == datetime(2026, 9, 30, 17, tzinfo=UTC)
    assert datetime.fromtimestamp(b / 1000, UTC) == datetime(2026, 10, 31, 17, tzinfo=UTC)
    assert m.days() == 31 and m.prev().label == "2026-09"
    assert Month.parse("2026-12", "UTC").next().label == "2027-01"
    assert Month.parse("2026-01", "UTC").prev().label == "2025-12"


@pytest.mark.parametrize("bad", ["2026-13", "2026-00", "26-10", "2026/10", "", "1999-05",
                                 "2026-10-01"])
def test_bad_month(bad: str) -> None:
    with pytest.raises(MonthError, match=r"YYYY-MM|outside"):
        Month.parse(bad, "Asia/Ho_Chi_Minh")


def test_local_hours_fixed_and_dst_zones() -> None:
    m = Month.parse("2026-10", "Asia/Ho_Chi_Minh")
    ts = np.array([int(datetime(2026, 10, 5, 12, tzinfo=UTC).timestamp() * 1000)], np.int64)
    assert local_hours(ts, m).tolist() == [19]
    # A zone that changes offset inside the month takes the slow, exact path.
    berlin = Month.parse("2026-10", "Europe/Berlin")
    before = int(datetime(2026, 10, 20, 12, tzinfo=UTC).timestamp() * 1000)
    after = int(datetime(2026, 10, 30, 12, tzinfo=UTC).timestamp() * 1000)
    assert local_hours(np.array([before, after], np.int64), berlin).tolist() == [14, 13]


@pytest.mark.parametrize(("url", "loopback"), [
    ("http://127.0.0.1:8086", True), ("http://localhost:8086", True), ("http://[::1]:8086", True),
    ("https://influx.hatinh.example:8086", False), ("http://10.0.0.5:8086", False)])
def test_uncompressed_reads_only_on_loopback(url: str, loopback: bool) -> None:
    from collector.bulletin.data import is_loopback
    from collector.config import InfluxSettings
    from collector.core.influx import InfluxClient

    with InfluxClient(InfluxSettings(url=url)) as client:
        assert is_loopback(client) is loopback
