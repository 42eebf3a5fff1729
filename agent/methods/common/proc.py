"""Subprocesses for measurement tools (iperf3): a tool never outlives its timeout."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from agent.methods.common.guard import MeasureError


@dataclass
class ToolOutput:
    """What a finished subprocess printed."""

    returncode: int
    stdout: str
    stderr: str


async def run_tool(argv: Sequence[str], timeout: float) -> ToolOutput:
    """Run a tool, kill its whole process group on timeout or cancellation.

    Raises MeasureError("tool_missing") when the binary is absent and
    MeasureError("timeout") when it ran out of time.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            start_new_session=True)
    except FileNotFoundError:
        raise MeasureError("tool_missing", f"{argv[0]} not found: install it") from None
    except PermissionError as exc:
        raise MeasureError("tool_missing", f"{argv[0]} not executable: {exc}") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException as exc:
        _kill_group(proc)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 5)
        if isinstance(exc, TimeoutError):
            raise MeasureError("timeout", f"{os.path.basename(argv[0])} did not finish within "
                                          f"{timeout:g}s and was killed") from None
        raise
    return ToolOutput(proc.returncode or 0, out.decode(errors="replace"),
                      err.decode(errors="replace"))


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, 9)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
