"""i-Speed reference medians entered by the NOC, shown beside the province's own medians.

VNNIC publishes i-Speed figures monthly (national, and by province when it does); the NOC
copies the ones it wants beside the bulletin into a small TOML file
(``bulletin.reference_file``, example ``examples/ispeed-reference.toml``)::

    [[median]]
    month = "2025-09"
    scope = "national"          # or "province"
    access = "fixed"            # or "mobile"
    download_mbps = 272.0
    upload_mbps = 250.0         # optional
    source = "VNNIC i-Speed, báo cáo tháng 9/2025"

Every row names its ``source``: a figure nobody can trace does not go in a bulletin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from netmon.errors import EXIT_INPUT, NetmonError
from netmon.settings import ConfigError, describe_errors, read_toml

Scope = Literal["national", "province"]
SCOPE_ORDER: tuple[Scope, ...] = ("national", "province")


class ReferenceError(NetmonError, ValueError):
    """The reference file cannot be used; names the file, row and key."""

    exit_code = EXIT_INPUT


class ReferenceMedian(BaseModel):
    """One published i-Speed median."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    month: Annotated[str, StringConstraints(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")]
    scope: Scope
    access: Literal["fixed", "mobile"]
    download_mbps: float = Field(gt=0, le=100_000, allow_inf_nan=False)
    upload_mbps: float | None = Field(None, gt=0, le=100_000, allow_inf_nan=False)
    source: Annotated[str, StringConstraints(min_length=3, max_length=500,
                                             strip_whitespace=True)]


def load_reference(path: Path) -> list[ReferenceMedian]:
    """Every row of the file; :class:`ReferenceError` names each bad row and key."""
    where = f"bulletin.reference_file {path}"
    try:
        data = read_toml(path)
    except ConfigError as exc:
        raise ReferenceError(f"{where}: " + "; ".join(exc.problems)) from None
    extra = sorted(set(data) - {"median"})
    if extra:
        raise ReferenceError(f"{where}: unknown top-level key(s) {extra} (expected [[median]] "
                             "tables)")
    rows = data.get("median", [])
    if not isinstance(rows, list):
        raise ReferenceError(f"{where}: median must be an array of tables ([[median]])")
    out: list[ReferenceMedian] = []
    problems: list[str] = []
    seen: set[tuple[str, str, str]] = set()
    for i, row in enumerate(rows):
        try:
            m = ReferenceMedian.model_validate(row)
        except ValidationError as exc:
            problems.extend(f"median[{i}].{p}" for p in describe_errors(exc))
            continue
        key = (m.month, m.scope, m.access)
        if key in seen:
            problems.append(f"median[{i}]: a second {m.scope} {m.access} row for {m.month}")
            continue
        seen.add(key)
        out.append(m)
    if problems:
        raise ReferenceError(f"{where}: " + "; ".join(problems))
    return out


def for_month(rows: list[ReferenceMedian], month: str) -> list[ReferenceMedian]:
    """The rows of one month, national first, fixed before mobile."""
    picked = [r for r in rows if r.month == month]
    return sorted(picked, key=lambda r: (SCOPE_ORDER.index(r.scope), r.access != "fixed"))
