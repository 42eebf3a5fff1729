"""Generate one month's bulletin files: fetch, compute, chart, render."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfoNotFoundError

from collector.bulletin import charts, compute, data, packread, pdf, render
from collector.bulletin import reference as reference_mod
from collector.bulletin.gcpause import gc_paused
from collector.bulletin.i18n import Lang
from collector.config import CollectorConfig, unit_map
from collector.core.influx import InfluxClient, InfluxError
from collector.core.registry import Registry, RegistryError
from collector.core.units import UnitMap
from netmon import contract
from netmon.errors import EXIT_INPUT, NetmonError
from netmon.fsutil import atomic_write
from netmon.settings import ConfigError


class BulletinInputError(NetmonError, ValueError):
    """Bad input from the user (month, InfluxDB unreachable, output folder): exit code 2."""

    exit_code = EXIT_INPUT


@dataclass
class BulletinResult:
    """What was written, and how long each stage took."""

    month: str
    lang: Lang
    has_data: bool
    files: dict[str, Path]
    report: compute.Report
    timings_s: dict[str, float] = field(default_factory=dict)
    #: Which local days were read from the rollups' day packs, which from raw points.
    sources: packread.Sources = field(default_factory=packread.Sources)


def _inputs(cfg: CollectorConfig) -> tuple[UnitMap, Registry,
                                            list[reference_mod.ReferenceMedian]]:
    """The reference map, the site registry and the i-Speed rows, or a clear error.

    The registry is required: results written before ``commune_code`` existed are placed
    on today's map through it, and units without a probe are named from it.
    """
    try:
        units = unit_map(cfg)
        registry = Registry(cfg.registry.path, units=units)
    except ConfigError as exc:
        raise BulletinInputError("; ".join(exc.problems)) from None
    except RegistryError as exc:
        raise BulletinInputError(f"registry.path: {exc.report()}") from None
    ref: list[reference_mod.ReferenceMedian] = []
    if cfg.bulletin.reference_file is not None:
        try:
            ref = reference_mod.load_reference(cfg.bulletin.reference_file)
        except reference_mod.ReferenceError as exc:
            raise BulletinInputError(str(exc)) from None
    return units, registry, ref


def generate(cfg: CollectorConfig, month_text: str, out_dir: Path, lang: Lang | None = None,
             formats: tuple[str, ...] = ("html", "pdf", "csv"),
             now: datetime | None = None, *,
             edition: Callable[[compute.Report], render.EditionNote] | None = None,
             trend_csv: Callable[[str], Path] | None = None) -> BulletinResult:
    """Write ``bulletin-YYYY-MM.{html,pdf,csv}`` and the chart PNGs into ``out_dir``.

    ``edition`` (collector/bulletin/editions.py) is called with the computed report and
    names the edition: in the file names (``bulletin-YYYY-MM-<name>.*``) and on the first
    page. ``trend_csv`` maps an earlier month (``YYYY-MM``) to the CSV of its published
    bulletin (default: ``bulletin-YYYY-MM.csv`` in ``out_dir``).

    Raises :class:`BulletinInputError` for a bad month, an unreachable InfluxDB or an
    unusable output folder; :class:`collector.influx.InfluxError` for query failures.
    """
    # Every stage allocates objects that live until it ends (decoded answers, report rows,
    # WeasyPrint's boxes): the cyclic collector would traverse them again and again for
    # little (gcpause.py); one collection after the fetch frees what matters.
    with gc_paused():
        return _generate(cfg, month_text, out_dir, lang, formats, now, edition=edition,
                         trend_csv=trend_csv)


def _generate(cfg: CollectorConfig, month_text: str, out_dir: Path, lang: Lang | None,
              formats: tuple[str, ...], now: datetime | None, *,
              edition: Callable[[compute.Report], render.EditionNote] | None,
              trend_csv: Callable[[str], Path] | None) -> BulletinResult:
    lang = lang or cfg.bulletin.language
    try:
        month = data.Month.parse(month_text, cfg.bulletin.timezone)
        month.start()
    except data.MonthError as exc:
        raise BulletinInputError(str(exc)) from None
    except (ZoneInfoNotFoundError, ValueError):
        raise BulletinInputError(f"bulletin.timezone {cfg.bulletin.timezone!r} is not a known "
                                 "time zone (e.g. Asia/Ho_Chi_Minh)") from None
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BulletinInputError(f"--out {out_dir}: cannot create folder ({exc.strerror})"
                                 ) from None
    units, registry, reference = _inputs(cfg)
    place = data.Placement(units, registry)
    registered = place.probes_by_unit(month.bounds_ms()[1] - 1)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with InfluxClient(cfg.influxdb) as client:
        if not client.ping():
            raise BulletinInputError(
                f"InfluxDB at {cfg.influxdb.url} is unreachable (influxdb.url in the config)")
        try:
            start_ms, end_ms = month.bounds_ms()
            # First: its per-day counts say which days the rollups' day packs hold.
            activity = data.fetch_activity(client, month, place)
            lines = data.Lines()
            tput, sources = packread.fetch_throughput(client, month, lines, place, activity,
                                                      use_packs=cfg.bulletin.day_packs)
            lat_lines = data.Lines()
            lat = data.fetch_tests(client, start_ms, end_ms, contract.LATENCY_METHODS,
                                   data.LATENCY_FIELDS, lat_lines, place)
            ipv6 = data.fetch_commune_counts(client, start_ms, end_ms, contract.IPV6_METHOD,
                                             place)
            reach = data.fetch_commune_counts(client, start_ms, end_ms,
                                              contract.REACHABILITY_METHOD, place)
            # The 11 months before this one: from earlier bulletins' CSVs in --out when
            # there (published figures, kept after retention drops the points), else from
            # InfluxDB (one scan per month, none before its first throughput result); this
            # month is computed below.
            earlier = [month.prev()]
            for _ in range(10):
                earlier.insert(0, earlier[0].prev())
            published = {m: trend_csv(m.label) if trend_csv else
                         out_dir / f"bulletin-{m.label}.csv" for m in earlier}
            trend: list[data.TrendPoint] = []
            missing = []
            for m in earlier:
                pts = render.read_trend_csv(published[m], m.label)
                if pts:
                    trend += pts
                else:
                    missing.append(m)
            first = data.first_throughput_ms(client, earlier[0].bounds_ms()[0], start_ms)
            stored = [m for m in earlier if first is not None and m.bounds_ms()[1] > first]
            trend += data.fetch_trend(client, [m for m in missing if m in stored],
                                      frozenset({month.prev().label}))
            # Each unit's months, its predecessors' included (placed through the registry):
            # as published by that month's bulletin when made on this map, else computed.
            unit_trend: list[data.UnitTrendPoint] = []
            unit_missing = []
            for m in stored:
                got = render.read_unit_trend_csv(published[m], m.label, units.units)
                if got is None:
                    unit_missing.append(m)
                else:
                    unit_trend += got
            unit_trend += data.fetch_unit_trend(client, unit_missing, place)
        except InfluxError as exc:
            if exc.status in (401, 403):
                raise BulletinInputError(
                    f"InfluxDB at {cfg.influxdb.url} refused the credentials "
                    "(influxdb.username / password_file / token_file in the config)") from None
            if exc.status == 404 or "database not found" in str(exc):
                raise BulletinInputError(f"InfluxDB database {cfg.influxdb.database!r} not "
                                         f"found (influxdb.database in the config)") from None
            raise
    # The fetch leaves reference cycles (httpx's requests and responses among them) that
    # hold the answers' bodies and decoded strings, ~140 MiB for a month of 1,000 probes:
    # free them once, now, before compute and the PDF add their own peak.
    gc.collect()
    timings["fetch"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    rep = compute.build_report(month, lines, tput, lat, lat_lines, ipv6, reach, trend,
                               cfg.bulletin, cfg.targets, now=now or datetime.now(UTC),
                               units=units, registered=registered, unit_trend=unit_trend,
                               activity=activity,
                               reference=reference_mod.for_month(reference, month.label))
    # The raw arrays are no longer needed: free them before charts and PDF peak.
    del tput, lat, lines, lat_lines
    timings["compute"] = time.perf_counter() - t1
    files: dict[str, Path] = {}
    note = edition(rep) if edition else None
    stem = f"bulletin-{month.label}-{note.name}" if note else f"bulletin-{month.label}"
    t2 = time.perf_counter()
    chart_files = charts.render_all(rep, lang, out_dir)
    for key, name in chart_files.items():
        files[f"chart_{key}"] = out_dir / name
    timings["charts"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    html = render.render_html(rep, lang, chart_files, cfg.bulletin.expected_tests_per_day,
                              edition=note)
    if "html" in formats:
        files["html"] = out_dir / f"{stem}.html"
        atomic_write(files["html"], html, mode=0o644)  # served as is by the web server
    if "csv" in formats:
        files["csv"] = out_dir / f"{stem}.csv"
        render.write_csv(rep, files["csv"])
    timings["render"] = time.perf_counter() - t3
    if "pdf" in formats:
        t4 = time.perf_counter()
        files["pdf"] = out_dir / f"{stem}.pdf"
        pdf.html_to_pdf(html, out_dir, files["pdf"])
        timings["pdf"] = time.perf_counter() - t4
    timings["total"] = time.perf_counter() - t0
    return BulletinResult(month.label, lang, rep.has_data, files, rep, timings, sources)
