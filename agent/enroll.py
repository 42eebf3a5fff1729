"""Zero-touch enrollment on the probe (issue 18): a blank probe gets its own identity.

A freshly imaged probe has the agent, the NOC public key (``[remote_config]
public_keys``, the trust anchor), the shared enrollment account and a one-time claim code
(``claim_file``, the same code as on the probe's label), but no probe id and no broker
account. Before anything else ``netmon-agent run`` then:

1. makes an X25519 key pair on first boot (``enroll-x25519.key``, 0600, kept);
2. makes a request (a random request id, the public key, hardware facts, the agent
   version, the claim proof: :mod:`netmon.enrollment`) and keeps it (``request.json``),
   so a reboot while waiting keeps the same request;
3. connects to the enrollment listener with the enrollment account and the request id as
   client id, publishes the request retained and waits for the answer on its own topic;
4. checks each answer (NOC signature, this request, this key, not expired) and logs why
   one is refused; a rejection starts a new request after ``retry_after_rejection_s``;
5. on approval opens the sealed credentials, writes the password (0600) and
   ``identity.json`` (probe id, username, password file), atomically, and returns.

:func:`agent.config.identity_overlay` is what :func:`agent.config.load` applies: from then on the
agent runs as its own account on the probes' listener.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netmon import __version__
from netmon.configfile import SecretFileError, read_secret
from netmon.contractbase import Topics, now_utc
from netmon.errors import EXIT_INPUT, NetmonError
from netmon.fsutil import atomic_write
from netmon.jsonutil import format_time
from netmon.mqttclient import ReconnectPolicy

if TYPE_CHECKING:  # the start stage enrols; the run time only reads hardware_facts()
    from agent.config import EnrollmentSettings as EnrollmentSettings
    from netmon.contract import EnrollRequest
    from netmon.mqtt import BrokerSettings

log = logging.getLogger("netmon.agent.enroll")

PASSWORD_FILE = "mqtt-password"
KEY_FILE = "enroll-x25519.key"
REQUEST_FILE = "request.json"
STATE_FILE = "enrollment.json"


def __getattr__(name: str) -> Any:
    # The settings model lives in agent.config (pydantic); imported from here by older
    # code, without making this module load pydantic.
    if name == "EnrollmentSettings":
        from agent.config import EnrollmentSettings

        return EnrollmentSettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class EnrollmentFailed(NetmonError):
    """Enrollment cannot even start (bad claim code, no trust anchor, unreadable file)."""

    exit_code = EXIT_INPUT


# --------------------------------------------------------------------------- facts


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return ""


@dataclass(frozen=True)
class Hardware:
    """What :func:`hardware_facts` finds (the contract's ``HardwareFacts`` fields)."""

    board_model: str
    serial: str
    macs: tuple[str, ...]
    links: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        """The request's ``hardware`` member."""
        return {"board_model": self.board_model, "serial": self.serial,
                "macs": list(self.macs), "links": list(self.links)}


def hardware_facts() -> Hardware:
    """Board model, serial, MAC addresses and the interfaces with a carrier."""
    model = _read("/proc/device-tree/model") or _read("/sys/class/dmi/id/product_name")
    serial = ""
    for line in _read("/proc/cpuinfo").splitlines():
        if line.lower().startswith("serial"):
            serial = line.split(":", 1)[-1].strip()
    serial = serial or _read("/etc/machine-id")[:32]
    macs: list[str] = []
    links: list[str] = []
    try:
        names = sorted(p.name for p in Path("/sys/class/net").iterdir())
    except OSError:
        names = []
    for name in names:
        if name == "lo":
            continue
        mac = _read(f"/sys/class/net/{name}/address").lower()
        if len(mac) == 17 and mac != "00:00:00:00:00:00" and len(macs) < 32:
            macs.append(mac)
        if _read(f"/sys/class/net/{name}/carrier") == "1" and len(links) < 32:
            links.append(name[:32])
    return Hardware(board_model=model[:200], serial=serial[:100],
                    macs=tuple(dict.fromkeys(macs)), links=tuple(links))


# --------------------------------------------------------------------------- state


@dataclass
class Enroller:
    """One probe's enrollment: keys, request, MQTT session, answer handling."""

    settings: EnrollmentSettings
    broker: BrokerSettings
    trusted: list[Any]  # Ed25519PublicKey
    topics: Topics = field(default_factory=Topics)
    #: Set by another thread to give up (the agent is stopping).
    stop: threading.Event = field(default_factory=threading.Event)
    last_error: str | None = None

    def __post_init__(self) -> None:
        from netmon.enrollment import normalise_claim

        claim_file = self.settings.claim_file
        if claim_file is None:
            raise EnrollmentFailed("enrollment.claim_file is not set")
        try:
            self.claim = normalise_claim(read_secret(claim_file, "enrollment.claim_file") or "")
        except SecretFileError as exc:
            raise EnrollmentFailed(str(exc)) from None
        except ValueError as exc:
            raise EnrollmentFailed(f"enrollment.claim_file: {claim_file}: {exc}") from None
        if not self.trusted:
            raise EnrollmentFailed("enrollment needs remote_config.public_keys: the NOC key "
                                   "that signs the answer")
        self.dir = self.settings.state_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = self._key()

    def _key(self) -> Any:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        from netmon.enrollment import load_x25519_private, x25519_private_pem

        path = self.dir / KEY_FILE
        if path.exists():
            return load_x25519_private(path.read_bytes())
        key = X25519PrivateKey.generate()
        atomic_write(path, x25519_private_pem(key), mode=0o600)
        log.info("first boot: enrollment key pair made (%s)", path)
        return key

    def request(self, renew: bool = False) -> EnrollRequest:
        """The pending request (kept across restarts), or a new one."""
        from pydantic import ValidationError

        from netmon.contract import EnrollRequest
        from netmon.enrollment import claim_proof, x25519_public_b64

        path = self.dir / REQUEST_FILE
        if not renew:
            try:
                req = EnrollRequest.model_validate_json(path.read_bytes())
                if req.public_key == x25519_public_b64(self.key):
                    return req
            except (OSError, ValidationError):
                pass
        unsigned: dict[str, Any] = {
            "schema": 1, "request_id": f"enroll-{secrets.token_hex(16)}",
            "public_key": x25519_public_b64(self.key),
            "created_at": format_time(now_utc()), "agent_version": __version__,
            "hardware": hardware_facts().as_json(),
        }
        req = EnrollRequest.model_validate(unsigned | {
            "claim_proof": claim_proof(self.claim, unsigned)})
        atomic_write(path, req.to_json(), mode=0o600)
        return req

    def _record(self, **data: Any) -> None:
        atomic_write(self.dir / STATE_FILE, json.dumps(
            data | {"at": format_time(now_utc())}).encode(), mode=0o600)

    # ------------------------------------------------------------------ answers

    def handle_answer(self, payload: bytes, req: EnrollRequest) -> str:
        """``enrolled``, ``rejected`` or ``refused`` (an answer this probe does not
        accept: logged with its reason, the probe keeps waiting)."""
        from netmon.enrollment import EnrollmentError, open_credentials, verify_answer

        if not payload:
            return "refused"
        try:
            answer = verify_answer(payload, self.trusted, request_id=req.request_id,
                                   public_key_b64=req.public_key)
            creds = open_credentials(answer, self.key)
        except EnrollmentError as exc:
            self.last_error = str(exc)
            self._record(state="rejected" if exc.reason == "rejected" else "waiting",
                         request_id=req.request_id, error=self.last_error)
            if exc.reason == "rejected":
                log.error("enrollment request %s rejected by the NOC: %s", req.request_id,
                          exc.detail)
                return "rejected"
            log.warning("enrollment answer refused: %s", exc)
            return "refused"
        password = self.dir / PASSWORD_FILE
        atomic_write(password, creds.password.encode() + b"\n", mode=0o600)
        atomic_write(self.settings.identity_path, json.dumps({
            "probe_id": creds.probe_id, "username": creds.username,
            "password_file": str(password), "request_id": req.request_id,
            "enrolled_at": format_time(now_utc()), "key_id": answer.key_id}).encode(),
            mode=0o600)
        self._record(state="enrolled", request_id=req.request_id, probe_id=creds.probe_id)
        log.info("enrolled as %s (request %s)", creds.probe_id, req.request_id)
        return "enrolled"

    # ------------------------------------------------------------------ MQTT

    def run(self) -> None:
        """Until enrolled (returns) or :attr:`stop` is set (EnrollmentFailed)."""
        req = self.request()
        attempt = 0
        policy = ReconnectPolicy(1.0, 60.0, automatic=False)
        rng = secrets.SystemRandom()
        while not self.stop.is_set():
            outcome = self._session(req)
            if outcome == "enrolled":
                return
            if outcome == "rejected":
                if self.stop.wait(self.settings.retry_after_rejection_s):
                    break
                req = self.request(renew=True)
                attempt = 0
                continue
            self.stop.wait(policy.delay(attempt, rng))
            attempt += 1
        raise EnrollmentFailed("stopped before enrollment finished")

    def _session(self, req: EnrollRequest) -> str:
        from paho.mqtt.enums import MQTTProtocolVersion

        from netmon.mqtt import new_client

        settings = self.broker.model_copy(update={"port": self.settings.port})
        try:
            password = read_secret(self.settings.password_file, "enrollment.password_file")
        except SecretFileError as exc:
            log.error("%s", exc)
            return "error"
        client = new_client(settings, client_id=req.request_id,
                            protocol=MQTTProtocolVersion.MQTTv5,
                            reconnect=ReconnectPolicy(1.0, 30.0, automatic=False),
                            credentials=(self.settings.username, password))
        cond = threading.Condition()
        box: dict[str, Any] = {"connected": None, "acks": {}, "answers": []}

        def on_connect(c: Any, u: Any, f: Any, rc: Any, p: Any = None) -> None:
            with cond:
                box["connected"] = rc
                cond.notify_all()

        def on_publish(c: Any, u: Any, mid: int, rc: Any, p: Any = None) -> None:
            with cond:
                box["acks"][mid] = rc
                cond.notify_all()

        def on_message(c: Any, u: Any, msg: Any) -> None:
            with cond:
                box["answers"].append(bytes(msg.payload))
                cond.notify_all()

        def on_disconnect(c: Any, u: Any, f: Any, rc: Any, p: Any = None) -> None:
            with cond:
                box["lost"] = True
                cond.notify_all()

        client.on_connect, client.on_publish = on_connect, on_publish
        client.on_message, client.on_disconnect = on_message, on_disconnect
        try:
            client.connect(settings.host, settings.port, keepalive=settings.keepalive_s)
        except OSError as exc:
            log.warning("enrollment: broker %s:%s unreachable: %s", settings.host,
                        settings.port, exc)
            return "error"
        client.loop_start()
        try:
            with cond:
                cond.wait_for(lambda: box["connected"] is not None or self.stop.is_set(), 30)
            rc = box["connected"]
            if rc is None or rc.is_failure:
                log.warning("enrollment: broker refused %s: %s", self.settings.username, rc)
                return "error"
            client.subscribe(self.topics.enroll_answer(req.request_id), qos=1)
            info = client.publish(self.topics.enroll_request(req.request_id), req.to_json(),
                                  qos=1, retain=True)
            with cond:
                cond.wait_for(lambda: info.mid in box["acks"] or self.stop.is_set(), 30)
            ack = box["acks"].get(info.mid)
            if ack is None or ack.is_failure:
                log.warning("enrollment: request not accepted by the broker: %s", ack)
                return "error"
            log.info("enrollment request %s published (claim proof, key, %s); waiting for "
                     "the NOC", req.request_id, req.hardware.board_model or "unknown board")
            self._record(state="waiting", request_id=req.request_id, error=self.last_error)
            while not self.stop.is_set():
                with cond:
                    cond.wait_for(lambda: bool(box["answers"]) or box.get("lost", False)
                                  or self.stop.is_set(), 5)
                    answers, box["answers"] = box["answers"], []
                    lost = box.get("lost", False)
                for payload in answers:
                    outcome = self.handle_answer(payload, req)
                    if outcome in ("enrolled", "rejected"):
                        return outcome
                if lost:
                    return "error"
            return "stopped"
        finally:
            client.disconnect()
            client.loop_stop()

