"""Administrative units: the official commune-level map and the reorganisation before it.

The reference data is one CSV with a row per (new unit, old unit) pair, as published for
the 1 July 2025 reorganisation (``reference/ha-tinh-communes-2025.csv``, provenance in
``reference/README.md``)::

    new_code,new_name,old_code,old_name,old_district_code,old_district,share

``share`` is ``full`` (the whole old unit went into the new one) or ``partial`` (part of
it did: an old commune split across several new units). The next reorganisation is a new
file and a new ``effective`` date in ``[registry]``; nothing here names a unit.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

from collector.core.schema import tag_value_problem
from netmon.errors import EXIT_INPUT, NetmonError

#: The packaged map: Hà Tĩnh from 1 July 2025 (Resolution 1665/NQ-UBTVQH15).
DEFAULT_FILE = Path(__file__).resolve().parent / "reference" / "ha-tinh-communes-2025.csv"
DEFAULT_EFFECTIVE = date(2025, 7, 1)
COLUMNS = ("new_code", "new_name", "old_code", "old_name", "old_district_code",
           "old_district", "share")
CODE_PATTERN = r"^[0-9]{5}$"

Share = Literal["full", "partial"]


class UnitsError(NetmonError, ValueError):
    """A reference-data file that cannot be used; names the file and line."""

    exit_code = EXIT_INPUT


@dataclass(frozen=True)
class OldUnit:
    """A unit of the map before ``effective``."""

    code: str
    name: str
    district_code: str
    district: str


@dataclass(frozen=True)
class Unit:
    """A commune-level unit of the current map and the old units it was formed from."""

    code: str
    name: str
    predecessors: tuple[tuple[OldUnit, Share], ...]

    @property
    def is_ward(self) -> bool:
        """Phường (ward) rather than xã (commune)."""
        return self.name.startswith("Phường")

    @property
    def old_districts(self) -> tuple[str, ...]:
        """The old districts its predecessors belonged to (usually one)."""
        return tuple(sorted({old.district for old, _ in self.predecessors}))


@dataclass(frozen=True)
class UnitMap:
    """The current units by code, and where each old unit went."""

    effective: date
    units: dict[str, Unit]
    #: old code -> [(new code, share)], for placing a site known by its old unit
    successors: dict[str, tuple[tuple[str, Share], ...]]
    old_units: dict[str, OldUnit]
    source: Path

    def get(self, code: str) -> Unit | None:
        """The current unit with this code, or None."""
        return self.units.get(code)

    def sorted_units(self) -> list[Unit]:
        """Every current unit, by code (the official order)."""
        return [self.units[c] for c in sorted(self.units)]


def load_units(path: Path = DEFAULT_FILE, effective: date = DEFAULT_EFFECTIVE) -> UnitMap:
    """Read and check a reference-data file; UnitsError names the line and column."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            header = tuple(reader.fieldnames or ())
            if header[: len(COLUMNS)] != COLUMNS:
                raise UnitsError(f"{path}: header must start with {','.join(COLUMNS)}; "
                                 f"got {','.join(header)}")
            rows = [(reader.line_num, row) for row in reader]
    except FileNotFoundError:
        raise UnitsError(f"{path}: reference data file not found") from None
    except UnicodeDecodeError as exc:
        raise UnitsError(f"{path}: not UTF-8: {exc}") from None
    names: dict[str, str] = {}
    preds: dict[str, list[tuple[OldUnit, Share]]] = {}
    succ: dict[str, list[tuple[str, Share]]] = {}
    olds: dict[str, OldUnit] = {}
    for line_no, row in rows:
        where = f"{path}: line {line_no}"
        values = {k: unicodedata.normalize("NFC", (row.get(k) or "").strip()) for k in COLUMNS}
        for key in ("new_code", "old_code"):
            if not re.fullmatch(CODE_PATTERN, values[key]):
                raise UnitsError(f"{where}: {key} {values[key]!r} is not a 5-digit code")
        for key in ("new_name", "old_name", "old_district"):
            if not values[key]:
                raise UnitsError(f"{where}: {key} is empty")
        for key in ("new_name", "old_district"):  # they become the commune/district tags
            problem = tag_value_problem(values[key])
            if problem:
                raise UnitsError(f"{where}: {key} cannot be stored as an InfluxDB tag: "
                                 f"{problem}")
        share = values["share"]
        if share not in ("full", "partial"):
            raise UnitsError(f"{where}: share must be 'full' or 'partial', got {share!r}")
        code = values["new_code"]
        if names.setdefault(code, values["new_name"]) != values["new_name"]:
            raise UnitsError(f"{where}: unit {code} is named {names[code]!r} on an earlier "
                             f"line and {values['new_name']!r} here")
        old = OldUnit(values["old_code"], values["old_name"], values["old_district_code"],
                      values["old_district"])
        if olds.setdefault(old.code, old) != old:
            raise UnitsError(f"{where}: old unit {old.code} differs from an earlier line")
        preds.setdefault(code, []).append((old, share))  # type: ignore[arg-type]
        succ.setdefault(old.code, []).append((code, share))  # type: ignore[arg-type]
    if not names:
        raise UnitsError(f"{path}: no units")
    for old_code, targets in succ.items():
        if len(targets) > 1 and any(s == "full" for _, s in targets):
            raise UnitsError(f"{path}: old unit {old_code} is 'full' in one new unit but "
                             f"also listed under {len(targets) - 1} other(s)")
    units = {c: Unit(c, names[c], tuple(preds[c])) for c in names}
    return UnitMap(effective=effective, units=units,
                   successors={k: tuple(v) for k, v in succ.items()}, old_units=olds,
                   source=path)
