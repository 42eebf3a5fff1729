"""Signed remote configuration: the NOC changes a probe's test plan over MQTT.

The NOC publishes a signed envelope (:mod:`netmon.signing`), retained, on
``<prefix>/probes/<probe_id>/config``. For each message the agent, in this order:

1. parses the envelope (``malformed`` / ``too_large`` / ``unsigned``): size, JSON and
   signature here, the shape with :class:`netmon.signing.Envelope` in a short-lived
   child process (:func:`verify_config`), so the run time keeps no pydantic;
2. checks the Ed25519 signature against the NOC public key(s) from its Ansible-provisioned
   file config (``unknown_key`` / ``bad_signature``);
3. checks it is meant for this probe or for all (``wrong_probe``);
4. checks the version is newer than the applied one (``replay``); the retained message
   redelivered on every reconnect (same version, same bytes) is recognised and ignored;
5. validates the plan with the same models as the file config, in a short-lived child
   process so that the run time keeps no pydantic (``invalid_plan``; a child that fails
   to answer: ``validation_failed``);
6. checks every target against the file config's allowlist (``target_not_allowed``), so
   a stolen broker account cannot point the fleet at a third party;
7. persists the envelope atomically (write temp, fsync, rename, fsync the folder) so it
   survives a reboot with the broker unreachable (``persist_failed``);
8. hands the plan to the runtime to apply without a restart (``apply_failed``, in which
   case the previous envelope is put back).

A rejected config never replaces the running one; the reason is kept for the status
message (``config_error``) next to the applied version (``config_version``).
At start-up :meth:`RemoteConfig.restore` re-checks the persisted envelope (signature,
probe, plan, allowlist, which Ansible may have tightened since) before running it.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from agent import validate_child
from agent.allowlist import Allowlist as Allowlist
from agent.allowlist import target_host as target_host
from agent.runconfig import Plan, plan_from_json
from netmon.errors import NetmonError
from netmon.fsutil import atomic_write

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from agent.config import RemoteConfigSettings as RemoteConfigSettings
    from netmon.ed25519 import VerifyKey

log = logging.getLogger(__name__)

P = TypeVar("P")

#: Plan keys (at any depth) whose string values name a host the probe will contact.
#: Keys that never belong in a remote plan: credentials and keys stay in the file config.
SECRET_KEY_RE = re.compile(r"password|secret|token|private|credential|(^|_)key(_|$)", re.I)
MAX_ERROR_CHARS = 2000


class RemoteConfigFields(Protocol):
    """What the handler reads of ``[remote_config]``: :class:`agent.config.
    RemoteConfigSettings` (validated) or :class:`agent.runconfig.RemoteConfig` (the run
    time's)."""

    @property
    def public_keys(self) -> Sequence[Path]: ...
    @property
    def allowed_targets(self) -> Sequence[str]: ...
    @property
    def state_file(self) -> Path: ...


def __getattr__(name: str) -> Any:
    # The settings model lives in agent.config (pydantic); imported from here by older
    # code, without making this module load pydantic.
    if name == "RemoteConfigSettings":
        from agent.config import RemoteConfigSettings

        return RemoteConfigSettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _options(spec: Any) -> dict[str, Any]:
    """A validated test's options as JSON values: a model's dump, or the run time's
    frozen dataclass (:mod:`agent.runconfig`) field by field."""
    options = spec.options
    dump = getattr(options, "model_dump", None)
    if callable(dump):
        out: dict[str, Any] = dump(mode="json")
        return out
    return {f.name: getattr(options, f.name) for f in fields(options)}


def _tables(plan: Any) -> list[tuple[str, dict[str, Any]]]:
    """``(test name, table)`` for every test of a raw or validated plan."""
    if not isinstance(plan, dict):  # validated: netmon.plan.TestPlan or runconfig.Plan
        return [(name, {"method": spec.method, **_options(spec)})
                for name, spec in plan.tests.items()]
    tests = plan.get("tests")
    if not isinstance(tests, dict):
        return []
    return [(str(name), table) for name, table in tests.items() if isinstance(table, dict)]


def _roles(table: dict[str, Any]) -> dict[str, str]:
    """Option -> what it names (``"target"``, ``"local"``) for a test's method: from the
    contract's export (no option model loaded), or off the option model for a method the
    export does not know (registered at run time)."""
    method = table.get("method")
    if not isinstance(method, str):
        return {}
    from netmon.wire import option_roles as exported

    roles = exported(method)
    if roles is not None:
        return roles
    from netmon.methods import DECLARATIONS, option_roles

    decl = DECLARATIONS.get(method)
    return {k: r.value for k, r in option_roles(decl.options).items()} if decl else {}


def plan_targets(plan: Any) -> list[str]:
    """Every host a plan's tests would contact: the values of the options each method
    declares as targets (``netmon.methods.TARGET``), defaults included for a validated
    plan. An unknown method contributes nothing here: validation rejects it."""
    found: list[str] = []
    for _, table in _tables(plan):
        for key, role in _roles(table).items():
            value = table.get(key)
            if role == "target" and value is not None:
                values = value if isinstance(value, list | tuple) else [value]
                found.extend(str(v) for v in values)
    return found


def local_options(plan: Any) -> list[str]:
    """``tests.<name>.<option>`` of every option naming a local executable or file
    (``netmon.methods.LOCAL``) that a raw plan sets: never settable remotely."""
    return [f"tests.{name}.{key}" for name, table in _tables(plan)
            for key, role in _roles(table).items() if role == "local" and key in table]


def secret_keys(plan: Any, where: str = "") -> list[str]:
    """Paths of keys in ``plan`` that look like credentials (never allowed remotely)."""
    out: list[str] = []
    if isinstance(plan, dict):
        for key, value in plan.items():
            path = f"{where}.{key}" if where else str(key)
            if SECRET_KEY_RE.search(str(key)):
                out.append(path)
            out.extend(secret_keys(value, path))
    elif isinstance(plan, list):
        for i, item in enumerate(plan):
            out.extend(secret_keys(item, f"{where}[{i}]"))
    return out


# --------------------------------------------------------------------------- persistence


# The envelope is written with netmon.fsutil.atomic_write (0600: temp file, fsync,
# rename, fsync of the folder).


# --------------------------------------------------------------------------- the handler


@dataclass(frozen=True)
class Decision(Generic[P]):
    """What happened to one config message."""

    outcome: str  # "applied" | "unchanged" | "rejected" | "ignored"
    version: int | None = None
    reason: str | None = None
    detail: str | None = None
    plan: P | None = None

    @property
    def applied(self) -> bool:
        """True when the plan was persisted and handed to the runtime."""
        return self.outcome == "applied"


@dataclass(frozen=True)
class SignedConfig:
    """A config envelope whose shape and signature passed: the fields of the
    :class:`netmon.signing.Envelope` that :func:`netmon.signing.verify` returns."""

    probe_id: str
    version: int
    issued_at: datetime
    key_id: str
    plan: dict[str, Any]
    signature: str


def verify_config(payload: bytes, public_keys: Sequence[VerifyKey | Ed25519PublicKey]
                  ) -> SignedConfig:
    """:func:`netmon.signing.verify` without pydantic in this process: the same checks in
    the same order, refused with the same :class:`netmon.sigcheck.SigningError` reasons
    and details (``too_large``, ``malformed``, ``unsigned``, ``unknown_key``,
    ``bad_signature``). The shape is checked by :func:`netmon.signing.parse_envelope` in a
    short-lived child (:mod:`agent.validate_child`, as :func:`agent.update.
    parse_manifest` does for release manifests: pydantic is ~10 MB that would otherwise
    stay for the process's life on every probe with a remote plan); a child that cannot
    answer raises :class:`agent.validate_child.ChildFailed`."""
    from netmon.sigcheck import SigningError, check_signature, decode_signed

    # What parse_signed does before the model: a message refused here costs no child.
    obj = decode_signed(payload, "config")
    try:
        value = validate_child.validate("envelope", payload,
                                        timeout_s=validate_child.ENVELOPE_TIMEOUT_S)
    except validate_child.Refused as exc:
        raise SigningError("malformed", "; ".join(exc.problems)) from None
    env = SignedConfig(probe_id=value["probe_id"], version=value["version"],
                       issued_at=datetime.fromisoformat(value["issued_at"]),
                       key_id=value["key_id"], plan=value["plan"],
                       signature=value["signature"])
    # Against the members as received, exactly as verify does.
    check_signature(obj, env.key_id, env.signature, public_keys)
    return env


class Rejected(NetmonError):
    """Internal: a check failed."""

    def __init__(self, reason: str, detail: str, version: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.version = version


class RemoteConfig(Generic[P]):
    """Verifies, persists and applies signed plans for one probe; thread-safe.

    ``validate_plan`` turns a plan dict into the runtime's plan object (raising
    :class:`agent.validate_child.Refused`, ``ChildFailed`` or ``ValueError``: see
    :func:`plan_validator`); ``apply`` swaps
    the running plan (it must be quick and thread-safe: MQTT callbacks call it);
    ``file_targets`` are the file config's test targets, always allowed.
    """

    def __init__(self, probe_id: str, settings: RemoteConfigFields,
                 validate_plan: Callable[[dict[str, Any]], P],
                 apply: Callable[[P, int], None] | None = None,
                 file_targets: Iterable[str] = (),
                 state_dir: Path | None = None,
                 public_keys: Sequence[VerifyKey | Ed25519PublicKey] | None = None) -> None:
        from netmon.sigcheck import load_public_key

        self.probe_id = probe_id
        self.settings = settings
        self.validate_plan = validate_plan
        self.apply = apply
        self.allowlist = Allowlist([*settings.allowed_targets,
                                    *(target_host(t) for t in file_targets)])
        state = settings.state_file
        self.state_path = state if state.is_absolute() or state_dir is None else state_dir / state
        # Keys are read once at start: a missing key file is a config error, found early.
        self.public_keys = list(public_keys) if public_keys is not None else [
            load_public_key(p) for p in settings.public_keys]
        self._lock = threading.Lock()
        self._applied_payload: bytes | None = None
        self.version: int | None = None
        self.error: str | None = None

    # -- checks -------------------------------------------------------------------------

    def _check(self, payload: bytes, replay_check: bool) -> tuple[SignedConfig, P]:
        from netmon.sigcheck import ALL_PROBES, SigningError

        try:
            env = verify_config(payload, self.public_keys)
        except SigningError as exc:
            raise Rejected(exc.reason, exc.detail) from None
        except validate_child.ChildFailed as exc:
            # As for a plan: the same message is checked again when it comes back.
            raise Rejected("validation_failed", str(exc)) from None
        if env.probe_id not in (self.probe_id, ALL_PROBES):
            raise Rejected("wrong_probe", f"config is for {env.probe_id!r}, this probe is "
                                          f"{self.probe_id!r}", env.version)
        if replay_check and self.version is not None and env.version <= self.version:
            raise Rejected("replay", f"version {env.version} is not newer than the applied "
                                     f"version {self.version}", env.version)
        secrets = secret_keys(env.plan)
        if secrets:
            raise Rejected("invalid_plan", "credentials and keys never travel in a remote "
                           f"plan: {', '.join(secrets)}", env.version)
        local = local_options(env.plan)
        if local:
            raise Rejected("local_option", "options naming a program or file on the probe "
                           f"cannot be set remotely: {', '.join(local)}", env.version)
        # Targets first on the raw plan (the most telling reason), then again on the
        # validated plan, whose defaults and normalisation could add hosts.
        self._check_targets(env.plan, env.version)
        try:
            plan = self.validate_plan(env.plan)
        except validate_child.Refused as exc:
            raise Rejected("invalid_plan", "; ".join(exc.problems), env.version) from None
        except validate_child.ChildFailed as exc:
            # Nothing is known about the plan: the same message is checked again when it
            # comes back (the retained config at every reconnect).
            raise Rejected("validation_failed", str(exc), env.version) from None
        except (ValueError, TypeError) as exc:
            raise Rejected("invalid_plan", str(exc), env.version) from None
        self._check_targets(plan, env.version)
        return env, plan

    def _check_targets(self, plan: Any, version: int) -> None:
        denied = sorted({t for t in plan_targets(plan) if not self.allowlist.allows(t)})
        if denied:
            raise Rejected("target_not_allowed",
                           f"not in the probe's allowlist: {', '.join(denied)}", version)

    def _reject(self, exc: Rejected) -> Decision[P]:
        what = f"config version {exc.version}" if exc.version is not None else "config"
        self.error = f"{what} rejected: {exc.reason}: {exc.detail}"[:MAX_ERROR_CHARS]
        log.warning("remote %s", self.error)
        return Decision("rejected", exc.version, exc.reason, exc.detail)

    # -- entry points -------------------------------------------------------------------

    def restore(self) -> Decision[P]:
        """At start-up: the persisted config, re-checked, ready to run (``applied``, with
        ``plan``); ``ignored`` when there is none; ``rejected`` (file config runs) when it no
        longer passes. ``apply`` is *not* called: the caller starts with the plan."""
        with self._lock:
            try:
                payload = self.state_path.read_bytes()
            except FileNotFoundError:
                return Decision("ignored", reason="none", detail="no persisted remote config")
            except OSError as exc:
                return self._reject(Rejected("persist_failed",
                                             f"cannot read {self.state_path}: {exc.strerror}"))
            try:
                env, plan = self._check(payload, replay_check=False)
            except Rejected as exc:
                exc.detail = f"persisted config {self.state_path}: {exc.detail}"
                return self._reject(exc)
            self._applied_payload = payload
            self.version = env.version
            self.error = None
            log.info("running persisted remote config version %d", env.version)
            return Decision("applied", env.version, plan=plan)

    def handle(self, payload: bytes) -> Decision[P]:
        """One message from the config topic (see the module docstring for the checks)."""
        with self._lock:
            if not payload:
                # The NOC cleared the retained config: keep running what we have.
                return Decision("ignored", self.version, "empty", "empty config message")
            if payload == self._applied_payload:
                # The broker redelivers the retained config on every (re)connect.
                return Decision("unchanged", self.version)
            try:
                env, plan = self._check(payload, replay_check=True)
            except Rejected as exc:
                return self._reject(exc)
            previous = self._applied_payload
            try:
                atomic_write(self.state_path, payload)
            except OSError as exc:
                return self._reject(Rejected(
                    "persist_failed", f"cannot write {self.state_path}: {exc}", env.version))
            if self.apply is not None:
                try:
                    self.apply(plan, env.version)
                except Exception as exc:
                    log.exception("applying remote config version %d failed", env.version)
                    self._restore_previous(previous)
                    return self._reject(Rejected("apply_failed", f"{type(exc).__name__}: "
                                                 f"{exc}", env.version))
            self._applied_payload = payload
            self.version = env.version
            self.error = None
            log.info("applied remote config version %d", env.version)
            return Decision("applied", env.version, plan=plan)

    def _restore_previous(self, previous: bytes | None) -> None:
        try:
            if previous is None:
                self.state_path.unlink(missing_ok=True)
            else:
                atomic_write(self.state_path, previous)
        except OSError:
            log.exception("could not put back the previous remote config")


# --------------------------------------------------------------------------- agent wiring


def plan_validator(links: Collection[str]) -> Callable[[dict[str, Any]], Plan]:
    """Validate a remote plan with the file config's own :class:`netmon.plan.TestPlan`
    model in a short-lived child process (:func:`agent.validate_child.validate`: the run
    time keeps no pydantic), check it only names links this probe has (``links``: their
    names), and build the run time's plan (:func:`agent.runconfig.plan_from_json`).
    Raises :class:`agent.validate_child.Refused` (every ``key: why``) or
    :class:`agent.validate_child.ChildFailed`.

    The runtime wires the handler in (``Runtime._attach_remote_config``): this module
    knows plans, not the runtime, so the two do not import each other.
    """
    names = list(links)

    def validate(data: dict[str, Any]) -> Plan:
        payload = json.dumps(data, ensure_ascii=False, allow_nan=False).encode()
        return plan_from_json(validate_child.validate("plan", payload, names))

    return validate
