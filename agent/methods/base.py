"""The one interface every measurement method implements.

A method is declared in the core (:mod:`netmon.methods`: name, kind, options model, one
line of doc) and implemented here by a small module exposing a class that satisfies
:class:`Method` and points at its declaration; the class is registered in
``agent/methods/registry.py``. It is configured by its own TOML table
(``[tests.<name>]`` with ``method = "<method name>"``) validated by the declared options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar, Protocol, TypeVar

# LinkBinding is the run-time config's view of a link (defined there, beside Router and
# Modem); re-exported here, where the methods have always found it.
from agent.runconfig import LinkBinding as LinkBinding
from netmon.declarations import Declaration
from netmon.wire import ErrorInfo, Metrics, Result

if TYPE_CHECKING:
    from netmon.contract import ErrorCode
    from netmon.methods import MethodOptions


@dataclass(frozen=True)
class MethodContext:
    """What a method needs to know besides its options."""

    probe_id: str
    agent_version: str
    link: LinkBinding
    flags: tuple[str, ...] = field(default=())  # e.g. ("clock_unsynced",) added by the runtime


#: The options model a method's ``run`` takes (its declared ``options``).
OptionsT = TypeVar("OptionsT", bound="MethodOptions", contravariant=True)


class Method(Protocol[OptionsT]):
    """A measurement method plugin: the implementation of one declaration.

    Generic in its options so each method's ``run`` takes its own options model; the
    registry, looked up by name, holds ``Method[Any]``.
    """

    #: Name, kind and options model, declared once in :mod:`netmon.methods`.
    decl: ClassVar[Declaration]

    async def run(self, ctx: MethodContext, options: OptionsT) -> list[Result]:
        """Run one test and return its result(s); never raise for a failed measurement,
        return a result carrying ``error`` instead."""
        ...


def make_result(ctx: MethodContext, method: str, target: str, started_at: datetime,
                duration_s: float, metrics: dict[str, float] | None = None,
                error: tuple[ErrorCode, str] | None = None,
                flags: tuple[str, ...] = ()) -> Result:
    """Build a contract result for this context (one place so every method agrees).

    Checked against the contract here, as building the model did: a method that measured
    something the contract refuses fails inside its own guard (an ``internal`` error
    result), never later when the result is spooled. :class:`netmon.wire.WireError`."""
    if started_at.tzinfo is not None:  # the model's UTC with milliseconds (a naive time
        started_at = started_at.astimezone(UTC)  # is refused by the check below)
        started_at = started_at.replace(microsecond=started_at.microsecond // 1000 * 1000)
    result = Result(
        probe_id=ctx.probe_id, link=ctx.link.name, access=ctx.link.access, isp=ctx.link.isp,
        method=method, target=target, started_at=started_at, duration_s=max(0.0, duration_s),
        metrics=Metrics(metrics),
        error=ErrorInfo(code=error[0], message=error[1][:2000]) if error else None,
        flags=tuple(dict.fromkeys(ctx.flags + flags)), agent_version=ctx.agent_version)
    result.wire()
    return result
