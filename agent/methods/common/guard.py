"""How a failed measurement becomes an error result: :class:`MeasureError` (a contract
error code plus the tool's or the OS's own words), :func:`os_error` (errno -> code) and
:func:`guarded`, which runs a method body under its hard timeout and turns every failure
into a result, so a measurement never raises into the runtime.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from agent.methods.base import MethodContext, make_result
from netmon.contractbase import now_utc
from netmon.errors import NetmonError

if TYPE_CHECKING:
    from netmon.contract import ErrorCode
    from netmon.wire import Result


class MeasureError(NetmonError):
    """A measurement failed; ``code`` is a contract error code, the message the tool's words."""

    def __init__(self, code: ErrorCode, message: str,
                 metrics: dict[str, float] | None = None) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        #: What was measured before the failure (e.g. ``bytes`` for data budgets).
        self.metrics = metrics or {}


def os_error(exc: OSError, what: str) -> MeasureError:
    """Map an OSError to a contract error code, keeping the OS's words."""
    code: ErrorCode
    if exc.errno == errno.ECONNREFUSED:
        code = "refused"
    elif exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL,
                       errno.ENODEV, errno.ENONET):
        code = "unreachable"
    elif exc.errno in (errno.ETIMEDOUT,):
        code = "timeout"
    elif exc.errno in (errno.EPERM, errno.EACCES):
        code = "forbidden"
    else:
        code = "unreachable"
    # asyncio rewrites the message ("Connect call failed"); the errno text is what a
    # person needs ("Connection refused").
    words = os.strerror(exc.errno) if exc.errno else str(exc)
    return MeasureError(code, f"{what}: {words}")


async def guarded(ctx: MethodContext, method: str, target: str, timeout: float,
                  body: Callable[[], Awaitable[list[Result]]]) -> list[Result]:
    """Run a method body under its hard timeout and turn every failure into an error result
    (a measurement never raises into the runtime; cancellation still propagates)."""
    started = now_utc()
    t0 = time.monotonic()
    metrics: dict[str, float] = {}
    try:
        return await asyncio.wait_for(body(), timeout)
    except MeasureError as exc:
        err: tuple[ErrorCode, str] = (exc.code, exc.message)
        metrics = exc.metrics
    except TimeoutError:
        err = ("timeout", f"{method} test against {target} exceeded timeout_s={timeout:g}")
    except Exception as exc:  # a bug must not take the agent down; report it instead
        err = ("internal", f"{type(exc).__name__}: {exc}")
    return [make_result(ctx, method, target, started, time.monotonic() - t0, metrics,
                        error=err)]
