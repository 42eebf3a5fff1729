"""What a test plan says about a probe's links, without pydantic: shared by the validated
plan (:class:`netmon.plan.TestPlan`) and the agent run time's plain one
(:class:`agent.runconfig.Plan`), so the rules are written once."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Protocol

#: Bytes in a budget's megabyte (decimal, as operators' data plans count).
MB = 1_000_000


class _Spec(Protocol):
    @property
    def links(self) -> Collection[str] | None: ...


class _PlanFields(Protocol):
    @property
    def tests(self) -> Mapping[str, _Spec]: ...

    @property
    def budgets_mb(self) -> Mapping[str, float]: ...


class PlanLinks:
    """``problems`` and ``budget_bytes`` from a plan's ``tests`` and ``budgets_mb``."""

    def problems(self: _PlanFields, links: Collection[str]) -> list[str]:
        """``key: why`` for each reference to a link not in ``links`` (the names of the
        probe's links; a dict of them works)."""
        out = []
        known = ", ".join(sorted(links)) or "(none)"
        for name, spec in self.tests.items():
            for link in spec.links or ():
                if link not in links:
                    out.append(f"tests.{name}.links: unknown link {link!r} (known: {known})")
        for link in self.budgets_mb:
            if link not in links:
                out.append(f"budgets_mb.{link}: unknown link {link!r} (known: {known})")
        return out

    def budget_bytes(self: _PlanFields, link: str) -> int | None:
        """The monthly budget of ``link`` in bytes, or None when unmetered."""
        mb = self.budgets_mb.get(link)
        return int(mb * MB) if mb is not None else None
