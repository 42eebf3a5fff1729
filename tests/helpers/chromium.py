"""Real headless Chromium (Debian package ``chromium``) driven over the Chrome DevTools
Protocol on a pipe (``--remote-debugging-pipe``: requests on fd 3, replies on fd 4, each
JSON message ended by a NUL byte), so no WebSocket library is needed.

Used by the bulletin archive tests to load pages at a given window size, evaluate
JavaScript in them (text, scroll width, images) and save screenshots.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-default-apps", "--hide-scrollbars", "--mute-audio")
#: Generous: the machine is shared and Chromium's first start is slow.
DEADLINE_S = 90.0


class ChromiumError(RuntimeError):
    """The browser failed, or a page did not load in time."""


def binary() -> str | None:
    """The chromium executable, or None when it is not installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


# The child needs the pipe ends at exactly fds 3 and 4: a small exec shim puts them there.
_SHIM = ("import os, sys; r, w = int(sys.argv[1]), int(sys.argv[2]); "
         "os.dup2(r, 3); os.dup2(w, 4); os.execv(sys.argv[3], sys.argv[3:])")


class Browser:
    """One Chromium process with a fresh profile in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        exe = binary()
        if exe is None:
            raise ChromiumError("chromium is not installed (scripts/setup installs it)")
        workdir.mkdir(parents=True, exist_ok=True)
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        self._log = open(workdir / "chromium.log", "wb")  # noqa: SIM115 (closed in close())
        argv = [sys.executable, "-c", _SHIM, str(to_chrome_r), str(from_chrome_w), exe,
                *FLAGS, f"--user-data-dir={workdir / 'profile'}", "--remote-debugging-pipe",
                "about:blank"]
        self.proc = subprocess.Popen(argv, pass_fds=(to_chrome_r, from_chrome_w),
                                     stdout=self._log, stderr=subprocess.STDOUT)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.workdir = workdir

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_chrome, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._replies[-1] = {"error": {"message": "browser pipe closed"}}
                    self._cond.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._replies[msg["id"]] = msg
                        self._cond.notify_all()
                else:
                    self._events.put(msg)

    def call(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None) -> dict[str, Any]:
        """Send one CDP command and wait for its reply; raises on a CDP error."""
        self._next_id += 1
        mid = self._next_id
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + DEADLINE_S
        with self._cond:
            while mid not in self._replies and -1 not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ChromiumError(f"no reply to {method} in {DEADLINE_S:.0f} s")
                self._cond.wait(left)
            reply = self._replies.pop(mid, None) or self._replies[-1]
        if "error" in reply:
            raise ChromiumError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def open(self, url: str, width: int, height: int, mobile: bool = False,
             scale: float = 1.0) -> Page:
        """A new tab with the given viewport (CSS pixels), loaded with ``url``."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target,
                                                      "flatten": True})["sessionId"]
        page = Page(self, session, target)
        page.call("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile})
        page.call("Page.enable")
        page.goto(url)
        return page

    def close(self) -> None:
        """Stop the browser."""
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(ChromiumError):
                    self.call("Browser.close")
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(20)
        finally:
            os.close(self._to_chrome)
            self._log.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Page:
    """One tab."""

    def __init__(self, browser: Browser, session: str, target: str) -> None:
        self.browser, self.session, self.target = browser, session, target

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A CDP command in this tab."""
        return self.browser.call(method, params, self.session)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                             "awaitPromise": True})
        if "exceptionDetails" in res:
            raise ChromiumError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def goto(self, url: str) -> None:
        """Navigate and wait until the document and every image have finished loading."""
        nav = self.call("Page.navigate", {"url": url})
        if nav.get("errorText"):
            raise ChromiumError(f"{url}: {nav['errorText']}")
        deadline = time.monotonic() + DEADLINE_S
        while True:
            state = self.evaluate(
                "document.readyState === 'complete' && location.href !== 'about:blank' && "
                "[...document.images].every(i => i.complete)")
            if state:
                return
            if time.monotonic() > deadline:
                raise ChromiumError(f"{url} did not finish loading in {DEADLINE_S:.0f} s")
            time.sleep(0.1)

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        """Save a PNG of the page (the whole page when ``full_page``)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": size["width"],
                              "height": size["height"], "scale": 1}
        data = self.call("Page.captureScreenshot", params)["data"]
        path.write_bytes(base64.b64decode(data))
        return path
