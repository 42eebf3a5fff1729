"""Zero-touch enrollment, NOC side (issue 18): ``probes enroll list|approve|reject``.

Blank probes publish retained requests on ``<prefix>/enroll/<request id>/request``
(:mod:`agent.enroll`). The NOC account reads them; approving one by the claim code on the
probe's label (:func:`approve`):

1. picks the request the claim code proves (:func:`netmon.enrollment.find_claimed`) and
   refuses a claim already used, a request rejected before or older than
   ``[enrollment] request_ttl_s``;
2. checks the site (``SiteEntry`` and its commune code against the registry's reference
   data) and that the probe id is new (or ``replace``);
3. creates the probe's broker account: ``mosquitto_passwd`` adds it to the enrolled
   accounts file (``accounts_file``, which Ansible never writes), that file's lines are
   merged into the probes' listener password file (``probes_password_file``) and the
   broker is told to reload (``reload_command``);
4. appends the site to the registry (TOML), checked by loading the result first;
5. publishes the answer (credentials sealed to the probe's key, signed with the NOC key)
   retained on the request's answer topic, clears the request and records the decision
   in ``state_file`` (claim codes only as SHA-256).

Settings: ``[enrollment]`` of the collector config
(:class:`collector.config.EnrollmentSettings`).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from collector.config import EnrollmentSettings
from collector.fleet.errors import FleetError
from collector.fleet.noc_client import NocClient
from netmon.contract import (
    PROBE_ID_PATTERN,
    Credentials,
    EnrollRequest,
    Topics,
    format_time,
    now_utc,
)
from netmon.enrollment import answer_bytes, find_claimed, normalise_claim, sign_answer
from netmon.fsutil import atomic_write
from netmon.settings import describe_errors

# --------------------------------------------------------------------------- requests


@dataclass
class Pending:
    """A retained request as ``enroll list`` shows it."""

    topic: str
    request: EnrollRequest | None
    error: str | None
    status: str  # pending | expired | approved | rejected | invalid

    def as_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        r = self.request
        return {"topic": self.topic, "status": self.status, "error": self.error,
                "request_id": r.request_id if r else None,
                "created_at": format_time(r.created_at) if r else None,
                "agent_version": r.agent_version if r else None,
                "hardware": r.hardware.model_dump(mode="json") if r else None}


def _state(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        data = {}
    except (OSError, ValueError) as exc:
        raise FleetError(f"enrollment.state_file {path}: {exc}") from None
    data.setdefault("claims", {})
    data.setdefault("requests", {})
    return data


def _save_state(path: Path, data: dict[str, Any]) -> None:
    try:
        atomic_write(path, json.dumps(data, indent=1, sort_keys=True).encode(), mode=0o600)
    except OSError as exc:
        raise FleetError(f"enrollment.state_file {path}: {exc.strerror}") from None


def _claim_hash(claim: str) -> str:
    return hashlib.sha256(normalise_claim(claim).encode()).hexdigest()


def collect(client: NocClient, topics: Topics, settings: EnrollmentSettings,
            now: datetime | None = None) -> list[Pending]:
    """Every retained request, parsed, with its status from the decisions file."""
    raw = client.collect_retained(topics.all_enroll_requests())
    state = _state(settings.state_file)
    at = now or now_utc()
    out = []
    for topic, payload in sorted(raw.items()):
        if not topic.endswith("/request") or not payload:
            continue
        try:
            req = EnrollRequest.model_validate_json(payload)
        except ValidationError as exc:
            out.append(Pending(topic, None, "; ".join(describe_errors(exc))[:500], "invalid"))
            continue
        if topic != topics.enroll_request(req.request_id):
            out.append(Pending(topic, None, "request id differs from its topic", "invalid"))
            continue
        decided = state["requests"].get(req.request_id, {}).get("decision")
        status = decided or ("expired" if at - req.created_at >
                             timedelta(seconds=settings.request_ttl_s) else "pending")
        out.append(Pending(topic, req, None, status))
    return out


# --------------------------------------------------------------------------- accounts


def _users(text: str) -> dict[str, str]:
    return {ln.split(":", 1)[0]: ln for ln in text.splitlines() if ":" in ln}


def add_account(settings: EnrollmentSettings, username: str, password: str) -> None:
    """Add (or replace) ``username`` in the enrolled accounts file with mosquitto_passwd,
    merge that file into the probes' password file (keeping its mode and owner) and
    reload the broker. The password reaches mosquitto_passwd on its standard input (typed
    and confirmed, as at a terminal): on its command line (``-b``) any local user could read
    it from ``/proc/PID/cmdline`` while it runs."""
    accounts = settings.accounts_file
    accounts.parent.mkdir(parents=True, exist_ok=True)
    argv = [settings.mosquitto_passwd] + ([] if accounts.exists() else ["-c"]) + \
        [str(accounts), username]
    try:
        done = subprocess.run(argv, input=f"{password}\n{password}\n".encode(),
                              capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FleetError(f"enrollment.mosquitto_passwd: {exc}") from None
    if done.returncode != 0:
        raise FleetError(f"mosquitto_passwd failed ({done.returncode}): "
                         f"{done.stderr.decode(errors='replace').strip()[:300]}")
    accounts.chmod(0o600)
    live = settings.probes_password_file
    try:
        st = live.stat()
        current = live.read_text()
    except OSError as exc:
        raise FleetError(f"enrollment.probes_password_file {live}: {exc.strerror}") from None
    enrolled = _users(accounts.read_text())
    kept = [ln for user, ln in _users(current).items() if user not in enrolled]
    text = "\n".join(kept + list(enrolled.values())) + "\n"
    atomic_write(live, text.encode(), mode=st.st_mode & 0o777, owner=(st.st_uid, st.st_gid))
    try:
        done = subprocess.run(settings.reload_command, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FleetError(f"enrollment.reload_command: {exc}") from None
    if done.returncode != 0:
        raise FleetError(f"enrollment.reload_command failed ({done.returncode}): "
                         f"{done.stderr.decode(errors='replace').strip()[:300]}")


# --------------------------------------------------------------------------- registry


def site_block(site: dict[str, Any]) -> str:
    """A ``[[site]]`` TOML table (strings as JSON strings, which TOML reads the same)."""
    lines = ["", "[[site]]"]
    for key, value in site.items():
        if value is None:
            continue
        text = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def site_text(registry: Path, units: Any, site: dict[str, Any], replace: bool) -> str:
    """The registry's text with ``site`` appended, checked (the entry's model, its commune
    code against the reference data, a new probe id unless ``replace``, and the whole
    file as it would be), so a bad entry never reaches the collector."""
    from collector.core.registry import RegistryError, SiteEntry, load_table, place

    try:
        entry = SiteEntry.model_validate(site)
    except ValidationError as exc:
        raise FleetError("invalid site: " + "; ".join(describe_errors(exc)), usage=True
                         ) from None
    placed, problems = place(entry, units)
    if placed is None:
        raise FleetError("invalid site: " + "; ".join(problems), usage=True)
    if registry.suffix.lower() != ".toml":
        raise FleetError(f"registry {registry}: enrollment appends to a TOML registry only",
                         usage=True)
    old = registry.read_text() if registry.exists() else ""
    if old:
        current = load_table(registry, units).current()
        if entry.probe_id in current and not replace:
            raise FleetError(f"--probe-id {entry.probe_id} is already in {registry} "
                             "(use --replace for a probe whose SD card was replaced)",
                             usage=True)
    new = old + site_block(site)
    check = registry.with_name(f".{registry.name}.enroll-check.toml")
    try:
        check.write_text(new)
        load_table(check, units)
    except RegistryError as exc:
        raise FleetError(f"registry with the new site would be invalid: {exc}",
                         usage=True) from None
    finally:
        check.unlink(missing_ok=True)
    return new


# --------------------------------------------------------------------------- decisions


@dataclass
class Decision:
    """What approve/reject did, for the command's output."""

    request_id: str
    decision: str
    probe_id: str | None
    answer_topic: str

    def as_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        return {"request_id": self.request_id, "decision": self.decision,
                "probe_id": self.probe_id, "answer_topic": self.answer_topic}


def _claimed(client: NocClient, topics: Topics, settings: EnrollmentSettings,
             claim: str) -> EnrollRequest:
    try:
        normalise_claim(claim)
    except ValueError as exc:
        raise FleetError(f"--claim: {exc}", usage=True) from None
    state = _state(settings.state_file)
    used = state["claims"].get(_claim_hash(claim))
    if used:
        raise FleetError(f"claim code already used: probe {used.get('probe_id')} enrolled "
                         f"with it at {used.get('at')} (a claim code enrols one probe once)")
    rows = collect(client, topics, settings)
    found = find_claimed([p.request for p in rows if p.request is not None], claim)
    if not found:
        raise FleetError("no enrollment request proves this claim code (is the probe "
                         "connected? `probes enroll list` shows what is waiting)")
    req = max(found, key=lambda r: r.created_at)  # a probe that re-keyed: its newest
    status = next(p.status for p in rows if p.request is req)
    if status == "rejected":
        raise FleetError(f"request {req.request_id} was rejected; the probe makes a new "
                         "request after its retry delay")
    if status == "expired":
        raise FleetError(f"request {req.request_id} expired: made {format_time(req.created_at)}"
                         f", more than {settings.request_ttl_s:g} s ago; restart the probe's "
                         "agent for a fresh request")
    return req


def approve(client: NocClient, topics: Topics, settings: EnrollmentSettings,
            key: Ed25519PrivateKey, claim: str, site: dict[str, Any], registry: Path,
            units: Any, replace: bool = False) -> Decision:
    """Approve the request ``claim`` proves as ``site["probe_id"]`` (see the module doc)."""
    import re

    probe_id = str(site.get("probe_id", ""))
    if not re.match(PROBE_ID_PATTERN, probe_id):
        raise FleetError(f"--probe-id: {probe_id!r} is not a probe id "
                         f"({PROBE_ID_PATTERN})", usage=True)
    # Everything that can be checked is checked before anything is changed.
    new_registry = site_text(registry, units, site, replace)
    req = _claimed(client, topics, settings, claim)
    password = secrets.token_urlsafe(24)
    creds = Credentials(probe_id=probe_id, username=probe_id, password=password)
    answer = sign_answer(req, key, decision="approved", probe_id=probe_id,
                         credentials=creds,
                         valid_for=timedelta(seconds=settings.answer_valid_s))
    add_account(settings, probe_id, password)
    atomic_write(registry, new_registry.encode(), mode=0o644)
    topic = topics.enroll_answer(req.request_id)
    client.publish(topic, answer_bytes(answer), retain=True)
    client.publish(topics.enroll_request(req.request_id), b"", retain=True)
    state = _state(settings.state_file)
    at = format_time(datetime.now(UTC))
    state["claims"][_claim_hash(claim)] = {"probe_id": probe_id, "at": at,
                                           "request_id": req.request_id}
    state["requests"][req.request_id] = {"decision": "approved", "probe_id": probe_id,
                                         "at": at}
    _save_state(settings.state_file, state)
    return Decision(req.request_id, "approved", probe_id, topic)


def reject(client: NocClient, topics: Topics, settings: EnrollmentSettings,
           key: Ed25519PrivateKey, reason: str, claim: str | None = None,
           request_id: str | None = None) -> Decision:
    """Reject the request ``claim`` proves (or ``request_id``): a signed rejection the
    probe reads, and the request is never approved later."""
    if claim is not None:
        req = _claimed(client, topics, settings, claim)
    else:
        rows = collect(client, topics, settings)
        match = [p.request for p in rows if p.request and p.request.request_id == request_id]
        if not match or match[0] is None:
            raise FleetError(f"no retained request {request_id}")
        req = match[0]
    answer = sign_answer(req, key, decision="rejected", reason=reason[:500],
                         valid_for=timedelta(seconds=settings.answer_valid_s))
    topic = topics.enroll_answer(req.request_id)
    client.publish(topic, answer_bytes(answer), retain=True)
    client.publish(topics.enroll_request(req.request_id), b"", retain=True)
    state = _state(settings.state_file)
    state["requests"][req.request_id] = {"decision": "rejected", "reason": reason[:500],
                                         "at": format_time(datetime.now(UTC))}
    _save_state(settings.state_file, state)
    return Decision(req.request_id, "rejected", None, topic)

