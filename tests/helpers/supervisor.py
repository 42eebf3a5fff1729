"""A stand-in for systemd in tests (PID 1 here is not systemd, so the real unit cannot run):
it runs ``ExecStartPre`` then ``ExecStart`` and starts the service again when it exits with
a non-zero status other than 2, like the agent unit's ``Restart=always`` with
``RestartPreventExitStatus=2`` (docs/agent.md). Command paths are resolved at each start,
so a symlink switched by an update takes effect at the next start, as under systemd."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path


class FakeSystemd:
    """Stand-in for systemd supervising one service (see the module docstring)."""

    def __init__(self, pre: list[str], main: list[str], log: Path, cwd: Path,
                 restart_s: float = 0.5) -> None:
        self.pre, self.main, self.log, self.cwd = pre, main, log, cwd
        self.restart_s = restart_s
        self.exits: list[int] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        """Start supervising."""
        self._thread.start()

    def _loop(self) -> None:
        env = os.environ | {"PYTHONUNBUFFERED": "1"}
        while not self._stop.is_set():
            with open(self.log, "ab") as out:
                subprocess.run(self.pre, stdout=out, stderr=subprocess.STDOUT, cwd=self.cwd,
                               env=env, timeout=120, check=False)
                self.proc = subprocess.Popen(self.main, stdout=out, stderr=subprocess.STDOUT,
                                             cwd=self.cwd, env=env)
            code = self.proc.wait()
            self.exits.append(code)
            if self._stop.is_set() or code in (0, 2):
                return
            self._stop.wait(self.restart_s)

    def stop(self) -> None:
        """Stop the service (SIGTERM, then SIGKILL) and the supervision."""
        self._stop.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        deadline = time.monotonic() + 30
        while self._thread.is_alive() and time.monotonic() < deadline:
            self._thread.join(0.5)
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
