"""The one translation mechanism: tables of ``key: (vi, en)`` pairs, Vietnamese first.

Each user-facing area keeps its own table next to its code (``collector/bulletin/i18n.py``,
``collector/dashboards/i18n.py``) and its ``t()`` is a :class:`Texts` over that table.
The rules are the same everywhere:

* Vietnamese is the default language (the province's officials read the output);
* ``{placeholders}`` are filled only when values are given, so a text without values may
  contain braces;
* the result is NFC-normalised, so Vietnamese diacritics are single code points whatever
  the source file or a filled-in value used (HTML, PDF, CSV and Grafana then agree);
* an unknown key or language is a ``KeyError`` / ``ValueError`` naming it, never a
  silent fallback.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Final, Literal

Lang = Literal["vi", "en"]
#: Every language, in the order of the pairs in a table.
LANGS: Final[tuple[Lang, ...]] = ("vi", "en")
DEFAULT_LANG: Final[Lang] = "vi"

#: ``key -> (vi, en)``.
Table = Mapping[str, tuple[str, str]]


class Texts:
    """One area's table as a ``t(key, lang="vi", **values)`` callable.

    ``key`` and ``lang`` are positional-only, so a placeholder may have any name.
    """

    def __init__(self, table: Table, what: str = "text") -> None:
        self.table = table
        #: Names the table in the KeyError for a missing key (``no bulletin string 'x'``).
        self.what = what

    def __call__(self, key: str, lang: Lang = DEFAULT_LANG, /, **values: object) -> str:
        """The text for ``key`` in ``lang``, placeholders filled, NFC."""
        try:
            pair = self.table[key]
        except KeyError:
            raise KeyError(f"no {self.what} {key!r}") from None
        try:
            text = pair[LANGS.index(lang)]
        except ValueError:
            raise ValueError(f"unknown language {lang!r} "
                             f"(known: {', '.join(LANGS)})") from None
        if values:
            text = text.format(**values)
        return unicodedata.normalize("NFC", text)
