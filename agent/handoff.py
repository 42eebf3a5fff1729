"""From the start stage to the run-time image: the validated config, handed over by fd.

``netmon-agent run`` starts by validating the config (pydantic: every bad key named, exit
2), then replaces itself with the run-time image (:func:`exec_runtime`: ``os.execv``, same
PID, so systemd's ``Type=notify``, ``sd_notify``, the watchdog and the state file's pid
stay right). The image is the same command line plus ``--handoff-fd N``: it reads the
validated config as JSON from that inherited descriptor (an anonymous memory file, never
on disk, never in argv or a log line: it may hold the broker password) and never needs to
validate it again (issue 20: a run time that does not load pydantic).

This module imports nothing that imports pydantic: the run-time image loads it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from datetime import date, datetime, time
from enum import Enum
from pathlib import PurePath
from typing import Any, NoReturn, Protocol

from netmon.errors import NetmonError

#: The argument the run-time image gets: the descriptor holding the config.
FLAG = "--handoff-fd"
#: Set (to anything but "" or "0") to run validation and the run time in one process
#: (debugging; the run time then holds pydantic, about 15 MB more).
ONE_PROCESS_ENV = "NETMON_AGENT_ONE_PROCESS"
#: Marks the JSON so a descriptor holding anything else is refused with a clear reason.
FORMAT = "netmon-agent-config/1"


class HandoffError(NetmonError):
    """The run-time image could not read the config the start stage handed over."""


class _Dumpable(Protocol):
    def model_dump(self) -> dict[str, Any]: ...


class _Spec(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def options(self) -> _Dumpable: ...


class _Config(_Dumpable, Protocol):
    @property
    def tests(self) -> Mapping[str, _Spec]: ...


def plain(value: Any) -> Any:
    """``value`` (a ``model_dump()`` in python mode) as JSON types, secrets included:
    the run-time image needs the real password, which ``mode="json"`` would mask."""
    secret = getattr(value, "get_secret_value", None)
    if callable(secret):
        return secret()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, Enum):
        return plain(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot hand over a {type(value).__name__}")


def encode(cfg: _Config) -> bytes:
    """The validated config as the JSON the run-time image reads: ``config`` as the file
    gave it (defaults filled in), and per test its method's ``kind`` and every option
    (defaults included), so the run time needs none of the models that declare them."""
    tests = {name: {"kind": spec.kind, "options": plain(spec.options.model_dump())}
             for name, spec in cfg.tests.items()}
    return json.dumps({"format": FORMAT, "config": plain(cfg.model_dump()), "tests": tests},
                      ensure_ascii=False, allow_nan=False).encode()


def write_fd(data: bytes) -> int:
    """An inheritable descriptor positioned at the start of ``data``: an anonymous memory
    file (no name on any filesystem); where there is none, an unlinked 0600 temporary
    file."""
    try:
        fd = os.memfd_create("netmon-agent-config", 0)
    except (AttributeError, OSError):
        import tempfile  # only here: the run time does not need it

        with tempfile.TemporaryFile() as tmp:  # created 0600, its name already unlinked
            fd = os.dup(tmp.fileno())
        os.fchmod(fd, 0o600)
    os.set_inheritable(fd, True)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def read_fd(fd: int) -> dict[str, Any]:
    """What :func:`encode` handed over on ``fd`` (closed here: nothing the image starts
    inherits it): ``config`` and ``tests``. HandoffError names what is wrong."""
    try:
        with os.fdopen(fd, "rb") as fh:
            doc = json.loads(fh.read())
    except (OSError, ValueError) as exc:
        raise HandoffError(f"{FLAG} {fd}: cannot read the handed-over config: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or \
            not isinstance(doc.get("config"), dict) or not isinstance(doc.get("tests"), dict):
        raise HandoffError(f"{FLAG} {fd}: not a config handed over by `netmon-agent run` "
                           f"(expected format {FORMAT!r})")
    return doc


def one_process() -> bool:
    """Whether :data:`ONE_PROCESS_ENV` asks to stay in one process."""
    return os.environ.get(ONE_PROCESS_ENV, "") not in ("", "0")


def runtime_argv(fd: int) -> list[str]:
    """The run-time image's command line: this process's own (interpreter options,
    ``-m agent.cli run --config ...`` or the console script: what systemd and
    ``netmon-agent status`` see stays the same) plus :data:`FLAG`."""
    return [*sys.orig_argv, FLAG, str(fd)]


def exec_runtime(cfg: _Config) -> NoReturn:
    """Replace this process with the run-time image holding ``cfg``."""
    fd = write_fd(encode(cfg))
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.execv(sys.executable, runtime_argv(fd))
