"""Signed agent updates with automatic rollback (issue 18), on the probe.

Layout under ``[update] root`` (e.g. ``/opt/netmon/releases``)::

    versions/<version>/   one virtual environment per agent version ("thin": its own
                          site-packages hold the release's wheels; a .pth file adds the
                          base environment's site-packages, the dependencies, after them)
    current -> versions/<v>   what the service runs (``current/bin/python -m agent.cli run``)
    stable  -> versions/<v>   the last version that passed its health check
    downloads/<sha256>/<wheel>   verified wheels (a retry does not download them again)
    update-state.json     trial, failed versions, last event, last manifest serial

A release (a :class:`~netmon.contract.ReleaseManifest` retained on ``Topics.updates``):

1. the running agent verifies the NOC signature, that it is targeted (named, or in the
   rollout percentage), that the serial is new and the version neither running nor
   failed before;
2. checks the download fits the data budget of ``[update] link`` (metered links), fetches
   each wheel from the manifest's ``base_url`` (the measurement server's site), counts
   the bytes against the link's month and checks its size and SHA-256;
3. installs them into ``versions/<new>``, records the trial (version, previous, deadline)
   and switches ``current`` with an atomic symlink rename, then exits with
   :data:`~netmon.contract.EXIT_RESTART` so the service manager starts the new version;
4. the new version checks its health (:class:`TrialHealth`): connected, and a
   successful result *measured by this version* acknowledged (the collector's receipt,
   or the broker's PUBACK with ``receipts = false``) before the deadline; results the
   previous version left in the spool, and failed ones, do not count. Then ``stable``
   follows ``current``. Otherwise it records the problem and exits with EXIT_RESTART;
5. before every start, :func:`guard` (``netmon-agent update-guard``, run from the
   *stable* environment as ``ExecStartPre``) counts the trial's starts and switches
   ``current`` back to the previous version when the deadline passed or the new version
   did not stay up ``max_starts`` times: a version that cannot even start is rolled back
   by code that is not its own. The failed version and why are reported in the status
   message (``update.failed``) and never retried for that manifest.

A release refused for the data budget (step 2) is not marked failed: it stays
``pending`` and is checked again by itself every ``budget_retry_s`` and at the start of
the budget month (nothing is downloaded until it fits), for at most
``budget_wait_days``; a newer manifest, or the retained one redelivered at a reconnect,
replaces the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agent import validate_child
from netmon import __version__
from netmon.contractbase import now_utc
from netmon.fsutil import atomic_write
from netmon.jsonutil import format_time

if TYPE_CHECKING:
    from agent.config import UpdateSettings as UpdateSettings

log = logging.getLogger("netmon.agent.update")

STATE_FILE = "update-state.json"
#: Failed versions remembered (the oldest is forgotten first).
MAX_FAILED = 10


class UpdateFields(Protocol):
    """What the updater reads of ``[update]``: :class:`agent.config.UpdateSettings`
    (validated) or :class:`agent.runconfig.Update` (the run time's)."""

    @property
    def root(self) -> Path | None: ...
    @property
    def max_starts(self) -> int: ...
    @property
    def download_timeout_s(self) -> float: ...
    @property
    def budget_retry_s(self) -> float: ...
    @property
    def budget_wait_days(self) -> float: ...


def __getattr__(name: str) -> Any:
    # The settings model lives in agent.config (pydantic); imported from here by older
    # code, without making this module load pydantic.
    if name == "UpdateSettings":
        from agent.config import UpdateSettings

        return UpdateSettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class WheelRef:
    """One wheel of a release (the contract's ``WheelRef``)."""

    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """A release manifest validated by the contract's ``ReleaseManifest`` in the
    validation child (:mod:`agent.validate_child`), as plain data."""

    serial: int
    version: str
    base_url: str
    wheels: tuple[WheelRef, ...]
    probes: tuple[str, ...] | None
    percent: int
    health_timeout_s: float
    key_id: str
    signature: str

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Manifest:
        """From the child's answer (the model dumped by alias)."""
        probes = value.get("probes")
        return cls(serial=int(value["serial"]), version=str(value["version"]),
                   base_url=str(value["base_url"]),
                   wheels=tuple(WheelRef(name=w["name"], sha256=w["sha256"],
                                         size=int(w["size"])) for w in value["wheels"]),
                   probes=None if probes is None else tuple(probes),
                   percent=int(value["percent"]),
                   health_timeout_s=float(value["health_timeout_s"]),
                   key_id=str(value["key_id"]), signature=str(value["signature"]))


def parse_manifest(payload: bytes, trusted: Sequence[Any]) -> Manifest:
    """A manifest message checked as :func:`netmon.release.verify_manifest` does (size,
    JSON, signature present, the contract's model, the NOC signature), the model run in a
    short-lived child process so the run time keeps no pydantic. Raises
    :class:`UpdateRefused` with the same reasons (``too_large``, ``malformed``,
    ``unsigned``, ``unknown_key``, ``bad_signature``), or ``validation_failed`` when the
    child could not answer."""
    from netmon.sigcheck import SigningError, check_signature, decode_signed

    try:
        obj = decode_signed(payload, "manifest")
    except SigningError as exc:
        raise UpdateRefused(exc.reason, exc.detail) from None
    try:
        manifest = Manifest.from_json(validate_child.validate("manifest", payload))
    except validate_child.Refused as exc:
        raise UpdateRefused("malformed", "; ".join(exc.problems)) from None
    except validate_child.ChildFailed as exc:
        raise UpdateRefused("validation_failed", str(exc)) from None
    try:
        check_signature(obj, manifest.key_id, manifest.signature, trusted)
    except SigningError as exc:
        raise UpdateRefused(exc.reason, exc.detail) from None
    return manifest


# --------------------------------------------------------------------------- layout


class Layout:
    """Paths and state of an update root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.versions = root / "versions"
        self.current = root / "current"
        self.stable = root / "stable"
        self.downloads = root / "downloads"
        self.state_path = root / STATE_FILE

    def version_dir(self, version: str) -> Path:
        """Where ``version``'s environment lives."""
        return self.versions / version

    def read(self) -> dict[str, Any]:
        """The state (empty parts when missing)."""
        try:
            data: dict[str, Any] = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            data = {}
        data.setdefault("failed", {})
        data.setdefault("trial", None)
        data.setdefault("pending", None)
        return data

    def write(self, data: dict[str, Any]) -> None:
        """Replace the state atomically."""
        atomic_write(self.state_path, json.dumps(data, indent=1).encode(), mode=0o644)

    def target(self, link: Path) -> str | None:
        """The version a symlink points at."""
        try:
            return Path(os.readlink(link)).name
        except OSError:
            return None

    def switch(self, link: Path, version: str) -> None:
        """Point ``link`` at ``versions/<version>`` atomically (a new symlink renamed over
        the old one: a crash leaves either the old or the new target)."""
        tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(Path("versions") / version)
        os.replace(tmp, link)
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def event(data: dict[str, Any], text: str) -> None:
    """Record the last update event in ``data`` (and the log)."""
    data["last_event"] = text[:500]
    data["last_event_at"] = format_time(now_utc())
    log.info("update: %s", text)


def fail(data: dict[str, Any], version: str, reason: str) -> None:
    """Remember ``version`` as failed (bounded, oldest forgotten)."""
    failed = dict(data.get("failed") or {})
    failed.pop(version, None)
    failed[version] = reason[:500]
    while len(failed) > MAX_FAILED:
        failed.pop(next(iter(failed)))
    data["failed"] = failed


def make_env(path: Path, base_site: str) -> None:
    """A thin virtual environment at ``path`` whose dependencies come from ``base_site``
    (added after its own site-packages, so the release's wheels win)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--clear", str(path)],
                   check=True, capture_output=True, timeout=300)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(path),
                                                       "platbase": str(path)}))
    purelib.mkdir(parents=True, exist_ok=True)
    (purelib / "netmon-base.pth").write_text(
        f"import site; site.addsitedir({base_site!r})\n")


def base_site_packages() -> str:
    """The site-packages holding the dependencies: the running environment's, or its own
    base when it is itself a thin environment."""
    own = Path(sysconfig.get_path("purelib"))
    pth = own / "netmon-base.pth"
    if pth.exists():
        text = pth.read_text()
        return text.split("addsitedir(", 1)[1].rsplit(")", 1)[0].strip("'\"")
    return str(own)


def init(root: Path, version: str = __version__) -> dict[str, str | None]:
    """Set up ``root`` for the installed version (``netmon-agent update-init``, run from the
    base environment before every start): a thin environment for it, ``current`` and
    ``stable`` pointing at it. Idempotent: a pushed update stays in place across restarts.

    When the base environment holds a different version than at the previous start (an
    operator upgraded it with Ansible or apt after a pushed update), that version is
    adopted: ``current`` and ``stable`` move to it and a trial in progress ends, since
    the operator's deployment is the newer decision. Returns the versions ``current`` and
    ``stable`` now point at and what was adopted (None when nothing changed)."""
    layout = Layout(root)
    layout.versions.mkdir(parents=True, exist_ok=True)
    data = layout.read()
    data.setdefault("base", base_site_packages())
    env = layout.version_dir(version)
    if not (env / "bin" / "python").exists():
        make_env(env, data["base"])
    # A layout from before base versions were recorded: assume no upgrade happened.
    previous_base = data.get("base_version") or (
        version if layout.target(layout.current) else None)
    adopted = None
    if layout.target(layout.current) is None:
        layout.switch(layout.current, version)
    elif previous_base != version and layout.target(layout.current) != version:
        adopted = version
        layout.switch(layout.current, version)
        layout.switch(layout.stable, version)
        data["trial"] = None
        event(data, f"adopted {version}, newly installed in the base environment "
                    f"(previously {previous_base})")
    if layout.target(layout.stable) is None:
        layout.switch(layout.stable, version)
    data["base_version"] = version
    layout.write(data)
    return {"current": layout.target(layout.current), "stable": layout.target(layout.stable),
            "adopted": adopted}


def guard(root: Path, now: float | None = None) -> str:
    """Before each start (``ExecStartPre``, from the stable environment): count the
    trial's starts and roll back when its deadline passed or it did not stay up. Returns
    what it did, for the log."""
    layout = Layout(root)
    data = layout.read()
    trial = data.get("trial")
    if not trial:
        return "no update on trial"
    version, previous = str(trial["version"]), str(trial["previous"])
    if layout.target(layout.current) != version:
        data["trial"] = None
        layout.write(data)
        return f"trial of {version} abandoned: current is {layout.target(layout.current)}"
    trial["starts"] = int(trial.get("starts", 0)) + 1
    at = time.time() if now is None else now
    why = None
    if at > float(trial["deadline"]):
        why = (f"health check not passed within {trial['timeout_s']:g} s"
               + (f": {trial['problem']}" if trial.get("problem") else ""))
    elif trial["starts"] > int(trial.get("max_starts", 3)):
        why = f"did not stay up: {trial['starts'] - 1} starts"
    if why is None:
        layout.write(data)
        return f"{version} on trial, start {trial['starts']}"
    layout.switch(layout.current, previous)
    data["trial"] = None
    fail(data, version, why)
    event(data, f"rolled back from {version} to {previous}: {why}")
    layout.write(data)
    return f"rolled back from {version} to {previous}: {why}"


# --------------------------------------------------------------------------- health


#: Results of the version on trial remembered between their publication and their
#: acknowledgement (the oldest is forgotten first: memory stays bounded offline).
MAX_WATCHED = 10_000


class TrialHealth:
    """The health evidence of a version on trial: which results *it* measured were
    acknowledged. The publisher calls :meth:`published` with each result payload it sends
    and :meth:`acknowledged` with the ids the collector receipted (or, with ``receipts =
    false``, the broker PUBACKed). A result measured by another version (the spool the
    previous version left, drained at start) is not watched, so it proves nothing."""

    def __init__(self, version: str = __version__) -> None:
        self.version = version
        #: id -> None for a successful result, "method: error code" for a failed one.
        self._sent: dict[str, str | None] = {}
        self.ok = 0
        self.failed = 0
        self.last_failure: str | None = None

    def published(self, payload: bytes) -> str | None:
        """Note a result being sent; its id when this version measured it."""
        try:
            data = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("agent_version") != self.version:
            return None
        rid = data.get("id")
        if not isinstance(rid, str) or not rid:
            return None
        error = data.get("error")
        why = None if error is None else (
            f"{data.get('method')}: {error.get('code') if isinstance(error, dict) else error}")
        self._sent.pop(rid, None)
        self._sent[rid] = why
        while len(self._sent) > MAX_WATCHED:
            self._sent.pop(next(iter(self._sent)))
        return rid

    def acknowledged(self, ids: Iterable[str]) -> None:
        """Results acknowledged end to end (receipt, or PUBACK without receipts)."""
        for rid in ids:
            if rid not in self._sent:
                continue
            why = self._sent.pop(rid)
            if why is None:
                self.ok += 1
            else:
                self.failed += 1
                self.last_failure = why

    def verdict(self, connected: bool, broker_error: str | None, receipts: bool
                ) -> tuple[bool, str]:
        """(healthy, the problem when not)."""
        if not connected:
            return False, f"not connected to the broker ({broker_error or '-'})"
        how = "receipted by the collector" if receipts else "acknowledged by the broker"
        if self.ok > 0:
            return True, ""
        if self.failed > 0:
            return False, (f"connected, but only failed results measured by {self.version} "
                           f"{how} ({self.failed}, last {self.last_failure})")
        return False, f"connected, but no result measured by {self.version} {how} yet"


# --------------------------------------------------------------------------- the updater


class UpdateRefused(Exception):
    """A release this probe does not install; ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class Updater:
    """The running agent's side: manifests in, a switched version or a health verdict
    out. ``count(link, nbytes)`` adds download bytes to the link's month;
    ``budget_left(link)`` is None for an unmetered link; ``healthy()`` says whether this
    version proved itself (see :class:`TrialHealth`); ``restart()`` stops the agent with
    EXIT_RESTART; ``month_left_s()`` is the time until the budget month starts again
    (a release refused for the budget is checked again then)."""

    def __init__(self, settings: UpdateFields, probe_id: str, trusted: Sequence[Any],
                 link: str, count: Callable[[str, int], None],
                 budget_left: Callable[[str], float | None],
                 healthy: Callable[[], tuple[bool, str]],
                 restart: Callable[[], None],
                 month_left_s: Callable[[], float] | None = None) -> None:
        assert settings.root is not None
        self.settings = settings
        self.layout = Layout(settings.root)
        self.probe_id = probe_id
        self.trusted = list(trusted)
        self.link = link
        self.count, self.budget_left = count, budget_left
        self.healthy, self.restart = healthy, restart
        self.started = time.monotonic()
        self.month_left_s = month_left_s
        self._busy = False
        self._pending: str | None = None
        #: The release waiting for the data budget, and the task checking it again.
        self._waiting: str | None = None
        self._wait_task: asyncio.Task[None] | None = None
        #: The last manifest that passed :func:`parse_manifest`, with its bytes.
        self._verified: tuple[bytes, Manifest] | None = None

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """The update part of the status message (the contract's ``UpdateStatus``
        fields, as plain data for :func:`netmon.wire.encode_status`)."""
        data = self.layout.read()
        trial = data.get("trial")
        at = data.get("last_event_at")
        return {
            "pending": self._pending or self._waiting,
            "trial": trial["version"] if trial else None,
            "failed": dict(list((data.get("failed") or {}).items())[-MAX_FAILED:]),
            "last_event": data.get("last_event"),
            "last_event_at": datetime.fromisoformat(at.replace("Z", "+00:00")) if at else None}

    def on_trial(self) -> bool:
        """True when this process is the version on trial."""
        trial = self.layout.read().get("trial")
        return isinstance(trial, dict) and trial.get("version") == __version__

    # ------------------------------------------------------------------ health

    async def watch_health(self, poll_s: float = 1.0) -> None:
        """While this version is on trial: promote it to stable once healthy, or record
        the problem and restart (the guard then rolls back) at the deadline."""
        while True:
            data = self.layout.read()
            trial = data.get("trial")
            if not trial or trial["version"] != __version__:
                return
            ok, problem = self.healthy()
            if ok:
                self.layout.switch(self.layout.stable, __version__)
                data["trial"] = None
                event(data, f"updated to {__version__} from {trial['previous']}: health "
                            f"check passed after {time.monotonic() - self.started:.0f} s")
                self.layout.write(data)
                self._prune(keep={__version__, str(trial["previous"])})
                return
            if time.time() > float(trial["deadline"]):
                trial["problem"] = problem
                self.layout.write(data)
                log.error("update: %s failed its health check (%s); restarting so that the "
                          "previous version is put back", __version__, problem)
                self.restart()
                return
            await asyncio.sleep(poll_s)

    def _prune(self, keep: set[str]) -> None:
        for path in self.layout.versions.iterdir() if self.layout.versions.exists() else ():
            if path.name not in keep and path.name != self.layout.target(self.layout.stable):
                subprocess.run(["rm", "-rf", "--", str(path)], check=False, timeout=300)

    # ------------------------------------------------------------------ manifests

    def check(self, payload: bytes) -> Manifest | None:
        """Verify a manifest (:func:`parse_manifest`) and decide; None when there is
        nothing to do. Raises UpdateRefused for a manifest that is refused (recorded as
        the last event)."""
        from netmon.release import targets

        if not payload:
            return None
        if self._verified is not None and self._verified[0] == payload:
            manifest = self._verified[1]  # the retained manifest again: no second child
        else:
            manifest = parse_manifest(payload, self.trusted)
            self._verified = (payload, manifest)
        data = self.layout.read()
        if manifest.serial < int(data.get("serial", 0)):
            raise UpdateRefused("replay", f"manifest serial {manifest.serial} is older than "
                                          f"{data.get('serial')}")
        if manifest.serial == int(data.get("serial", 0)):
            return None  # the retained manifest again (every reconnect)
        if not targets(manifest, self.probe_id):
            data["serial"] = manifest.serial
            event(data, f"release {manifest.version} is not for this probe "
                        f"(staged rollout)")
            self.layout.write(data)
            return None
        if data.get("trial"):
            return None  # not recorded: redelivered (reconnect) once the trial is decided
        if manifest.version == __version__ or manifest.version in data["failed"]:
            data["serial"] = manifest.serial
            self.layout.write(data)
            return None
        return manifest

    async def handle(self, payload: bytes) -> None:
        """One manifest message (from the MQTT callback)."""
        if self._busy:
            return
        # A new manifest, or the retained one redelivered, is decided now: it replaces a
        # release waiting for the budget (checked again below if still refused).
        self._stop_waiting()
        await self._attempt(payload)

    async def _attempt(self, payload: bytes) -> None:
        self._busy = True
        try:
            try:
                # In a worker thread: the validation child takes a second or two on a Pi.
                manifest = await asyncio.to_thread(self.check, payload)
            except UpdateRefused as exc:
                data = self.layout.read()
                event(data, f"release manifest refused: {exc}")
                self.layout.write(data)
                return
            if manifest is None:
                return
            self._pending = manifest.version
            try:
                await asyncio.to_thread(self._install, manifest)
            except UpdateRefused as exc:
                data = self.layout.read()
                if exc.reason != "budget":
                    fail(data, manifest.version, str(exc))
                    data["serial"] = manifest.serial
                event(data, f"release {manifest.version} not installed: {exc}")
                self.layout.write(data)
                if exc.reason == "budget":
                    self._wait_for_budget(payload, manifest)
                return
            finally:
                self._pending = None
            self.restart()
        finally:
            self._busy = False

    # ------------------------------------------------------------------ data budget

    def _over_budget(self, manifest: Manifest) -> str | None:
        """Why the download does not fit the link's budget now; None when it does."""
        need = sum(w.size for w in manifest.wheels if not self._cached(w).exists())
        left = self.budget_left(self.link)
        if left is not None and need > left:
            return (f"{need} bytes to download, {left:.0f} left in the {self.link} link's "
                    f"data budget this month")
        return None

    def _retry_delay(self) -> float:
        delay = self.settings.budget_retry_s
        if self.month_left_s is not None:
            # A few seconds into the new month, so its usage is counted from zero.
            delay = min(delay, self.month_left_s() + 5.0)
        return max(1.0, delay)

    def _wait_for_budget(self, payload: bytes, manifest: Manifest) -> None:
        self._stop_waiting()
        self._waiting = manifest.version
        self._wait_task = asyncio.ensure_future(self._budget_wait(payload, manifest))

    def _stop_waiting(self) -> None:
        task, self._wait_task, self._waiting = self._wait_task, None, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _budget_wait(self, payload: bytes, manifest: Manifest) -> None:
        """Check a release refused for the data budget again, without downloading, every
        ``budget_retry_s`` and at the start of the budget month; install it once it fits.
        One task per probe, ended by a newer manifest or after ``budget_wait_days``."""
        until = time.monotonic() + self.settings.budget_wait_days * 86400
        checks = 0
        while True:
            delay = self._retry_delay()
            log.info("update: release %s waits for the %s link's data budget; next check "
                     "in %.0f s", manifest.version, self.link, delay)
            await asyncio.sleep(delay)
            if time.monotonic() > until:
                log.warning("update: release %s still does not fit the %s link's data budget "
                            "after %d checks in %g days; no more checks until the next "
                            "reconnect", manifest.version, self.link, checks,
                            self.settings.budget_wait_days)
                self._waiting, self._wait_task = None, None
                return
            checks += 1
            if self._busy or self.layout.read().get("trial"):
                continue
            try:
                problem = self._over_budget(manifest)
            except Exception as exc:  # a ledger read failing must not end the wait
                problem = f"budget unreadable: {exc}"
            if problem is not None:
                log.info("update: release %s checked again (%d): %s", manifest.version,
                         checks, problem)
                continue
            log.info("update: release %s now fits the %s link's data budget (check %d); "
                     "installing", manifest.version, self.link, checks)
            self._waiting, self._wait_task = None, None
            await self._attempt(payload)
            return

    # ------------------------------------------------------------------ install

    def _install(self, manifest: Manifest) -> None:
        layout = self.layout
        problem = self._over_budget(manifest)
        if problem is not None:
            raise UpdateRefused("budget", problem)
        paths = [self._fetch(manifest, w) for w in manifest.wheels]
        data = layout.read()
        env = layout.version_dir(manifest.version)
        try:
            make_env(env, data.get("base") or base_site_packages())
            done = subprocess.run(
                [sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"),
                 "install", "--quiet", "--no-deps", "--no-index", "--no-cache-dir",
                 "--disable-pip-version-check", *map(str, paths)],
                capture_output=True, timeout=1800)
        except (OSError, subprocess.SubprocessError) as exc:
            raise UpdateRefused("install_failed", str(exc)[:300]) from None
        if done.returncode != 0:
            raise UpdateRefused("install_failed", done.stderr.decode(errors="replace")
                                .strip()[-300:])
        previous = layout.target(layout.current) or __version__
        data["serial"] = manifest.serial
        data["trial"] = {"version": manifest.version, "previous": previous, "starts": 0,
                         "max_starts": self.settings.max_starts,
                         "timeout_s": manifest.health_timeout_s,
                         "deadline": time.time() + manifest.health_timeout_s,
                         "problem": None}
        event(data, f"installed {manifest.version}; switching from {previous}")
        layout.write(data)
        layout.switch(layout.current, manifest.version)

    def _cached(self, wheel: WheelRef) -> Path:
        return self.layout.downloads / wheel.sha256 / wheel.name

    def _fetch(self, manifest: Manifest, wheel: WheelRef) -> Path:
        path = self._cached(wheel)
        if path.exists():
            return path
        url = manifest.base_url + wheel.name
        digest, got = hashlib.sha256(), 0
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        try:
            with urllib.request.urlopen(url, timeout=self.settings.download_timeout_s
                                        ) as resp, open(tmp, "wb") as out:
                while chunk := resp.read(65536):
                    got += len(chunk)
                    if got > wheel.size:
                        break
                    digest.update(chunk)
                    out.write(chunk)
        except (OSError, urllib.error.URLError) as exc:
            tmp.unlink(missing_ok=True)
            if got:
                self.count(self.link, got)
            raise UpdateRefused("download_failed", f"{url}: {exc}") from None
        self.count(self.link, got)
        if got != wheel.size or digest.hexdigest() != wheel.sha256:
            tmp.unlink(missing_ok=True)
            raise UpdateRefused("hash_mismatch", f"{wheel.name}: got {got} bytes with SHA-256 "
                                                 f"{digest.hexdigest()[:16]}..., the signed "
                                                 f"manifest says {wheel.size} bytes, "
                                                 f"{wheel.sha256[:16]}...")
        os.replace(tmp, path)
        return path
