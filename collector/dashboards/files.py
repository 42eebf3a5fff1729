"""Everything generated under ``dashboards/``: render, write, and compare with disk."""

from __future__ import annotations

from pathlib import Path

from collector.dashboards.build import BuildConfig, render_all
from collector.dashboards.provisioning import render_provisioning
from netmon.fsutil import atomic_write

#: The package folder; generated files live under it (json/, provisioning/).
ROOT = Path(__file__).resolve().parent


def render(cfg: BuildConfig) -> dict[str, str]:
    """Relative path -> text for every generated file."""
    return render_all(cfg) | render_provisioning(cfg)


def write(cfg: BuildConfig, root: Path = ROOT) -> list[Path]:
    """Write every generated file under ``root`` (each atomically: Grafana's provisioning
    may re-read a dashboard at any moment); returns the paths written."""
    written = []
    for rel, text in render(cfg).items():
        path = root / rel
        atomic_write(path, text, mode=0o644)  # read by the grafana account
        written.append(path)
    return written


def stale(cfg: BuildConfig, root: Path = ROOT) -> list[str]:
    """Relative paths whose file on disk is missing or differs from the generated text."""
    out = []
    for rel, text in render(cfg).items():
        path = root / rel
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            out.append(rel)
    return out
