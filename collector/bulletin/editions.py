"""Provisional and final editions of a month's bulletin, published whole into the archive.

The *provisional* edition is made early on the 1st for the month just ended; the *final*
edition some days later, once the probes' spools have delivered late results. The final
edition states how many results arrived after the provisional one and how each headline
figure moved (from the provisional edition's own CSV and ``edition.json``).

Publishing is all or nothing: the edition is written into a fresh hidden folder next to
its place; only when every file is on disk does a symlink swap (one ``rename``) make it
the month's edition. A run that fails at any point removes its folder and leaves the
archive as it was. Each run's outcome is written to InfluxDB as a ``bulletin_runs`` point
(the dashboards alert on it) and logged (journald under systemd).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from collector.bulletin import archive, compute, data, render
from collector.bulletin.archive import AccessFigures, EditionName
from collector.bulletin.generate import BulletinInputError, BulletinResult, generate
from collector.bulletin.i18n import Lang, fmt_int, fmt_num, fmt_pct
from collector.config import CollectorConfig, InfluxSettings
from collector.core.influx import InfluxClient, InfluxError
from collector.core.schema import BULLETIN_RUNS, line
from netmon.errors import EXIT_RUNTIME, NetmonError
from netmon.fsutil import fsync_dir
from netmon.i18n import Texts

log = logging.getLogger(__name__)

STRINGS: dict[str, tuple[str, str]] = {
    "provisional": ("Bản tạm tính", "Provisional edition"),
    "final": ("Bản chính thức", "Final edition"),
    "prov_made": ("Lập lúc {at}. Kết quả đến muộn sẽ được tính trong bản chính thức.",
                  "Made {at}. Results that arrive late will be counted in the final edition."),
    "final_made": ("Lập lúc {at}.", "Made {at}."),
    "no_prov": ("Không có bản tạm tính cho tháng này.",
                "There was no provisional edition for this month."),
    "late": ("{n} kết quả đến sau bản tạm tính ({at}).",
             "{n} results arrived after the provisional edition ({at})."),
    "unchanged": ("Các số liệu chính không thay đổi so với bản tạm tính.",
                  "The headline figures are unchanged from the provisional edition."),
    "median_changed": ("Trung vị tải xuống {access}: {before} → {after} Mb/s ({delta}).",
                       "{access} median download: {before} → {after} Mb/s ({delta})."),
    "share_changed": ("Xã/phường đạt mục tiêu ({access}): {before} → {after}.",
                      "Communes and wards meeting the target ({access}): {before} → {after}."),
    "fixed": ("cố định", "fixed"),
    "mobile": ("di động", "mobile"),
}
#: ``t(key, lang, **values)`` for the edition notes.
t = Texts(STRINGS, "edition string")


class EditionError(NetmonError, RuntimeError):
    """An edition could not be published (after its retries): exit code 1."""

    exit_code = EXIT_RUNTIME


@dataclass
class Change:
    """How one headline figure moved from the provisional to the final edition."""

    access: str
    #: ``download_median_mbps`` or ``communes_meeting`` (meeting / rated).
    figure: str
    before: float | None
    after: float | None

    @property
    def delta(self) -> float | None:
        """``after - before`` (None when either is missing)."""
        return None if self.before is None or self.after is None else self.after - self.before

    @property
    def delta_pct(self) -> float | None:
        """The change relative to the provisional figure, in percent."""
        d = self.delta
        return None if d is None or not self.before else 100.0 * d / self.before


@dataclass
class ChangeReport:
    """What the final edition adds to the provisional one."""

    provisional_published_at: str
    provisional_results: int
    final_results: int
    changes: list[Change] = field(default_factory=list)

    @property
    def late_results(self) -> int:
        """Throughput results of the month stored after the provisional edition was made."""
        return max(0, self.final_results - self.provisional_results)

    def as_json(self) -> dict[str, object]:
        """JSON-ready (``edition.json``, ``--json``)."""
        return {"provisional_published_at": self.provisional_published_at,
                "provisional_results": self.provisional_results,
                "final_results": self.final_results, "late_results": self.late_results,
                "changes": [asdict(c) | {"delta": c.delta, "delta_pct": c.delta_pct}
                            for c in self.changes]}


#: A median that moved by less than this (Mb/s) is reported as unchanged: the CSV keeps
#: four decimals.
EPSILON_MBPS = 0.00005


def change_report(prov_manifest: dict[str, object], prov: dict[str, AccessFigures],
                  final: dict[str, AccessFigures], final_results: int) -> ChangeReport:
    """Compare the provisional edition's headline figures with the final's."""
    changes = []
    for acc in compute.ACCESS_ORDER:
        p, f = prov[acc], final[acc]
        if p.median != f.median and (p.median is None or f.median is None
                                     or abs(f.median - p.median) > EPSILON_MBPS):
            changes.append(Change(acc, "download_median_mbps", p.median, f.median))
        if (p.communes_meeting, p.communes_rated) != (f.communes_meeting, f.communes_rated):
            changes.append(Change(acc, "communes_meeting", p.share_meeting, f.share_meeting))
    raw = prov_manifest.get("results", 0)
    return ChangeReport(str(prov_manifest.get("published_at", "")),
                        int(raw) if isinstance(raw, (int, float, str)) else 0,
                        final_results, changes)


def _local(at: datetime, tz: str) -> str:
    return at.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


def note(edition: EditionName, lang: Lang, made_at: datetime, tz: str,
         change: ChangeReport | None, final_figures: dict[str, AccessFigures] | None = None
         ) -> render.EditionNote:
    """The edition's box under the bulletin's title."""
    lines = []
    if edition == "provisional":
        lines.append(t("prov_made", lang, at=_local(made_at, tz)))
    else:
        lines.append(t("final_made", lang, at=_local(made_at, tz)))
        if change is None:
            lines.append(t("no_prov", lang))
        else:
            prov_at = change.provisional_published_at
            with contextlib.suppress(ValueError):
                prov_at = _local(datetime.fromisoformat(prov_at), tz)
            lines.append(t("late", lang, n=fmt_int(change.late_results, lang), at=prov_at))
            if not change.changes:
                lines.append(t("unchanged", lang))
            for c in change.changes:
                acc = t(c.access, lang)
                if c.figure == "download_median_mbps":
                    delta = "–" if c.delta is None else (
                        f"{'+' if c.delta >= 0 else '−'}{fmt_num(abs(c.delta), lang)} Mb/s"
                        + ("" if c.delta_pct is None else
                           f", {'+' if c.delta_pct >= 0 else '−'}"
                           f"{fmt_num(abs(c.delta_pct), lang)}%"))
                    lines.append(t("median_changed", lang, access=acc,
                                   before=fmt_num(c.before, lang),
                                   after=fmt_num(c.after, lang), delta=delta))
                else:
                    lines.append(t("share_changed", lang, access=acc,
                                   before=fmt_pct(c.before, lang),
                                   after=fmt_pct(c.after, lang)))
    return render.EditionNote(edition, f"{t(edition, lang)} · "
                              f"{t(edition, 'en' if lang == 'vi' else 'vi')}", lines)


@dataclass
class EditionResult:
    """One published edition."""

    month: str
    edition: EditionName
    #: The edition's place in the archive (``<archive>/<month>/<edition>``, a symlink).
    folder: Path
    files: dict[str, Path]
    figures: dict[str, AccessFigures]
    results: int
    attempts: int
    change: ChangeReport | None
    bulletin: BulletinResult
    index: dict[str, Path] = field(default_factory=dict)


def previous_month(tz: str, now: datetime | None = None) -> str:
    """``YYYY-MM`` of the month before ``now`` in ``tz`` (the timers' ``--month previous``)."""
    local = (now or datetime.now(UTC)).astimezone(ZoneInfo(tz))
    y, m = (local.year - 1, 12) if local.month == 1 else (local.year, local.month - 1)
    return f"{y:04d}-{m:02d}"


def _fsync_tree(folder: Path) -> None:
    # The PDF and PNG writers do not fsync: do it before the edition becomes visible.
    for p in folder.iterdir():
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fsync_dir(folder)


def _swap(month_dir: Path, edition: EditionName, stage: Path) -> Path | None:
    """Point ``month_dir/edition`` at ``stage`` in one rename; returns the folder it
    pointed at before (None the first time)."""
    link = month_dir / edition
    old = month_dir / os.readlink(link) if link.is_symlink() else None
    tmp = month_dir / f".{edition}.link-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(stage.name, tmp)
    os.replace(tmp, link)
    fsync_dir(month_dir)
    return old


def _attempt(cfg: CollectorConfig, month: str, edition: EditionName, root: Path,
             lang: Lang | None, now: datetime | None) -> EditionResult:
    month_dir = root / month
    month_dir.mkdir(parents=True, exist_ok=True)
    prov_manifest = archive.read_manifest(month_dir / "provisional") \
        if edition == "final" else None
    prov = archive.load_edition(root, month, "provisional") if prov_manifest else None
    made_at = now or datetime.now(UTC)
    stage = Path(tempfile.mkdtemp(prefix=f".{edition}-{made_at:%Y%m%dT%H%M%SZ}-",
                                  dir=month_dir))
    seen: dict[str, object] = {}

    def annotate(rep: compute.Report) -> render.EditionNote:
        figures = archive.figures_from_records(render.csv_records(rep), month)
        change = change_report(prov.manifest, prov.figures, figures, rep.totals.results) \
            if prov else None
        seen.update(figures=figures, change=change, results=rep.totals.results)
        return note(edition, lang or cfg.bulletin.language, made_at, cfg.bulletin.timezone,
                    change)

    try:
        res = generate(cfg, month, stage, lang, now=made_at, edition=annotate,
                       trend_csv=lambda m: archive.latest_csv(root, m))
        change = seen.get("change")
        assert change is None or isinstance(change, ChangeReport)
        figures = seen["figures"]
        assert isinstance(figures, dict)
        results = int(str(seen["results"]))
        manifest = {
            "month": month, "edition": edition,
            "published_at": made_at.astimezone(UTC).isoformat(timespec="seconds"),
            "lang": res.lang, "results": results,
            "files": {k: p.name for k, p in res.files.items()},
            "figures": archive.figures_json(figures),
            "change": change.as_json() if change else None,
        }
        (stage / archive.MANIFEST).write_text(
            json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        for p in stage.iterdir():
            p.chmod(0o644)
        stage.chmod(0o755)  # mkdtemp made it 0700; the web server reads it
        _fsync_tree(stage)
        old = _swap(month_dir, edition, stage)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if old is not None and old.resolve() != stage.resolve():
        shutil.rmtree(old, ignore_errors=True)
    folder = month_dir / edition
    return EditionResult(month, edition, folder,
                         {k: folder / p.name for k, p in res.files.items()},
                         figures, results, 1, change, res)


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One publisher at a time per archive (the timer and a re-run by hand could meet)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


#: Failures worth another attempt later: InfluxDB down or failing, a full or failing disk.
RETRYABLE: tuple[type[BaseException], ...] = (InfluxError, OSError, archive.ArchiveError)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, BulletinInputError):
        # "unreachable" is InfluxDB being down (or restarting): worth waiting for.
        return "unreachable" in str(exc)
    return isinstance(exc, RETRYABLE)


def publish(cfg: CollectorConfig, month: str, edition: EditionName, root: Path, *,
            lang: Lang | None = None, now: datetime | None = None, retries: int = 0,
            retry_wait_s: float = 600.0,
            on_failure: Callable[[int, BaseException], None] | None = None,
            sleep: Callable[[float], None] = time.sleep) -> EditionResult:
    """Publish one edition of ``month`` into the archive ``root`` and rebuild the index.

    A retryable failure (InfluxDB down, disk full) is logged, ``on_failure(attempt, exc)``
    is called, and after ``retry_wait_s`` the whole edition is made again, up to
    ``retries`` more times; then :class:`EditionError` is raised. Other errors (a bad
    month, bad config) raise at once. Either way the archive is left as it was.
    """
    try:
        month = data.Month.parse(month, cfg.bulletin.timezone).label
    except data.MonthError as exc:  # before any folder is made for it
        raise BulletinInputError(str(exc)) from None
    attempt = 0
    while True:
        attempt += 1
        try:
            with _locked(root):
                result = _attempt(cfg, month, edition, root, lang, now)
                result.attempts = attempt
                targets = {"fixed": cfg.targets.fixed_mbps, "mobile": cfg.targets.mobile_mbps}
                result.index = archive.build_index(root, cfg.bulletin.province, targets)
            log.info("bulletin %s %s edition published in %s (attempt %d)", month, edition,
                     result.folder, attempt)
            return result
        except Exception as exc:
            if not _retryable(exc):
                raise
            log.error("bulletin %s %s edition: attempt %d of %d failed: %s", month, edition,
                      attempt, retries + 1, exc)
            if on_failure:
                on_failure(attempt, exc)
            if attempt > retries:
                raise EditionError(f"the {edition} edition of {month} failed after "
                                   f"{attempt} attempt(s): {exc}") from exc
            sleep(retry_wait_s)


def run_metric_line(month: str, edition: str, ok: bool, attempts: int, *,
                    late_results: int | None = None, mail: str = "",
                    at: datetime | None = None) -> str:
    """The ``bulletin_runs`` point of one run (docs/operations.md, docs/schema.md)."""
    fields: dict[str, float | int | bool | str] = {"ok": int(ok), "attempts": attempts}
    if late_results is not None:
        fields["late_results"] = late_results
    if mail:
        fields["mail"] = mail
    ts = at or datetime.now(UTC)
    return line(BULLETIN_RUNS, {"edition": edition, "month": month}, fields,
                int(ts.timestamp() * 1000))


def write_run_metric(settings: InfluxSettings, point: str) -> str | None:
    """Write the run's point; returns why it could not be written (None when written).

    Never raises: the run's own outcome (exit code, journal) must not depend on it.
    """
    try:
        with InfluxClient(settings) as client:
            client.write_lines([point])
    except (InfluxError, OSError) as exc:
        log.error("bulletin_runs point not written to %s: %s", settings.url, exc)
        return str(exc)
    return None
