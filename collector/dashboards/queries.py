"""Every InfluxQL query the dashboards and alert rules run, in one place.

Dashboard queries use Grafana's macros: ``$timeFilter`` (the time picker's range),
``$__interval`` (bucket size for the panel's width) and the template variables
``$commune $isp $access $probe`` as regex filters (``=~ /^$var$/``; "All" is ``.*``).
``$commune`` holds official unit codes (tag ``commune_code``; the official name is the
option's text), so a unit's history includes its predecessors' months; there is no
district variable: districts ended on 1 July 2025 and the old-district tables are
limited to months before it. Alert rule queries use fixed relative windows
(``now() - 24h``) instead, since alerting has no time picker and no variables.

InfluxQL facts these queries lean on (verified on InfluxDB 1.6.7 by the tests):

- ``median()``/``percentile()`` are exact over the points; a median over an even count
  is the mean of the two middle values.
- "share of tests meeting the target" needs a 0/1 per test, and InfluxQL has no CASE:
  ``ceil(floor(x / T) / 1e6)`` is 0 for ``x < T`` and 1 for ``T <= x <= 1e6*T``
  (speeds are capped at 100 000 Mb/s by the contract), so ``mean()`` of it in a
  subquery is the share.
- IPv6 readiness and TSLCD reachability are the mean of the agent's 0/1 metrics
  ``ipv6_reachable`` / ``reachable`` (agent/methods/ipv6.py, reachability.py).
- a dead probe writes nothing, and a query over its results has no series for it once
  its last result leaves the window ("no data" = OK in an alert). So whether a probe is
  reporting comes from the ``registry`` measurement the collector writes every 5 minutes
  for every registered probe (collector/core/registrymetrics.py): ``results_30m`` and
  ``offline`` (last status offline), ``reporting = results_30m * (1 - offline)``.
- InfluxQL has no joins: every measurement in a query stays its own series.
- rollups (``tput_1h``, ``status_1h``, ``status_1d``; collector/core/rollups.py) are
  written by the collector, recomputed from the raw points for every hour and day a batch
  touched. Counts add up over any range, so a share meeting the target is
  ``sum(met) / sum(tests)`` over the hourly points, exact for whole hours (a point is
  stamped at its hour's start: a range starting mid-hour leaves that hour out), and needs
  no subquery. A last status of a range is the last of its daily "last status" points;
  the range is widened by a day so the day holding its start is read.
- medians and percentiles do not add up. Throughput panels therefore have two targets,
  of which one is empty: raw ``results`` for ranges under 2 days (exact), and the
  rollups (``tput_$resolution``) for longer ones: the median of every line's hourly
  (from 8 days: daily) medians, an approximation, not the median of the tests (the
  bulletin's figures are the exact ones). The hidden variable ``$resolution`` (``raw``,
  ``1h``, ``1d``) is computed by influxd from the time range (:func:`resolution_query`)
  and a target is switched off by a condition between two literals,
  ``'$resolution' = 'raw'``, which influxd reduces to false before reading any shard
  (verified: the switched-off target costs ~10 ms whatever the range).
- no hour-of-day function exists in InfluxQL 1.x and ``OR`` between time ranges
  silently returns nothing, so peak-hour medians filter on the ``local_hour`` field the
  collector writes (hour in Asia/Ho_Chi_Minh of the test's start; collector/core/schema.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time

from collector.core.registrymetrics import REGISTRY
from collector.core.rollups import (
    DEVICE_LIMITED,
    LAST_RESULT,
    LAST_RESULT_AT_MS,
    LINE_1D,
    QUAL_1H,
    QUAL_ACCESS_1H,
    QUAL_COMMUNE_1H,
    RADIO_1D,
    RADIO_LEVELS,
    STATUS_1D,
    STATUS_1H,
    SWITCH,
    SWITCH_BASE_MS,
    TPUT_1D,
    TPUT_1H,
    USAGE_1D,
)
from collector.core.schema import (
    BULLETIN_RUNS,
    LINK_USAGE,
    PROBE_STATUS,
    RESULTS,
    VIETNAM,
    influxql_string,
)
from netmon.contract import (
    LATENCY_METHODS,
    THROUGHPUT_METHODS,
)

#: 0/1 metrics those methods write on every result, failed or not.
IPV6_METRIC = "ipv6_reachable"
REACHABILITY_METRIC = "reachable"
#: Field holding the test's start hour in local time (0-23); see module docstring.
LOCAL_HOUR_FIELD = "local_hour"
#: Speeds above this are rejected by the contract; the 0/1 trick needs x <= 1e6 * T.
_INDICATOR_SCALE = 1_000_000

#: Template variables, in dashboard order.
VARIABLES = ("commune", "isp", "access", "probe")
#: The tag key each variable filters.
VARIABLE_TAGS = {"commune": "commune_code", "isp": "isp", "access": "access", "probe": "probe"}
#: Which variables can filter which measurement (tags it carries).
_MEASUREMENT_VARS = {
    RESULTS: ("commune", "isp", "access", "probe"),
    PROBE_STATUS: ("commune", "probe"),
    LINK_USAGE: ("commune", "isp", "access", "probe"),
    REGISTRY: ("commune", "probe"),
    TPUT_1H: ("commune", "isp", "access", "probe"),
    TPUT_1D: ("commune", "isp", "access", "probe"),
    STATUS_1H: ("commune", "probe"),
    STATUS_1D: ("commune", "probe"),
    QUAL_1H: ("commune", "isp", "access", "probe"),
    LINE_1D: ("commune", "isp", "access", "probe"),
    LAST_RESULT: ("commune", "isp", "access", "probe"),
    USAGE_1D: ("commune", "isp", "access", "probe"),
    RADIO_1D: ("commune", "isp", "access", "probe"),
    QUAL_ACCESS_1H: ("access",),
    QUAL_COMMUNE_1H: ("commune", "access"),
}
#: The commune variable lists the ``unit`` tag of ``registry`` ("18754 Phường Sông Trí");
#: this regex (Grafana's named groups, 7.4+) makes the code the value, the name the text.
COMMUNE_VARIABLE_REGEX = "/^(?<value>[0-9]{5}) (?<text>.+)$/"
#: A unit by its code and official name: how areas are grouped.
UNIT = ("commune_code", "commune")

TIME = "$timeFilter"
#: The time range widened by a day at its start, for ``*_1d`` points (stamped at the
#: start of their local day). ``${__from}``/``${__to}``: Grafana's range in epoch ms.
DAY_WIDE_TIME = "time >= ${__from}ms - 1d AND time <= ${__to}ms"
#: Rollup fields: tests meeting the access type's 2025 target, and the 2030 fixed one.
MET, MET_2030 = "met", "met_2030"
OK = "\"status\" = 'ok'"
#: Tests run while the office line carried other traffic measure the office, not the ISP;
#: the bulletin excludes them too (docs/methodology.md).
CLEAN = "\"cross_traffic\" = 0"

#: The hidden variable naming where the throughput panels read: ``raw`` (``results``),
#: ``1h`` or ``1d`` (``tput_1h``/``tput_1d``); see :func:`resolution_query`.
RESOLUTION = "resolution"
RAW, HOURLY, DAILY = "raw", "1h", "1d"
#: The throughput rollup of the current resolution (only read when it is not raw).
TPUT_SWITCHED = f"tput_${RESOLUTION}"
#: The quality rollup of the current resolution (only read when it is not raw).
QUAL_SWITCHED = f"qual_${RESOLUTION}"
#: The per-access quality rollup of the current resolution (only read when it is not raw
#: and no commune, ISP or probe is chosen).
QUAL_ACCESS_SWITCHED = f"qual_access_${RESOLUTION}"
#: Conditions between two literals (influxd reduces them before reading any shard, as the
#: resolution's): true when commune, ISP and probe are all "All" (``.*``, Grafana's custom
#: all value, which it inserts unformatted whatever the format), and the negation. The
#: values are percent-encoded (Grafana's ``percentencode``: no quote or backslash can end
#: up in the literal; a chosen value is never ``.*``).
def _all_chosen(*names: str) -> tuple[str, str]:
    """(every variable in ``names`` is "All", at least one is not): literal conditions."""
    chosen = "".join(f"${{{v}:percentencode}}" for v in names)
    every = ".*" * len(names)
    return f"'{chosen}' = '{every}'", f"'{chosen}' != '{every}'"


EVERY_LINE, SOME_LINES = _all_chosen("commune", "isp", "probe")
#: The per-unit quality rollup of the current resolution (no ISP or probe chosen).
QUAL_COMMUNE_SWITCHED = f"qual_commune_${RESOLUTION}"
EVERY_ISP_PROBE, SOME_ISP_PROBE = _all_chosen("isp", "probe")
#: Rollup field holding each metric's median.
ROLLUP_MEDIAN = {"download_mbps": "median_mbps", "upload_mbps": "upload_median_mbps",
                 "rtt_ms": "rtt_median_ms", "jitter_ms": "jitter_median_ms",
                 "loaded_rtt_ms": "loaded_rtt_median_ms", "idle_rtt_ms": "idle_rtt_median_ms"}

#: Silent-probe window: 7 buckets of 5 min = at least 30 min, at most 35 min.
#: The ``registry`` points the probe-health queries read (written every 5 minutes).
REGISTRY_WINDOW = "15m"


def q(name: str) -> str:
    """A double-quoted identifier."""
    return '"' + name.replace('"', '\\"') + '"'


#: A single-quoted string literal (short: queries below use it everywhere).
s = influxql_string


def num(value: float) -> str:
    """A number literal without a useless ``.0``."""
    return f"{value:g}" if float(value).is_integer() else repr(float(value))


def var_filters(measurement: str = RESULTS) -> list[str]:
    """``"tag" =~ /^$tag$/`` for every template variable the measurement can be filtered by."""
    return [f"{q(VARIABLE_TAGS[var])} =~ /^${var}$/" for var in _MEASUREMENT_VARS[measurement]]


def methods(names: Sequence[str]) -> str:
    """A condition selecting these methods."""
    if len(names) == 1:
        return f"{q('method')} = {s(names[0])}"
    return f"{q('method')} =~ /^({'|'.join(names)})$/"


def where(*conds: str) -> str:
    """``WHERE a AND b ...``."""
    return "WHERE " + " AND ".join(conds)


def resolution_query() -> str:
    """The ``resolution`` variable's query: the collector's ``rollup_switch`` points sit at
    a fixed instant plus the shortest range each resolution serves
    (collector/core/rollups.py, ``SWITCH_STEPS``), so the last one at or before that
    instant plus the range's length is the resolution. Grafana substitutes
    ``${__from}``/``${__to}`` (epoch ms) in variable queries too; influxd does the
    arithmetic."""
    return (f"SELECT last({q(RESOLUTION)}) FROM {q(SWITCH)} "
            f"WHERE time <= {SWITCH_BASE_MS}ms + ${{__to}}ms - ${{__from}}ms")


def at(resolution: str, negate: bool = False) -> str:
    """A condition true only at (or, with ``negate``, at any but) that resolution."""
    return f"'${RESOLUTION}' {'!=' if negate else '='} {s(resolution)}"


#: A raw target's switch, and a rollup target's.
RAW_ONLY, ROLLUP_ONLY = at(RAW), at(RAW, negate=True)


def _throughput(access: str | None) -> list[str]:
    conds = [methods(THROUGHPUT_METHODS), OK, CLEAN]
    if access:
        conds.append(f"{q('access')} = {s(access)}")
    return conds


def _group(tags: Sequence[str]) -> str:
    return ", ".join(q(t) for t in tags)


# ----------------------------------------------------------------- throughput


def median_speed(access: str | None, metric: str = "download_mbps",
                 group: Sequence[str] = (), extra: Sequence[str] = (),
                 switched: bool = True) -> str:
    """Median of a throughput metric over the time range from the raw points, optionally
    per tag; ``switched``: only at the raw resolution (:func:`rollup_median` otherwise)."""
    sql = (f"SELECT median({q(metric)}) FROM {q(RESULTS)} "
           f"{where(*_throughput(access), *extra, *var_filters(), TIME)}")
    sql += f" AND {RAW_ONLY}" if switched else ""
    return sql + (f" GROUP BY {_group(group)}" if group else "")


def _rollup_where(access: str | None) -> str:
    conds = [f"{q('access')} = {s(access)}"] if access else []
    return where(*conds, *var_filters(TPUT_1H), TIME, ROLLUP_ONLY)


def rollup_median(access: str | None, metric: str = "download_mbps",
                  group: Sequence[str] = ()) -> str:
    """:func:`median_speed` from the rollups, at the hourly and daily resolutions: the
    median of the lines' hourly (daily) medians, not of the tests."""
    sql = (f"SELECT median({q(ROLLUP_MEDIAN[metric])}) AS {q('median')} "
           f"FROM {q(TPUT_SWITCHED)} {_rollup_where(access)}")
    return sql + (f" GROUP BY {_group(group)}" if group else "")


def peak_median(access: str, start_hour: int, end_hour: int) -> str:
    """Median download over tests started in [start_hour, end_hour) local time."""
    hours = [f"{q(LOCAL_HOUR_FIELD)} >= {start_hour}", f"{q(LOCAL_HOUR_FIELD)} < {end_hour}"]
    return median_speed(access, extra=hours)


def _line_day_where(access: str) -> str:
    return where(f"{q('access')} = {s(access)}", *var_filters(LINE_1D), TIME, ROLLUP_ONLY)


def rollup_peak_median(access: str) -> str:
    """:func:`peak_median` from the line-day rollups (the collector's peak hours, the same
    ``[bulletin]`` settings): the median of the lines' daily peak-hour medians, also at
    the hourly resolution (2 to 8 days)."""
    return (f"SELECT median({q('peak_median_mbps')}) AS {q('median')} FROM {q(LINE_1D)} "
            f"{_line_day_where(access)}")


def met_indicator(target_mbps: float, metric: str = "download_mbps") -> str:
    """A 0/1 expression: 1 when the metric meets the target (see module docstring)."""
    return f"ceil(floor({q(metric)} / {num(target_mbps)}) / {_INDICATOR_SCALE})"


def share_meeting(access: str, target_mbps: float, group: Sequence[str] = (),
                  extra: Sequence[str] = ()) -> str:
    """Percent of successful throughput tests whose download met the target."""
    by = f" GROUP BY {_group(group)}" if group else ""
    inner = (f"SELECT {met_indicator(target_mbps)} AS {q('met')} FROM {q(RESULTS)} "
             f"{where(*_throughput(access), *var_filters(), TIME, *extra)}{by}")
    return f"SELECT mean({q('met')}) * 100 AS {q('share_pct')} FROM ({inner}){by}"


def share_at_target(access: str, met_field: str = MET, group: Sequence[str] = (),
                    extra: Sequence[str] = (), daily: bool = False) -> str:
    """Percent of successful throughput tests on an idle line meeting the target, from the
    hourly rollups (or, with ``daily``, the daily ones: only at the daily resolution, the
    hourly query at every other): ``met`` (the access type's 2025 target) or
    ``met_2030``. Exact at either resolution for whole hours (days)."""
    by = f" GROUP BY {_group(group)}" if group else ""
    is_access = f"{q('access')} = {s(access)}"
    measurement, switch = (TPUT_1D, at(DAILY)) if daily else (TPUT_1H, at(DAILY, True))
    return (f"SELECT sum({q(met_field)}) / sum({q('tests')}) * 100 AS {q('share_pct')} "
            f"FROM {q(measurement)} "
            f"{where(is_access, *var_filters(TPUT_1H), TIME, *extra, switch)}{by}")


def _per_bucket(agg: str, metric: str, conds: Sequence[str]) -> str:
    """``agg(metric)`` per time bucket, one series per access type."""
    return (f"SELECT {agg}({q(metric)}) FROM {q(RESULTS)} "
            f"{where(*conds, *var_filters(), TIME)} "
            f"GROUP BY time($__interval), {q('access')} fill(none)")


def speed_trend(metric: str = "download_mbps") -> str:
    """Median per time bucket, one series per access type (raw resolution only)."""
    return _per_bucket("median", metric, (*_throughput(None), RAW_ONLY))


def rollup_trend(metric: str = "download_mbps") -> str:
    """:func:`speed_trend` from the rollups: the median of the lines' hourly (daily)
    medians in each bucket (a daily point lands in the bucket holding its local
    midnight)."""
    return (f"SELECT median({q(ROLLUP_MEDIAN[metric])}) AS {q('median')} "
            f"FROM {q(TPUT_SWITCHED)} {_rollup_where(None)} "
            f"GROUP BY time($__interval), {q('access')} fill(none)")


def area_table(access: str, group: Sequence[str]) -> str:
    """Median, 10th percentile and test count of download per area (table format; raw
    resolution only)."""
    return (f"SELECT median({q('download_mbps')}) AS {q('median_mbps')}, "
            f"percentile({q('download_mbps')}, 10) AS {q('p10_mbps')}, "
            f"count({q('download_mbps')}) AS {q('tests')} FROM {q(RESULTS)} "
            f"{where(*_throughput(access), *var_filters(), TIME, RAW_ONLY)} "
            f"GROUP BY {_group(group)}")


def rollup_area_table(access: str, group: Sequence[str]) -> str:
    """:func:`area_table` from the rollups: the median and the 10th percentile of the
    lines' hourly (daily) medians, and the number of tests (exact: counts add up)."""
    return (f"SELECT median({q('median_mbps')}) AS {q('median_mbps')}, "
            f"percentile({q('median_mbps')}, 10) AS {q('p10_mbps')}, "
            f"sum({q('tests')}) AS {q('tests')} FROM {q(TPUT_SWITCHED)} "
            f"{_rollup_where(access)} GROUP BY {_group(group)}")


def before(day: date) -> str:
    """``time < <local midnight of day>``: the months before a reorganisation took effect."""
    start = datetime.combine(day, time(0), VIETNAM)
    return f"time < {s(start.astimezone(UTC).isoformat().replace('+00:00', 'Z'))}"


def legacy_area_table(access: str, effective: date) -> str:
    """Median, p10 and tests per OLD district, for months before ``effective`` only
    (the "before the reorganisation" view; the ``district`` tag is the site's old
    district)."""
    return (f"SELECT median({q('download_mbps')}) AS {q('median_mbps')}, "
            f"percentile({q('download_mbps')}, 10) AS {q('p10_mbps')}, "
            f"count({q('download_mbps')}) AS {q('tests')} FROM {q(RESULTS)} "
            f"{where(*_throughput(access), *var_filters(), TIME, before(effective))} "
            f"GROUP BY {q('district')}")


def probe_map(access: str) -> str:
    """Median download per probe with its coordinates (for the geomap)."""
    return (f"SELECT median({q('download_mbps')}) AS {q('median_mbps')}, "
            f"count({q('download_mbps')}) AS {q('tests')}, "
            f"last({q('latitude')}) AS {q('latitude')}, "
            f"last({q('longitude')}) AS {q('longitude')} FROM {q(RESULTS)} "
            f"{where(*_throughput(access), *var_filters(), TIME, RAW_ONLY)} "
            f"GROUP BY {_group(('probe', *UNIT))}")


def rollup_probe_map(access: str) -> str:
    """:func:`probe_map` from the line-day rollups: the median of the probe's daily
    medians (also at the hourly resolution), exact test counts."""
    return (f"SELECT median({q('median_mbps')}) AS {q('median_mbps')}, "
            f"sum({q('tests')}) AS {q('tests')}, "
            f"last({q('latitude')}) AS {q('latitude')}, "
            f"last({q('longitude')}) AS {q('longitude')} FROM {q(LINE_1D)} "
            f"{_line_day_where(access)} GROUP BY {_group(('probe', *UNIT))}")


# ----------------------------------------------------------------- probe and radio limits

def device_limited_table() -> str:
    """Per access type: throughput tests limited by the probe (its interface's ceiling or
    a saturated CPU), and all throughput tests, over the time range."""
    return (f"SELECT count({q('download_mbps')}) AS {q('limited')} FROM {q(RESULTS)} "
            f"{where(methods(THROUGHPUT_METHODS), OK, DEVICE_LIMITED, *var_filters(), TIME)} "
            f"AND {RAW_ONLY} GROUP BY {q('access')}")


def rollup_device_limited_table() -> str:
    """:func:`device_limited_table` from the quality rollups (exact: counts add up)."""
    return (f"SELECT sum({q('device_limited')}) AS {q('limited')} FROM {q(QUAL_SWITCHED)} "
            f"{where(*var_filters(QUAL_1H), TIME, ROLLUP_ONLY)} GROUP BY {q('access')}")


def radio_scatter(x_metric: str) -> str:
    """Mobile download results next to one radio level, one row per test, the level
    first (Grafana's XY chart maps the first numeric field to X); raw resolution only."""
    return (f"SELECT {q(x_metric)}, {q('download_mbps')} FROM {q(RESULTS)} "
            f"{where(*_throughput('mobile'), f'{q(x_metric)} > -1000', *var_filters(), TIME)}"
            f" AND {RAW_ONLY}")


#: Dots per mobile line in a radio scatter plot at most (the panel's max data points):
#: one per line and day up to this many days, coarser buckets beyond.
RADIO_DOTS_PER_LINE = 30


def rollup_radio_scatter(x_metric: str) -> str:
    """:func:`radio_scatter` from the daily radio rollups (at the hourly resolution too):
    one row per mobile line and ``$__interval`` (a day, up to :data:`RADIO_DOTS_PER_LINE`
    days; longer ranges: range / that many), the median of its days' level medians next
    to the median of their download medians, under the raw query's column names; a
    year is then ~30 dots per line, not 365."""
    name, unit = RADIO_LEVELS[x_metric]
    level, down, tests = f"{name}_median_{unit}", f"{name}_download_median_mbps", \
        f"{name}_tests"
    return (f"SELECT median({q(level)}) AS {q(x_metric)}, median({q(down)}) AS "
            f"{q('download_mbps')} FROM {q(RADIO_1D)} "
            f"{where(*var_filters(RADIO_1D), f'{q(tests)} > 0', TIME, ROLLUP_ONLY)} "
            f"GROUP BY time($__interval), {q('probe')}, {q('link')} fill(none)")


# ----------------------------------------------------------------- quality


def latency_trend(metric: str) -> str:
    """Median of a latency metric per bucket and access type (latency methods)."""
    return _per_bucket("median", metric, (methods(LATENCY_METHODS), OK, RAW_ONLY))


def loss_trend() -> str:
    """Mean packet loss per bucket and access type."""
    return _per_bucket("mean", "loss_pct", (methods(LATENCY_METHODS), OK, RAW_ONLY))


def loaded_latency_trend(metric: str) -> str:
    """Median RTT under load / idle (written by throughput tests that measure it)."""
    return _per_bucket("median", metric, (OK, RAW_ONLY))


def _qual_per_bucket(select: str, per_access: bool) -> str:
    if per_access:
        measurement, conds = QUAL_ACCESS_SWITCHED, [*var_filters(QUAL_ACCESS_1H), EVERY_LINE]
    else:
        measurement, conds = QUAL_SWITCHED, [*var_filters(QUAL_1H), SOME_LINES]
    return (f"SELECT {select} FROM {q(measurement)} "
            f"{where(*conds, TIME, ROLLUP_ONLY)} "
            f"GROUP BY time($__interval), {q('access')} fill(none)")


def rollup_latency_trend(metric: str, per_access: bool = False) -> str:
    """:func:`latency_trend` / :func:`loaded_latency_trend` from the quality rollups: the
    median of the lines' hourly (daily) medians in each bucket. Read from every line's
    points when a commune, ISP or probe is chosen; with ``per_access``, the target for
    "All" of them, from the per-access points (``qual_access_*``: the same medians,
    already taken over the lines; the same figure in every bucket holding at most one
    hour (day))."""
    return _qual_per_bucket(f"median({q(ROLLUP_MEDIAN[metric])}) AS {q('median')}",
                            per_access)


def rollup_loss_trend(per_access: bool = False) -> str:
    """:func:`loss_trend` from the quality rollups (exact: a sum over a count); with
    ``per_access`` from the per-access points (exact too), as :func:`rollup_latency_trend`."""
    return _qual_per_bucket(f"sum({q('loss_sum')}) / sum({q('loss_tests')}) AS {q('mean')}",
                            per_access)


def readiness_share(method: str, metric: str, group: Sequence[str], pct_name: str) -> str:
    """Percent of a method's tests whose 0/1 ``metric`` is 1 (``ipv6_reachable``,
    ``reachable``), per area. The agent writes the metric on failed tests too; a test
    that failed for another reason (tool missing, internal) carries no metric and is
    not counted either way."""
    return (f"SELECT mean({q(metric)}) * 100 AS {q(pct_name)}, count({q(metric)}) AS {q('tests')} "
            f"FROM {q(RESULTS)} {where(methods((method,)), *var_filters(), TIME, RAW_ONLY)} "
            f"GROUP BY {_group(group)}")


#: The quality rollups' (ones, tests) fields of each readiness metric.
READINESS_FIELDS = {"ipv6_reachable": ("ipv6_ready", "ipv6_tests"),
                    "reachable": ("tslcd_reachable", "tslcd_tests")}


def rollup_readiness_share(metric: str, group: Sequence[str], pct_name: str,
                           per_commune: bool = False) -> str:
    """:func:`readiness_share` from the quality rollups (exact: sums of 0/1 over counts):
    every line's points when an ISP or probe is chosen; with ``per_commune``, the target
    for "All" of them, from the per-unit points (``qual_commune_*``: ``group`` must be
    among their tags, the unit's)."""
    ones, tests = READINESS_FIELDS[metric]
    if per_commune:
        measurement, conds = QUAL_COMMUNE_SWITCHED, [*var_filters(QUAL_COMMUNE_1H),
                                                     EVERY_ISP_PROBE]
    else:
        measurement, conds = QUAL_SWITCHED, [*var_filters(QUAL_1H), SOME_ISP_PROBE]
    return (f"SELECT sum({q(ones)}) / sum({q(tests)}) * 100 AS {q(pct_name)}, "
            f"sum({q(tests)}) AS {q('tests')} FROM {q(measurement)} "
            f"{where(*conds, TIME, ROLLUP_ONLY)} GROUP BY {_group(group)}")


# ----------------------------------------------------------------- probe health


def _last_per_probe(field: str, alias: str) -> str:
    return (f"SELECT last({q(field)}) AS {q(alias)} FROM {q(STATUS_1D)} "
            f"{where(*var_filters(STATUS_1D), DAY_WIDE_TIME)} GROUP BY {q('probe')}")


def probes_online() -> str:
    """How many probes were online at their last status."""
    inner = _last_per_probe("online", "online")
    return f"SELECT sum({q('online')}) AS {q('online')} FROM ({inner})"


def probes_offline() -> str:
    """How many probes were offline at their last status."""
    return (f"SELECT count({q('online')}) - sum({q('online')}) AS {q('offline')} "
            f"FROM ({_last_per_probe('online', 'online')})")


def clocks_unsynced() -> str:
    """How many probes reported an unsynchronised clock last."""
    return (f"SELECT count({q('synced')}) - sum({q('synced')}) AS {q('unsynced')} "
            f"FROM ({_last_per_probe('clock_synced', 'synced')})")


def probe_table() -> str:
    """The last status of every probe, with its fleet health (issue 18): agent version,
    board, the last update event and failed versions, the oldest waiting result."""
    cols = ", ".join(f"last({q(f)}) AS {q(f)}" for f in
                     ("online", "clock_synced", "spool_depth", "oldest_waiting_ms",
                      "spool_evicted", "config_version", "agent_version", "board_model",
                      "update_event", "update_failed"))
    return (f"SELECT {cols} FROM {q(STATUS_1D)} "
            f"{where(*var_filters(STATUS_1D), DAY_WIDE_TIME)} "
            f"GROUP BY {_group(('probe', *UNIT))}")


#: The one instant of the ``last_result`` points, as a time condition.
LAST_RESULT_TIME = f"time >= {LAST_RESULT_AT_MS}ms AND time <= {LAST_RESULT_AT_MS}ms"


def last_seen() -> str:
    """When each probe's latest result started (``last_ms``, epoch ms), from the
    ``last_result`` points (one per line, all at one instant: collector/core/rollups.py):
    the latest ever, whatever the time range, so a probe silent for months is listed too."""
    return (f"SELECT max({q('last_ms')}) AS {q('last_ms')} FROM {q(LAST_RESULT)} "
            f"{where(*var_filters(LAST_RESULT), LAST_RESULT_TIME)} "
            f"GROUP BY {q('probe')}")


#: Points per probe in the spool depth panel at most (its max data points): an hour each
#: up to 4 days, a day each up to 100 days, longer buckets beyond (each the maximum).
SPOOL_POINTS = 100


def spool_trend(daily: bool = False) -> str:
    """Spool depth per probe over time: the hourly maximum from the status rollups, or
    with ``daily`` the daily one (only at the daily resolution; the hourly query at
    every other)."""
    measurement, switch = (STATUS_1D, at(DAILY)) if daily else (STATUS_1H, at(DAILY, True))
    return (f"SELECT max({q('spool_max')}) FROM {q(measurement)} "
            f"{where(*var_filters(measurement), TIME, switch)} "
            f"GROUP BY time($__interval), {q('probe')} fill(none)")


def data_budget() -> str:
    """Data used this month against the budget, per probe and link: the last of the
    daily ``usage_1d`` points (the last usage of each day; the range widened by a day,
    as the last status table)."""
    return (f"SELECT last({q('used_pct')}) AS {q('used_pct')}, "
            f"last({q('used_bytes')}) AS {q('used_bytes')}, "
            f"last({q('budget_bytes')}) AS {q('budget_bytes')} FROM {q(USAGE_1D)} "
            f"{where(*var_filters(USAGE_1D), DAY_WIDE_TIME)} "
            f"GROUP BY {_group(('probe', 'link', 'isp'))}")


def _reporting(extra: Sequence[str]) -> str:
    """Per registered probe (``registry`` points of the last 15 minutes): ``reporting`` =
    results in the last 30 minutes, or 0 when its last status is offline."""
    return (f"SELECT last({q('results_30m')}) * (1 - last({q('offline')})) AS {q('reporting')}, "
            f"last({q('results_30m')}) AS {q('results_30m')}, "
            f"last({q('offline')}) AS {q('offline')} FROM {q(REGISTRY)} "
            f"{where(*extra, f'time > now() - {REGISTRY_WINDOW}')} "
            f"GROUP BY {_group(('probe', *UNIT))}")


def silent_probes() -> str:
    """Registered probes not reporting: no result in 30 minutes, or offline status.

    The window is fixed to "now", whatever the time picker says: silence is a now-thing.
    A probe silent for weeks stays listed until it is removed from the registry.
    """
    return (f"SELECT {q('reporting')}, {q('results_30m')}, {q('offline')} "
            f"FROM ({_reporting(var_filters(REGISTRY))}) "
            f"WHERE {q('reporting')} = 0 GROUP BY {_group(('probe', *UNIT))}")


# ----------------------------------------------------------------- alert rules


def alert_probe_down() -> str:
    """Alert: ``reporting`` per registered probe (fires when 0: silent or offline)."""
    return _reporting(())


def alert_commune_median(access: str) -> str:
    """Alert: median download per commune over the last 24 hours."""
    return (f"SELECT median({q('download_mbps')}) FROM {q(RESULTS)} "
            f"{where(*_throughput(access), 'time > now() - 24h')} "
            f"GROUP BY {_group(UNIT)}")


def alert_loss() -> str:
    """Alert: mean loss per probe and link over the last 30 minutes."""
    return (f"SELECT mean({q('loss_pct')}) FROM {q(RESULTS)} "
            f"{where(methods(LATENCY_METHODS), OK, 'time > now() - 30m')} "
            f"GROUP BY {_group(('probe', 'link'))}")


def alert_spool_growth() -> str:
    """Alert: spool depth change per probe over the last hour."""
    return (f"SELECT last({q('spool_depth')}) - first({q('spool_depth')}) AS {q('growth')} "
            f"FROM {q(PROBE_STATUS)} WHERE time > now() - 1h GROUP BY {q('probe')}")


def alert_old_agent(version: str) -> str:
    """Alert: probes whose online statuses of the last 30 minutes name another agent
    version than ``version`` (one series per such probe; the rule's pending period is
    the "for more than" time)."""
    literal = version.replace("\\", "").replace("'", "")
    return (f"SELECT count({q('online')}) AS {q('statuses')} FROM {q(PROBE_STATUS)} "
            f"WHERE {q('agent_version')} != '{literal}' AND {q('online')} = 1 "
            f"AND time > now() - 30m GROUP BY {q('probe')}")


def alert_bulletin_failed() -> str:
    """Alert: the last scheduled bulletin run per edition (``ok`` 0 = it failed after its
    retries; collector/bulletin/editions.py) over the last 40 days."""
    return (f"SELECT last({q('ok')}) FROM {q(BULLETIN_RUNS)} WHERE time > now() - 40d "
            f"GROUP BY {q('edition')}")


def variable_query(name: str) -> str:
    """``SHOW TAG VALUES`` for a variable. The commune list comes from the ``registry``
    points (``unit`` = code and name); probes follow the chosen communes."""
    if name == "commune":
        return f"SHOW TAG VALUES FROM {q(REGISTRY)} WITH KEY = {q('unit')}"
    sql = f"SHOW TAG VALUES FROM {q(RESULTS)} WITH KEY = {q(VARIABLE_TAGS[name])}"
    if name == "probe":
        sql += " " + where(f"{q('commune_code')} =~ /^$commune$/")
    return sql
