"""The bulletin's charts (matplotlib, Agg backend, no pyplot global state).

Each function writes one PNG and returns its file name. Labels use a font with full
Vietnamese glyphs (Noto Sans, then DejaVu Sans, both installed by ``scripts/setup``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import font_manager, rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from collector.bulletin.compute import ACCESS_ORDER, Report
from collector.bulletin.i18n import Lang, fmt_num, short_month, t
from netmon.errors import NetmonError

FONT_FAMILIES = ["Noto Sans", "DejaVu Sans"]
COLORS = {"fixed": "#1f5fa8", "mobile": "#d9731a"}
MEETS, BELOW, GREY = "#2e8b57", "#c0392b", "#9e9e9e"
DPI = 150


class FontError(NetmonError, RuntimeError):
    """No font with Vietnamese glyphs is installed."""


def vietnamese_font() -> str:
    """The first installed font family with Vietnamese glyphs; raises if none is."""
    for fam in FONT_FAMILIES:
        try:
            font_manager.findfont(font_manager.FontProperties(family=fam),
                                  fallback_to_default=False)
            return fam
        except ValueError:
            continue
    raise FontError("no font with Vietnamese glyphs found: install fonts-noto-core or "
                       "fonts-dejavu-core (scripts/setup does)")


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _style(fig: Figure) -> None:
    for ax in fig.axes:
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="y" if ax.name == "rectilinear" else "both", alpha=0.25)


def _num_formatter(lang: Lang, decimals: int = 0) -> FuncFormatter:
    return FuncFormatter(lambda x, _pos: fmt_num(x, lang, decimals))


def distribution(rep: Report, lang: Lang, out: Path) -> str:
    """Histograms of download speed per access type, with target and median lines."""
    name = f"chart-distribution-{rep.month.label}.png"
    accesses = [a for a in ACCESS_ORDER if rep.distributions.get(a) is not None
                and rep.distributions[a].size]
    fig = _figure(7.2, 2.8)
    axes = fig.subplots(1, max(len(accesses), 1), squeeze=False)[0]
    for ax, acc in zip(axes, accesses, strict=False):
        v = rep.distributions[acc]
        target = rep.targets.for_access(acc)
        hi = max(float(np.percentile(v, 99.5)), target * 1.25)
        weights = np.full(v.size, 100.0 / v.size)
        ax.hist(np.clip(v, 0, hi), bins=40, range=(0, hi), weights=weights,
                color=COLORS[acc], alpha=0.8)
        ax.axvline(target, color=BELOW, lw=2, label=f"{t('legend_target', lang)} "
                   f"{fmt_num(target, lang, 0)}")
        med = float(np.median(v))
        ax.axvline(med, color="black", lw=1.5, ls="--",
                   label=f"{t('legend_median', lang)} {fmt_num(med, lang)}")
        ax.set_title(t(f"{acc}_short", lang))
        ax.set_xlabel(t("axis_speed", lang))
        ax.set_ylabel(t("axis_share", lang) + " (%)")
        ax.xaxis.set_major_formatter(_num_formatter(lang))
        ax.yaxis.set_major_formatter(_num_formatter(lang))
        ax.legend(fontsize=7, frameon=False)
    _style(fig)
    fig.savefig(out / name)
    return name


def districts(rep: Report, lang: Lang, out: Path) -> str:
    """Per-district median download bars per access type, against the target."""
    name = f"chart-districts-{rep.month.label}.png"
    by_acc = {a: [r for r in rep.districts if r.access == a and r.download]
              for a in ACCESS_ORDER}
    accesses = [a for a in ACCESS_ORDER if by_acc[a]]
    n = max((len(by_acc[a]) for a in accesses), default=1)
    fig = _figure(7.2, max(2.2, 0.9 + 0.24 * n))
    axes = fig.subplots(1, max(len(accesses), 1), squeeze=False)[0]
    for ax, acc in zip(axes, accesses, strict=False):
        rows = sorted(by_acc[acc], key=lambda r: (r.download.summary.median or 0.0)
                      if r.download else 0.0)
        target = rep.targets.for_access(acc)
        labels = [r.district or t("unknown", lang) for r in rows]
        vals = [(r.download.summary.median or 0.0) if r.download else 0.0 for r in rows]
        colors = []
        hatches = []
        for r in rows:
            rating = r.download.rating if r.download else "no_data"
            colors.append(MEETS if rating == "meets" else BELOW if rating == "below" else GREY)
            hatches.append("" if rating in ("meets", "below") else "//")
        bars = ax.barh(labels, vals, color=colors)
        for bar, h in zip(bars, hatches, strict=True):
            bar.set_hatch(h)
        span = max([*vals, target])
        for y, v in enumerate(vals):
            # Inside the bar's end (clear of the target line); outside for short bars.
            inside = v > 0.25 * span
            ax.text(v - 0.01 * span if inside else v + 0.01 * span, y, fmt_num(v, lang),
                    va="center", ha="right" if inside else "left", fontsize=7,
                    color="white" if inside else "black", fontweight="bold")
        ax.axvline(target, color="black", lw=1.5, ls="--")
        ax.set_xlim(0, span * 1.08)
        ax.set_title(f"{t(f'{acc}_short', lang)} ({t('legend_target', lang).lower()} "
                     f"{fmt_num(target, lang, 0)} Mb/s)")
        ax.set_xlabel(t("axis_speed", lang))
        ax.xaxis.set_major_formatter(_num_formatter(lang))
        ax.tick_params(axis="y", labelsize=8)
    handles = [Patch(color=MEETS, label=t("meets", lang)),
               Patch(color=BELOW, label=t("below", lang)),
               Patch(facecolor=GREY, hatch="//", label=t("legend_insufficient", lang)),
               Line2D([], [], color="black", ls="--", label=t("legend_target", lang))]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=7,
               frameon=False)
    _style(fig)
    for ax in axes:
        ax.grid(False)
        ax.grid(axis="x", alpha=0.25)
    fig.savefig(out / name)
    return name


def trend(rep: Report, lang: Lang, out: Path) -> str:
    """Province median download per month (last 12 months) with the target lines."""
    name = f"chart-trend-{rep.month.label}.png"
    months = []
    m = rep.month
    for _ in range(12):
        months.append(m.label)
        m = m.prev()
    months.reverse()
    fig = _figure(7.2, 2.6)
    ax = fig.subplots()
    x = np.arange(len(months))
    for acc in ACCESS_ORDER:
        pts = {p.month: p for p in rep.trend if p.access == acc}
        y = np.array([pts[mm].download_median if mm in pts
                      and pts[mm].download_tests >= rep.min_tests
                      and pts[mm].download_median is not None else np.nan for mm in months],
                     dtype=np.float64)
        if np.isnan(y).all():
            continue
        ax.plot(x, y, marker="o", color=COLORS[acc], label=t(f"{acc}_short", lang))
        target = rep.targets.for_access(acc)
        ax.axhline(target, color=COLORS[acc], ls="--", lw=1,
                   label=f"{t('legend_target', lang)} {fmt_num(target, lang, 0)}")
    ax.set_xticks(x, [short_month(mm, lang) for mm in months], fontsize=8)
    ax.set_ylabel(t("axis_speed", lang))
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(_num_formatter(lang))
    ax.legend(fontsize=7, frameon=False, ncols=4, loc="lower center",
              bbox_to_anchor=(0.5, 1.0))
    _style(fig)
    fig.savefig(out / name)
    return name


def render_all(rep: Report, lang: Lang, out: Path) -> dict[str, str]:
    """Every chart; returns chart key -> file name (relative to ``out``)."""
    if not rep.has_data:
        return {}
    # Every text object picks its font when created, so set it for the whole drawing.
    with rc_context({"font.family": [vietnamese_font()], "font.size": 9,
                     "svg.fonttype": "none"}):
        files = {"distribution": distribution(rep, lang, out),
                 "trend": trend(rep, lang, out)}
        if rep.districts:  # the legacy view only: no district level after the reform
            files["districts"] = districts(rep, lang, out)
        return files
