"""Render the report model: HTML (Jinja2 templates in ``templates/``) and CSV."""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from collector.bulletin import i18n
from collector.bulletin.compute import ACCESS_ORDER, GroupRow, Report, SpeedStat
from collector.bulletin.data import TrendPoint, UnitTrendPoint
from collector.bulletin.i18n import Lang
from netmon.fsutil import atomic_write

TEMPLATES = Path(__file__).parent / "templates"

#: CSV columns: stable English names whatever the bulletin's language, so scripts can read it.
CSV_COLUMNS = ("month", "section", "district", "commune", "commune_code", "isp", "access",
               "period", "metric", "tests", "failed", "cross_traffic_excluded", "probes",
               "probe_days", "median", "mean", "p10", "p90", "share_at_target_pct",
               "consistent_80_80", "target", "rating", "expected", "value", "source")


def _env() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(
        enabled_extensions=("html", "j2"), default_for_string=True),
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def headline_text(rep: Report, lang: Lang) -> str:
    """The bulletin's title line, e.g. "Bản tin tốc độ băng rộng tỉnh Hà Tĩnh, tháng 10/2026"."""
    return i18n.t("headline", lang, province=rep.province,
                  month=i18n.month_label(rep.month.year, rep.month.month, lang))


@dataclass
class EditionNote:
    """Which edition a bulletin is, shown under its title (collector/bulletin/editions.py
    writes the text)."""

    #: ``provisional`` or ``final``: also in the file names.
    name: str
    #: e.g. "Bản chính thức (final edition)".
    title: str
    #: Sentences under the title: when it was made, what changed since the provisional.
    lines: list[str]


def render_html(rep: Report, lang: Lang, charts: dict[str, str],
                expected_per_day: float, edition: EditionNote | None = None) -> str:
    """The bulletin as one HTML document (chart images referenced by relative name)."""
    start = rep.month.start()
    end = rep.month.end().date() - timedelta(days=1)
    prov_avail = next((a for a in rep.availability if not a.district and not a.commune_code),
                      None)
    ctx: dict[str, Any] = {
        "rep": rep, "lang": lang, "charts": _Charts(charts), "edition": edition,
        "headline_text": headline_text(rep, lang),
        "period_text": i18n.t("period", lang,
                              start=i18n.date_label(start.year, start.month, start.day, lang),
                              end=i18n.date_label(end.year, end.month, end.day, lang),
                              tz=rep.month.tz),
        "generated_text": i18n.t("generated", lang,
                                 at=rep.generated_at.strftime("%Y-%m-%d %H:%M")),
        "below_communes": rep.below_target,
        "insufficient_communes": rep.insufficient,
        "province_availability": prov_avail,
        "commune_facts": _commune_facts(rep),
        "expected_per_day": expected_per_day,
        "reference": _reference_rows(rep),
        "unit_trend": _unit_trend_table(rep),
        "effective_text": i18n.date_label(int(rep.effective[:4]), int(rep.effective[5:7]),
                                          int(rep.effective[8:10]), lang)
        if rep.effective else "",
        "t": lambda key, **kw: i18n.t(key, lang, **kw),
        "num": lambda v, d=1: i18n.fmt_num(v, lang, d),
        "int": lambda v: i18n.fmt_int(v, lang),
        "pct": lambda v: i18n.fmt_pct(v, lang),
        "mbps": lambda v: i18n.fmt_mbps(v, lang),
        "change": lambda v: i18n.fmt_change(v, lang),
        "rating": lambda r: i18n.t("no_data_short" if r == "no_data" else r, lang),
    }
    html = _env().get_template("bulletin.html.j2").render(**ctx)
    return unicodedata.normalize("NFC", html)


@dataclass
class _RefRow:
    label_key: str
    source: str
    fixed: float | None
    mobile: float | None


def _reference_rows(rep: Report) -> list[_RefRow]:
    """The province's own medians, then each i-Speed scope entered for the month; empty
    when none was entered (no reference row is shown)."""
    if not rep.reference:
        return []
    own = {h.access: h.row.download.summary.median if h.row.download else None
           for h in rep.headline}
    rows = [_RefRow("ref_own", "", own.get("fixed"), own.get("mobile"))]
    for scope in ("national", "province"):
        picked = {r.access: r for r in rep.reference if r.scope == scope}
        if picked:
            sources = "; ".join(dict.fromkeys(r.source for r in picked.values()))
            rows.append(_RefRow(f"ref_{scope}", sources,
                                picked["fixed"].download_mbps if "fixed" in picked else None,
                                picked["mobile"].download_mbps if "mobile" in picked
                                else None))
    return rows


@dataclass
class _TrendTable:
    months: list[str]
    #: access -> [(unit name, [median or None per month])]
    rows: dict[str, list[tuple[str, list[float | None]]]]


def _unit_trend_table(rep: Report) -> _TrendTable:
    """Per access type, units with any figure in the 12 months (months below
    ``min_tests`` tests are gaps)."""
    months: list[str] = []
    m = rep.month
    for _ in range(12):
        months.append(m.label)
        m = m.prev()
    months.reverse()
    names = {r.commune_code: r.commune for r in rep.communes if r.commune_code}
    by: dict[tuple[str, str], dict[str, float | None]] = {}
    for p in rep.unit_trend:
        ok = p.download_tests >= rep.min_tests
        by.setdefault((p.access, p.commune_code), {})[p.month] = p.download_median if ok \
            else None
    rows: dict[str, list[tuple[str, list[float | None]]]] = {}
    for (acc, code), vals in sorted(by.items(), key=lambda kv: (
            kv[0][0], i18n.sort_key(names.get(kv[0][1], kv[0][1])))):
        if any(v is not None for v in vals.values()):
            rows.setdefault(acc, []).append((names.get(code, code),
                                             [vals.get(mm) for mm in months]))
    return _TrendTable(months, rows)


@dataclass
class _CommuneFact:
    access: str
    meets: int
    below: int
    insufficient: int
    no_probe: int = 0

    @property
    def rated(self) -> int:
        return self.meets + self.below


def _commune_facts(rep: Report) -> list[_CommuneFact]:
    """Per access type: how many communes meet, miss, or cannot be rated."""
    out = []
    for acc in ACCESS_ORDER:
        rows = [r for r in rep.communes if r.access == acc and r.download]
        if not rows:
            continue
        n = {k: sum(1 for r in rows if r.download and r.download.rating == k)
             for k in ("meets", "below", "insufficient", "no_data", "no_probe")}
        out.append(_CommuneFact(acc, n["meets"], n["below"], n["insufficient"] + n["no_data"],
                                n["no_probe"]))
    return out


class _Charts(dict[str, str]):
    """Chart names; a missing chart is simply absent (falsy) in the template."""

    def __getattr__(self, name: str) -> str:
        return self.get(name, "")


def _f(value: float | None, scale: float = 1.0) -> str:
    return "" if value is None else f"{value * scale:.4f}"


def _speed_record(rep: Report, row: GroupRow, metric: str, s: SpeedStat) -> dict[str, str]:
    sm = s.summary
    return {
        "month": rep.month.label, "section": row.section, "district": row.district,
        "commune": row.commune, "commune_code": row.commune_code, "isp": row.isp,
        "access": row.access, "period": row.period,
        "metric": metric, "tests": str(sm.tests), "failed": str(row.failed),
        "cross_traffic_excluded": str(row.cross_traffic), "probes": str(s.probes),
        "probe_days": str(s.probe_days),
        "median": _f(sm.median), "mean": _f(sm.mean), "p10": _f(sm.p10), "p90": _f(sm.p90),
        "share_at_target_pct": _f(sm.share_at_target, 100.0),
        "consistent_80_80": _f(sm.consistent_80_80),
        "target": _f(s.target), "rating": s.rating, "expected": "", "value": "", "source": "",
    }


def csv_records(rep: Report) -> list[dict[str, str]]:
    """Every CSV row as a dict keyed by :data:`CSV_COLUMNS`."""
    out: list[dict[str, str]] = []
    blank = dict.fromkeys(CSV_COLUMNS, "")
    for row in rep.rows():
        for metric, s in (("download_mbps", row.download), ("upload_mbps", row.upload)):
            if s is not None:
                out.append(_speed_record(rep, row, metric, s))
    for lr in rep.latency:
        base = blank | {"month": rep.month.label, "section": "latency",
                        "district": lr.district, "access": lr.access}
        out.append(base | {"metric": "rtt_ms", "tests": str(lr.tests), "failed": str(lr.failed),
                           "median": _f(lr.rtt_median), "p90": _f(lr.rtt_p90)})
        out.append(base | {"metric": "jitter_ms", "tests": str(lr.tests),
                           "median": _f(lr.jitter_median)})
        out.append(base | {"metric": "loss_pct", "tests": str(lr.tests), "mean": _f(lr.loss_mean)})
        out.append(base | {"metric": "idle_rtt_ms", "tests": str(lr.loaded_tests),
                           "median": _f(lr.idle_rtt_median)})
        out.append(base | {"metric": "loaded_rtt_ms", "tests": str(lr.loaded_tests),
                           "median": _f(lr.loaded_rtt_median)})
    for a in rep.availability:
        out.append(blank | {"month": rep.month.label, "section": "availability",
                            "district": a.district, "commune": a.commune,
                            "commune_code": a.commune_code, "metric": "availability_pct",
                            "tests": str(a.arrived), "probes": str(a.probes),
                            "expected": _f(a.expected), "value": _f(a.share, 100.0)})
    for c in rep.reach:
        base = blank | {"month": rep.month.label, "section": "commune_network",
                        "commune_code": c.commune_code, "commune": c.commune}
        if c.ipv6_ok + c.ipv6_failed:
            out.append(base | {"metric": "ipv6_ready_pct", "tests": str(c.ipv6_ok + c.ipv6_failed),
                               "failed": str(c.ipv6_failed), "value": _f(c.ipv6_share, 100.0)})
        if c.reach_ok + c.reach_failed:
            out.append(base | {"metric": "tslcd_reachable_pct",
                               "tests": str(c.reach_ok + c.reach_failed),
                               "failed": str(c.reach_failed), "median": _f(c.reach_rtt_ms),
                               "value": _f(c.reach_share, 100.0)})
    for p in rep.trend:
        out.append(blank | {"month": p.month, "section": "trend", "access": p.access,
                            "metric": "download_mbps", "tests": str(p.download_tests),
                            "median": _f(p.download_median)})
    for u in rep.unit_trend:
        out.append(blank | {"month": u.month, "section": "unit_trend", "access": u.access,
                            "commune_code": u.commune_code, "metric": "download_mbps",
                            "tests": str(u.download_tests), "median": _f(u.download_median)})
    for r in rep.reference:
        out.append(blank | {"month": r.month, "section": f"ispeed_{r.scope}",
                            "access": r.access, "metric": "download_mbps",
                            "median": _f(r.download_mbps), "source": r.source})
    return out


def write_csv(rep: Report, path: Path) -> None:
    """UTF-8 with a byte-order mark (so Excel shows Vietnamese names right), '.' decimals.

    Written atomically: next month's bulletin reads this file back for its trend.
    """
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
    w.writeheader()
    for rec in csv_records(rep):
        w.writerow({k: unicodedata.normalize("NFC", v) for k, v in rec.items()})
    atomic_write(path, buf.getvalue(), mode=0o644, encoding="utf-8-sig")


def _published_rows(path: Path, month: str, section: str) -> list[dict[str, str]] | None:
    """An earlier bulletin's CSV rows of ``section`` for ``month`` (None: the file is
    absent or unreadable)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return [r for r in csv.DictReader(fh)
                    if r.get("section") == section and r.get("month") == month]
    except (OSError, csv.Error, UnicodeDecodeError):
        return None


def read_trend_csv(path: Path, month: str) -> list[TrendPoint]:
    """Province medians of an earlier bulletin's CSV (empty if absent or unreadable).

    The trend then shows the figures as they were published; results that arrived after
    that bulletin was made do not change them.
    """
    rows = _published_rows(path, month, "province") or []
    by_access: dict[str, dict[str, dict[str, str]]] = {}
    for r in rows:
        by_access.setdefault(r.get("access", ""), {})[r.get("metric", "")] = r
    out = []
    for access, metrics in by_access.items():
        dl, ul = metrics.get("download_mbps"), metrics.get("upload_mbps")
        try:
            out.append(TrendPoint(
                month, access,
                float(dl["median"]) if dl and dl.get("median") else None,
                int(dl["tests"]) if dl and dl.get("tests") else 0,
                float(ul["median"]) if ul and ul.get("median") else None,
                int(ul["tests"]) if ul and ul.get("tests") else 0))
        except (KeyError, ValueError):
            return []
    return out


def read_unit_trend_csv(path: Path, month: str, codes: Collection[str]
                        ) -> list[UnitTrendPoint] | None:
    """Each unit's median download of ``month`` as an earlier bulletin of that month
    published it (its ``unit_trend`` rows of its own month), or None when there is no
    such CSV, it holds no unit figure, or a unit is not among ``codes`` (a CSV made on
    another map: the month is then computed from InfluxDB on the current one).

    Reading a year of raw points for eleven months' unit medians was each bulletin's
    largest query once a deployment is a year old; like the province trend, a published
    month keeps its published figures.
    """
    rows = _published_rows(path, month, "unit_trend")
    if not rows or any(r.get("commune_code") not in codes for r in rows):
        return None
    try:
        return [UnitTrendPoint(month, r["commune_code"], r.get("access", ""),
                               float(r["median"]) if r.get("median") else None,
                               int(r.get("tests") or 0)) for r in rows]
    except (KeyError, ValueError):
        return None
