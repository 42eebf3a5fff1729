"""The public archive of bulletin editions: a static folder any web server can serve.

Layout (``bulletin.archive_dir``)::

    index.html                 Vietnamese index (the default page)
    index.en.html              English index
    chart-12-months.png        the last 12 months against the targets (vi; .en.png: en)
    2026-10/provisional  ->  .provisional-<stamp>/   (a symlink, swapped atomically)
    2026-10/final        ->  .final-<stamp>/
        bulletin-2026-10-final.{html,pdf,csv}, chart PNGs, edition.json

Everything on the index comes from the editions' own CSVs (and ``edition.json``), so it
needs no database and can be rebuilt at any time (``bulletin --reindex``).
"""

from __future__ import annotations

import csv
import json
import unicodedata
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from matplotlib import rc_context

from collector.bulletin import charts
from collector.bulletin.compute import ACCESS_ORDER
from collector.bulletin.i18n import Lang, fmt_int, fmt_num, fmt_pct, month_label, short_month
from netmon.errors import NetmonError
from netmon.fsutil import atomic_write
from netmon.i18n import Texts

EditionName = Literal["provisional", "final"]
#: Publication order: the final edition supersedes the provisional one.
EDITIONS: tuple[EditionName, ...] = ("provisional", "final")
MANIFEST = "edition.json"
CHART = {"vi": "chart-12-months.png", "en": "chart-12-months.en.png"}
INDEX = {"vi": "index.html", "en": "index.en.html"}
TEMPLATES = Path(__file__).parent / "templates"

STRINGS: dict[str, tuple[str, str]] = {
    "title": ("Bản tin tốc độ băng rộng tỉnh {province}: lưu trữ",
              "{province} broadband speed bulletin: archive"),
    "intro": ("Mỗi tháng có bản tạm tính (ngày 1) và bản chính thức (sau khi các kết quả đến "
              "muộn đã về). Trung vị tốc độ tải xuống so với mục tiêu của Kế hoạch "
              "568/KH-UBND: cố định {fixed} Mb/s, di động {mobile} Mb/s.",
              "Each month has a provisional edition (on the 1st) and a final edition (once "
              "late results have arrived). Median download speed against the targets of "
              "plan 568/KH-UBND: fixed {fixed} Mb/s, mobile {mobile} Mb/s."),
    "other_lang": ("English", "Tiếng Việt"),
    "chart": ("12 tháng gần nhất: trung vị tốc độ tải xuống toàn tỉnh",
              "The last 12 months: province median download speed"),
    "chart_alt": ("Biểu đồ đường trung vị tốc độ tải xuống cố định và di động theo tháng, "
                  "với đường mục tiêu", "Line chart of the fixed and mobile median download "
                  "speed per month, with the target lines"),
    "months": ("Các tháng", "Months"),
    "provisional": ("Bản tạm tính", "Provisional edition"),
    "final": ("Bản chính thức", "Final edition"),
    "published": ("phát hành {at}", "published {at}"),
    "fixed": ("Cố định", "Fixed"),
    "mobile": ("Di động", "Mobile"),
    "median": ("trung vị {value} Mb/s (mục tiêu {target}): {rating}",
               "median {value} Mb/s (target {target}): {rating}"),
    "communes": ("xã/phường đạt mục tiêu: {meets}/{rated} ({share})",
                 "communes and wards meeting the target: {meets}/{rated} ({share})"),
    "meets": ("đạt", "meets"),
    "below": ("chưa đạt", "below"),
    "insufficient": ("chưa đủ dữ liệu", "insufficient data"),
    "no_data": ("không có dữ liệu", "no data"),
    "files": ("Tệp", "Files"),
    "late": ("{n} kết quả đến sau bản tạm tính", "{n} results arrived after the provisional"),
    "empty": ("Chưa có bản tin nào.", "No bulletin yet."),
    "updated": ("Cập nhật {at}", "Updated {at}"),
    "target": ("Mục tiêu", "Target"),
    "axis": ("Mb/s", "Mb/s"),
}
#: ``t(key, lang, **values)`` for the archive's own texts.
t = Texts(STRINGS, "archive string")


class ArchiveError(NetmonError, RuntimeError):
    """The archive folder cannot be read or written."""


@dataclass
class AccessFigures:
    """One access type's headline figures, as the edition's CSV states them."""

    access: str
    median: float | None = None
    tests: int = 0
    target: float | None = None
    rating: str = "no_data"
    communes_meeting: int = 0
    communes_rated: int = 0

    @property
    def share_meeting(self) -> float | None:
        """Share (0-1) of rated communes and wards meeting the target."""
        return self.communes_meeting / self.communes_rated if self.communes_rated else None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def figures_from_records(records: list[dict[str, str]], month: str
                         ) -> dict[str, AccessFigures]:
    """Headline figures per access type from a bulletin's CSV rows (``render.csv_records``
    or the file): province median download and communes meeting the target."""
    out: dict[str, AccessFigures] = {a: AccessFigures(a) for a in ACCESS_ORDER}
    for r in records:
        if r.get("month") != month or r.get("metric") != "download_mbps":
            continue
        fig = out.get(r.get("access", ""))
        if fig is None:
            continue
        if r.get("section") == "province":
            fig.median = _float(r.get("median"))
            fig.tests = int(r.get("tests") or 0)
            fig.target = _float(r.get("target"))
            fig.rating = r.get("rating") or "no_data"
        elif r.get("section") == "commune" and r.get("rating") in ("meets", "below"):
            fig.communes_rated += 1
            fig.communes_meeting += r.get("rating") == "meets"
    return out


def read_records(path: Path) -> list[dict[str, str]]:
    """A bulletin CSV's rows (UTF-8 with or without BOM); raises ArchiveError."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return list(csv.DictReader(fh))
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise ArchiveError(f"{path}: cannot read the bulletin CSV ({exc})") from None


@dataclass
class Edition:
    """One published edition of one month."""

    month: str
    name: EditionName
    folder: Path
    files: dict[str, str]
    figures: dict[str, AccessFigures]
    manifest: dict[str, Any] = field(default_factory=dict)

    def href(self, kind: str) -> str:
        """Link to one of its files, relative to the archive root."""
        return f"{self.month}/{self.name}/{self.files[kind]}"


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The ``edition.json`` of an edition folder (None if there is no edition)."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ArchiveError(f"{folder / MANIFEST}: unreadable ({exc})") from None
    return data if isinstance(data, dict) else None


def load_edition(archive: Path, month: str, name: EditionName) -> Edition | None:
    """The edition as published (None when that edition does not exist)."""
    folder = archive / month / name
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    files = {k: str(v) for k, v in manifest.get("files", {}).items()}
    csv_name = files.get("csv")
    figures = figures_from_records(read_records(folder / csv_name) if csv_name else [], month)
    return Edition(month, name, folder, files, figures, manifest)


def months(archive: Path) -> list[str]:
    """Months with at least one edition, newest first."""
    if not archive.is_dir():
        return []
    found = [p.name for p in archive.iterdir()
             if len(p.name) == 7 and p.name[4] == "-" and p.name.replace("-", "").isdigit()
             and any((p / e / MANIFEST).exists() for e in EDITIONS)]
    return sorted(found, reverse=True)


def latest(archive: Path, month: str) -> Edition | None:
    """The month's authoritative edition: the final one, else the provisional one."""
    for name in reversed(EDITIONS):
        ed = load_edition(archive, month, name)
        if ed is not None:
            return ed
    return None


def latest_csv(archive: Path, month: str) -> Path:
    """The CSV of the month's authoritative edition (a path that does not exist when the
    month has none: callers then fall back to InfluxDB)."""
    for name in reversed(EDITIONS):
        folder = archive / month / name
        manifest = read_manifest(folder)
        if manifest and manifest.get("files", {}).get("csv"):
            return folder / str(manifest["files"]["csv"])
    return archive / month / "none.csv"


@dataclass
class _MonthView:
    month: str
    label: str
    editions: list[Edition]


def _twelve(newest: str) -> list[str]:
    y, m = int(newest[:4]), int(newest[5:7])
    out = []
    for _ in range(12):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y - 1, 12) if m == 1 else (y, m - 1)
    return out[::-1]


def chart(by_month: dict[str, Edition], targets: dict[str, float], lang: Lang,
          out: Path) -> str:
    """The 12-month chart of the archive's own figures; returns the PNG's file name."""
    name = CHART[lang]
    labels = _twelve(max(by_month)) if by_month else []
    with rc_context({"font.family": [charts.vietnamese_font()], "font.size": 9}):
        fig = charts._figure(7.2, 2.8)
        ax = fig.subplots()
        x = np.arange(len(labels))
        for acc in ACCESS_ORDER:
            y = np.array([by_month[m].figures[acc].median
                          if m in by_month and by_month[m].figures[acc].median is not None
                          else np.nan for m in labels], dtype=np.float64)
            if not np.isnan(y).all():
                ax.plot(x, y, marker="o", color=charts.COLORS[acc], label=t(acc, lang))
            if acc in targets:
                ax.axhline(targets[acc], color=charts.COLORS[acc], ls="--", lw=1,
                           label=f"{t('target', lang)} {fmt_num(targets[acc], lang, 0)}")
        ax.set_xticks(x, [short_month(m, lang) for m in labels], fontsize=8)
        ax.set_ylabel(t("axis", lang))
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(charts._num_formatter(lang))
        ax.legend(fontsize=7, frameon=False, ncols=4, loc="lower center",
                  bbox_to_anchor=(0.5, 1.0))
        charts._style(fig)
        tmp = out / f".{name}.tmp"
        fig.savefig(tmp, format="png")
    data = tmp.read_bytes()
    tmp.unlink()
    atomic_write(out / name, data, mode=0o644)
    return name


def _env() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(
        enabled_extensions=("html", "j2"), default_for_string=True),
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_index(views: list[_MonthView], lang: Lang, province: str,
                 targets: dict[str, float], chart_name: str | None, now: datetime) -> str:
    """One language's index page."""

    def figure_lines(ed: Edition) -> list[tuple[str, str, str]]:
        rows = []
        for acc in ACCESS_ORDER:
            f = ed.figures[acc]
            target = f.target if f.target is not None else targets.get(acc)
            rows.append((t(acc, lang), f.rating, t(
                "median", lang, value=fmt_num(f.median, lang),
                target=fmt_num(target, lang, 0),
                rating=t(f.rating if f.rating in ("meets", "below", "insufficient")
                         else "no_data", lang))
                + "; " + t("communes", lang, meets=fmt_int(f.communes_meeting, lang),
                           rated=fmt_int(f.communes_rated, lang),
                           share=fmt_pct(f.share_meeting, lang))))
        return rows

    def published(ed: Edition) -> str:
        at = str(ed.manifest.get("published_at", ""))[:16].replace("T", " ")
        return t("published", lang, at=at + " UTC") if at else ""

    def late(ed: Edition) -> str:
        change = ed.manifest.get("change")
        if ed.name != "final" or not isinstance(change, dict):
            return ""
        return t("late", lang, n=fmt_int(int(change.get("late_results", 0)), lang))

    html = _env().get_template("archive.html.j2").render(
        lang=lang, other=("en" if lang == "vi" else "vi"), index=INDEX, views=views,
        title=t("title", lang, province=province), chart_name=chart_name,
        intro=t("intro", lang, fixed=fmt_num(targets.get("fixed"), lang, 0),
                mobile=fmt_num(targets.get("mobile"), lang, 0)),
        t=lambda key, **kw: t(key, lang, **kw), figure_lines=figure_lines,
        published=published, late=late,
        updated=t("updated", lang, at=now.strftime("%Y-%m-%d %H:%M UTC")))
    return unicodedata.normalize("NFC", html)


def build_index(archive: Path, province: str, targets: dict[str, float],
                now: datetime | None = None) -> dict[str, Path]:
    """Rewrite both index pages and both charts from the editions in ``archive``;
    returns what was written. Each file is replaced atomically."""
    now = now or datetime.now(UTC)
    try:
        archive.mkdir(parents=True, exist_ok=True)
        views = []
        by_month: dict[str, Edition] = {}
        for m in months(archive):
            eds = [e for e in (load_edition(archive, m, n) for n in EDITIONS) if e]
            views.append(_MonthView(m, "", eds))
            by_month[m] = eds[-1]
        written: dict[str, Path] = {}
        for lang in ("vi", "en"):
            chart_name = chart(by_month, targets, lang, archive) if by_month else None
            if chart_name:
                written[f"chart_{lang}"] = archive / chart_name
            for v in views:
                v.label = month_label(int(v.month[:4]), int(v.month[5:7]), lang)
            path = archive / INDEX[lang]
            atomic_write(path, render_index(views, lang, province, targets, chart_name, now),
                         mode=0o644)
            written[f"index_{lang}"] = path
    except OSError as exc:
        raise ArchiveError(f"archive {archive}: {exc}") from None
    return written


def figures_json(figures: dict[str, AccessFigures]) -> dict[str, Any]:
    """JSON-ready headline figures."""
    return {a: asdict(f) | {"share_meeting": f.share_meeting} for a, f in figures.items()}
