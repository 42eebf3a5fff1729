"""The one interface every measurement method implements.

A method is a small module exposing a class that satisfies :class:`Method`; it is
registered in ``agent/methods/__init__.py`` and configured by its own TOML table
(``[tests.<name>]`` with ``method = "<method name>"``) validated by its ``Options`` model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from netmon.contract import Access, ErrorCode, ErrorInfo, Metrics, ResultMessage
from netmon.contract import Method as MethodName

Kind = Literal["throughput", "latency"]


@dataclass(frozen=True)
class LinkBinding:
    """The link a test runs on and how to pin traffic to it."""

    name: str
    access: Access
    isp: str
    interface: str | None = None  # SO_BINDTODEVICE / iperf3 --bind-dev
    source_address: str | None = None  # bind() before connect


@dataclass(frozen=True)
class MethodContext:
    """What a method needs to know besides its options."""

    probe_id: str
    agent_version: str
    link: LinkBinding
    flags: tuple[str, ...] = field(default=())  # e.g. ("clock_unsynced",) added by the runtime


class MethodOptions(BaseModel):
    """Options shared by every method; each method subclasses this with its own keys."""

    model_config = ConfigDict(extra="forbid")

    target: str = Field(min_length=1, description="host, host:port or URL to measure against")
    timeout_s: float = Field(60.0, gt=0, le=3600, description="hard limit for the whole test")


class Method(Protocol):
    """A measurement method plugin."""

    name: ClassVar[MethodName]
    kind: ClassVar[Kind]
    Options: ClassVar[type[MethodOptions]]

    async def run(self, ctx: MethodContext, options: MethodOptions) -> list[ResultMessage]:
        """Run one test and return its result(s); never raise for a failed measurement,
        return a result carrying ``error`` instead."""
        ...


def make_result(ctx: MethodContext, method: MethodName, target: str, started_at: datetime,
                duration_s: float, metrics: dict[str, float] | None = None,
                error: tuple[ErrorCode, str] | None = None,
                flags: tuple[str, ...] = ()) -> ResultMessage:
    """Build a contract result for this context (one place so every method agrees)."""
    return ResultMessage(
        probe_id=ctx.probe_id, link=ctx.link.name, access=ctx.link.access, isp=ctx.link.isp,
        method=method, target=target, started_at=started_at, duration_s=max(0.0, duration_s),
        metrics=Metrics(**(metrics or {})),
        error=ErrorInfo(code=error[0], message=error[1][:2000]) if error else None,
        flags=tuple(dict.fromkeys(ctx.flags + flags)), agent_version=ctx.agent_version,
    )
