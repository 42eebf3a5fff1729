"""The error every fleet command raises for an expected failure."""

from __future__ import annotations

from netmon.errors import EXIT_INPUT, EXIT_RUNTIME, NetmonError


class FleetError(NetmonError):
    """A fleet command failed. ``usage`` is True for bad input (exit 2), False for a
    runtime failure such as an unreachable or refusing broker (exit 1)."""

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage
        self.exit_code = EXIT_INPUT if usage else EXIT_RUNTIME
