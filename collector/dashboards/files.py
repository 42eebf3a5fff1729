"""Everything generated under ``dashboards/``: render, write, and compare with disk."""

from __future__ import annotations

from pathlib import Path

from collector.dashboards.build import BuildConfig, render_all
from collector.dashboards.provisioning import render_provisioning

#: The package folder; generated files live under it (json/, provisioning/).
ROOT = Path(__file__).resolve().parent


def render(cfg: BuildConfig) -> dict[str, str]:
    """Relative path -> text for every generated file."""
    return render_all(cfg) | render_provisioning(cfg)


def write(cfg: BuildConfig, root: Path = ROOT) -> list[Path]:
    """Write every generated file under ``root``; returns the paths written."""
    written = []
    for rel, text in render(cfg).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
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
