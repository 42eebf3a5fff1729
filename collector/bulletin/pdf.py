"""HTML to PDF with WeasyPrint (PyPI; uses the system's Pango, HarfBuzz and fontconfig).

Fonts come from fontconfig: the template asks for Noto Sans, then DejaVu Sans, both with
full Vietnamese coverage and installed by ``scripts/setup`` (fonts-noto-core,
fonts-dejavu-core). WeasyPrint embeds the subset it used, so the PDF reads anywhere.
"""

from __future__ import annotations

import logging
from pathlib import Path

from collector.bulletin.gcpause import gc_paused
from netmon.errors import NetmonError


class PdfError(NetmonError, RuntimeError):
    """The PDF could not be produced (library or system libraries missing)."""


def html_to_pdf(html: str, base_dir: Path, out: Path) -> None:
    """Render ``html`` (images resolved against ``base_dir``) to ``out``."""
    try:
        import weasyprint
    except (ImportError, OSError) as exc:  # OSError: Pango missing
        raise PdfError(f"WeasyPrint is not usable ({exc}); install hatinh-netmon[collector] "
                       "and the Pango libraries (scripts/setup)") from None
    # WeasyPrint logs every unsupported CSS property at WARNING; they are not errors here.
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    # WeasyPrint's boxes (hundreds of thousands of objects) live until the PDF is written:
    # with the cyclic collector on, a third of its CPU went to traversing them (gcpause.py).
    with gc_paused():
        weasyprint.HTML(string=html, base_url=str(base_dir)).write_pdf(str(out))
