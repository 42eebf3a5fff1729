"""Zero-touch enrollment, the part both sides share (issue 18): claim proofs, sealing
credentials to a probe's X25519 key, signing and checking the NOC's answer.

* A blank probe makes an X25519 key pair on first boot and publishes an
  :class:`~netmon.contract.EnrollRequest` whose ``claim_proof`` is
  HMAC-SHA256(claim code, canonical bytes of the rest) (:func:`claim_proof`).
* The NOC approves by claim code: :func:`find_claimed` picks the request the code proves,
  :func:`seal` encrypts the credentials to the request's key (ephemeral X25519, HKDF-SHA256,
  ChaCha20-Poly1305, the request id as associated data) and :func:`sign_answer` signs the
  answer with the NOC's Ed25519 key (the canonical-bytes rule of :mod:`netmon.signing`).
* The probe checks the answer with :func:`verify_answer` (trusted key, signature, its own
  request and key, not expired) and opens the credentials with :func:`open_sealed`.

Reason codes (``EnrollmentError.reason``): ``malformed``, ``unsigned``, ``unknown_key``,
``bad_signature``, ``wrong_request``, ``wrong_key``, ``expired``, ``not_yet_valid``,
``rejected``, ``bad_seal``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import ValidationError

from netmon.contract import (
    MAX_MESSAGE_BYTES,
    Credentials,
    EnrollAnswer,
    EnrollRequest,
    SealedBox,
    describe_validation_error,
    format_time,
    now_utc,
)
from netmon.ed25519 import VerifyKey
from netmon.errors import EXIT_RUNTIME, NetmonError
from netmon.jsonutil import JsonError, decode_object
from netmon.signing import canonical_bytes, key_id, signature_ok

#: HKDF ``info``: binds the derived key to this protocol and version.
_HKDF_INFO: Final = b"hatinh-netmon enrollment v1"
#: A claim code: 12 or more letters/digits once dashes and spaces are dropped.
CLAIM_RE: Final = re.compile(r"^[A-Z0-9]{12,64}$")
#: Skew allowed between NOC and probe clocks when checking ``issued_at``.
CLOCK_SKEW: Final = timedelta(minutes=10)


class EnrollmentError(NetmonError):
    """An enrollment message that cannot be used; ``reason`` is a stable code."""

    exit_code = EXIT_RUNTIME

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# --------------------------------------------------------------------------- claim codes


def normalise_claim(code: str) -> str:
    """The claim code as compared: NFC, upper case, without spaces and dashes (a label
    reads ``K7QF-2M9X-PL4D``). ValueError when it is not 12-64 letters and digits."""
    text = unicodedata.normalize("NFC", code).upper().replace("-", "").replace(" ", "").strip()
    if not CLAIM_RE.match(text):
        raise ValueError("a claim code is 12 to 64 letters and digits (dashes ignored)")
    return text


def new_claim_code() -> str:
    """A fresh claim code for a label: 16 characters from an alphabet without 0/O/1/I,
    in groups of four (80 bits)."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    raw = "".join(alphabet[b % 32] for b in os.urandom(16))
    return "-".join(raw[i:i + 4] for i in range(0, 16, 4))


def claim_proof(claim: str, unsigned: dict[str, Any]) -> str:
    """HMAC-SHA256 keyed with the normalised claim code over ``unsigned``'s canonical
    bytes (the request without ``claim_proof``), hex."""
    return hmac.new(normalise_claim(claim).encode(), canonical_bytes(unsigned),
                    hashlib.sha256).hexdigest()


def request_unsigned(request: EnrollRequest) -> dict[str, Any]:
    """The members ``claim_proof`` covers, as they travel."""
    data = request.model_dump(by_alias=True, mode="json", exclude={"claim_proof"})
    data["created_at"] = format_time(request.created_at)
    return data


def proves_claim(request: EnrollRequest, claim: str) -> bool:
    """True when ``request`` was made by a probe holding ``claim``."""
    want = claim_proof(claim, request_unsigned(request))
    return hmac.compare_digest(want, request.claim_proof)


def find_claimed(requests: Iterable[EnrollRequest], claim: str) -> list[EnrollRequest]:
    """The requests ``claim`` proves (normally one; several if a probe re-keyed)."""
    return [r for r in requests if proves_claim(r, claim)]


# --------------------------------------------------------------------------- keys


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EnrollmentError("malformed", f"{what} is not base64") from None


def x25519_public_b64(key: X25519PrivateKey) -> str:
    """The raw public key, base64 (as in a request)."""
    return _b64(key.public_key().public_bytes(serialization.Encoding.Raw,
                                              serialization.PublicFormat.Raw))


def public_key_id(public_b64: str) -> str:
    """16 hex digits of SHA-256 of a request's raw public key."""
    return hashlib.sha256(_unb64(public_b64, "public_key")).hexdigest()[:16]


def x25519_private_pem(key: X25519PrivateKey) -> bytes:
    """PKCS#8 PEM (the file is 0600 on the probe)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_x25519_private(data: bytes) -> X25519PrivateKey:
    """Parse a PEM X25519 private key; EnrollmentError(``malformed``) otherwise."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise EnrollmentError("malformed", f"not a PEM private key: {exc}") from None
    if not isinstance(key, X25519PrivateKey):
        raise EnrollmentError("malformed", "not an X25519 private key")
    return key


# --------------------------------------------------------------------------- sealing


def _derive(shared: bytes, ephemeral: bytes, recipient: bytes, aad: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral + recipient,
                info=_HKDF_INFO + b"|" + aad).derive(shared)


def seal(recipient_b64: str, plaintext: bytes, aad: bytes) -> SealedBox:
    """Encrypt ``plaintext`` to the X25519 public key ``recipient_b64`` (only its private
    key opens it); ``aad`` (the request id) must be given again to open it."""
    recipient = _unb64(recipient_b64, "public_key")
    try:
        peer = X25519PublicKey.from_public_bytes(recipient)
    except ValueError as exc:
        raise EnrollmentError("malformed", f"public_key: {exc}") from None
    eph = X25519PrivateKey.generate()
    eph_raw = eph.public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
    key = _derive(eph.exchange(peer), eph_raw, recipient, aad)
    nonce = os.urandom(12)
    return SealedBox(ephemeral=_b64(eph_raw), nonce=_b64(nonce),
                     ciphertext=_b64(ChaCha20Poly1305(key).encrypt(nonce, plaintext, aad)))


def open_sealed(private: X25519PrivateKey, box: SealedBox, aad: bytes) -> bytes:
    """Decrypt a :func:`seal` box; EnrollmentError(``bad_seal``) when it was not sealed to
    this key with this ``aad`` or was altered."""
    eph_raw = _unb64(box.ephemeral, "sealed.ephemeral")
    own = private.public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(eph_raw))
        key = _derive(shared, eph_raw, own, aad)
        return ChaCha20Poly1305(key).decrypt(_unb64(box.nonce, "sealed.nonce"),
                                             _unb64(box.ciphertext, "sealed.ciphertext"), aad)
    except (InvalidTag, ValueError):
        raise EnrollmentError("bad_seal", "the credentials do not open with this probe's "
                                          "key (sealed to another key, or altered)") from None


# --------------------------------------------------------------------------- answers


def _answer_unsigned(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "signature"}


def sign_answer(request: EnrollRequest, key: Ed25519PrivateKey, *, decision: str,
                probe_id: str | None = None, credentials: Credentials | None = None,
                reason: str | None = None, valid_for: timedelta = timedelta(days=30),
                issued_at: datetime | None = None) -> EnrollAnswer:
    """The NOC's signed answer to ``request``: ``approved`` with ``credentials`` sealed to
    the request's key, or ``rejected`` with ``reason``."""
    issued = issued_at or now_utc()
    unsigned: dict[str, Any] = {
        "schema": 1, "request_id": request.request_id,
        "public_key_id": public_key_id(request.public_key), "decision": decision,
        "probe_id": probe_id, "reason": reason,
        "issued_at": format_time(issued), "expires_at": format_time(issued + valid_for),
        "sealed": None, "key_id": key_id(key.public_key()),
    }
    if credentials is not None:
        box = seal(request.public_key, credentials.model_dump_json().encode(),
                   request.request_id.encode())
        unsigned["sealed"] = box.model_dump()
    signature = _b64(key.sign(canonical_bytes(unsigned)))
    try:
        return EnrollAnswer.model_validate(unsigned | {"signature": signature})
    except ValidationError as exc:
        raise EnrollmentError("malformed", describe_validation_error(exc)) from None


def answer_bytes(answer: EnrollAnswer) -> bytes:
    """The payload as published (canonical form, signature included)."""
    return canonical_bytes(answer.model_dump(by_alias=True, mode="json") | {
        "issued_at": format_time(answer.issued_at),
        "expires_at": format_time(answer.expires_at)})


def verify_answer(payload: bytes, trusted: Sequence[VerifyKey | Ed25519PublicKey], *,
                  request_id: str,
                  public_key_b64: str, now: datetime | None = None) -> EnrollAnswer:
    """Check an answer as the probe that made ``request_id`` with ``public_key_b64``:
    signed by a trusted NOC key, unaltered, for this request and this key, issued and not
    expired. Raises EnrollmentError with the reason; a ``rejected`` decision raises
    ``rejected`` with the NOC's reason."""
    try:
        obj = decode_object(payload, MAX_MESSAGE_BYTES)
    except JsonError as exc:
        raise EnrollmentError("malformed", exc.detail) from None
    if not obj.get("signature"):
        raise EnrollmentError("unsigned", "the answer has no signature")
    try:
        answer = EnrollAnswer.model_validate(obj)
    except ValidationError as exc:
        raise EnrollmentError("malformed", describe_validation_error(exc)) from None
    by_id = {key_id(k): k for k in trusted}
    key = by_id.get(answer.key_id)
    if key is None:
        raise EnrollmentError("unknown_key", f"signed with key {answer.key_id}, not a trusted "
                                             f"NOC key ({', '.join(sorted(by_id)) or 'none'})")
    if not signature_ok(key, _unb64(answer.signature, "signature"),
                        canonical_bytes(_answer_unsigned(obj))):
        raise EnrollmentError("bad_signature", "signature does not match the content")
    if answer.request_id != request_id:
        raise EnrollmentError("wrong_request", f"answer is for {answer.request_id}, this probe "
                                               f"asked as {request_id}")
    if answer.public_key_id != public_key_id(public_key_b64):
        raise EnrollmentError("wrong_key", "answer is for another public key")
    at = now or now_utc()
    if answer.issued_at > at + CLOCK_SKEW:
        raise EnrollmentError("not_yet_valid", f"issued {format_time(answer.issued_at)}, "
                                               f"in the future")
    if answer.expires_at <= at:
        raise EnrollmentError("expired", f"expired {format_time(answer.expires_at)}")
    if answer.decision == "rejected":
        raise EnrollmentError("rejected", answer.reason or "rejected by the NOC")
    if answer.sealed is None or answer.probe_id is None:
        raise EnrollmentError("malformed", "an approval without credentials")
    return answer


def open_credentials(answer: EnrollAnswer, private: X25519PrivateKey) -> Credentials:
    """The credentials of a verified approval; EnrollmentError(``bad_seal`` /
    ``malformed``) when they do not open or do not name the approved probe."""
    if answer.sealed is None:
        raise EnrollmentError("malformed", "an approval without credentials")
    raw = open_sealed(private, answer.sealed, answer.request_id.encode())
    try:
        creds = Credentials.model_validate_json(raw)
    except ValidationError as exc:
        raise EnrollmentError("malformed", describe_validation_error(exc)) from None
    if creds.probe_id != answer.probe_id:
        raise EnrollmentError("malformed", "sealed credentials name another probe")
    return creds
