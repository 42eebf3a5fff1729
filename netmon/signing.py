"""Ed25519 signatures over a canonical JSON envelope: how the NOC signs remote probe
configuration and how a probe checks it.

An envelope is a JSON object::

    {"schema": 1, "probe_id": "ht-kyanh-01" | "*", "version": 42,
     "issued_at": "2026-11-28T07:30:00.000Z", "key_id": "3f1c...",
     "plan": {...}, "signature": "<base64 Ed25519 signature>"}

The signature covers the *canonical bytes* of every member except ``signature``:
UTF-8 JSON with sorted keys, no insignificant whitespace, non-ASCII kept as is and
non-finite numbers refused (:func:`canonical_bytes`). Signer and verifier compute the
same bytes from the parsed object, so re-serialising on the way (a broker, a file) never
breaks a signature, while any change to any signed member does.

Keys are stored as PEM (PKCS#8 private, SubjectPublicKeyInfo public). ``key_id`` is the
first 16 hex digits of the SHA-256 of the raw 32-byte public key, so an agent holding
several NOC keys (key rotation) knows which one to try and an operator can tell keys apart.

Signing and key generation (the NOC's side) use the ``cryptography`` package, imported
when first needed; checking a signature (the probe's side: :mod:`netmon.sigcheck`, re-exported here,
without pydantic) uses :mod:`netmon.ed25519`,
so a probe never loads ``cryptography`` for it (about 10 MB resident, issue 20).
:func:`load_public_key` returns a :class:`netmon.ed25519.VerifyKey`; every function that
checks signatures also takes ``cryptography``'s ``Ed25519PublicKey``.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from netmon.contract import (
    MAX_MESSAGE_BYTES,
    PROBE_ID_PATTERN,
    UtcDatetime,
    describe_validation_error,
    format_time,
    now_utc,
)
from netmon.fsutil import atomic_write

# The probe's side (checking), without pydantic or cryptography, re-exported here.
from netmon.sigcheck import ALL_PROBES as ALL_PROBES
from netmon.sigcheck import SigningError as SigningError
from netmon.sigcheck import canonical_bytes as canonical_bytes
from netmon.sigcheck import check_signature as check_signature
from netmon.sigcheck import decode_signed
from netmon.sigcheck import key_id as key_id
from netmon.sigcheck import load_public_key as load_public_key
from netmon.sigcheck import signature_ok as signature_ok

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from netmon.ed25519 import VerifyKey

M = TypeVar("M", bound=BaseModel)

ENVELOPE_SCHEMA: Final = 1


# --------------------------------------------------------------------------- keys


def generate_private_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 private key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (the file's 0600 mode and the NOC host protect it)."""
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM, the file Ansible installs on every probe."""
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def write_keypair(private_path: Path, public_path: Path, overwrite: bool = False
                  ) -> Ed25519PublicKey:
    """Generate a key pair; the private key file is created with mode 0600.

    The private key is written atomically and, unless ``overwrite``, only if no file is
    there yet, so a signing key is never silently replaced (every probe would then
    refuse the NOC's configs) and never left half written.
    """
    key = generate_private_key()
    try:
        atomic_write(private_path, private_key_pem(key), mode=0o600, overwrite=overwrite)
    except FileExistsError:
        raise SigningError("exists", f"{private_path} exists (use --force to replace)") from None
    except OSError as exc:
        raise SigningError("io", f"cannot create {private_path}: {exc.strerror}") from None
    public = key.public_key()
    try:
        # Atomic: a probe's Ansible copy never picks up half a key.
        atomic_write(public_path, public_key_pem(public), mode=0o644)
    except OSError as exc:
        raise SigningError("io", f"cannot write {public_path}: {exc.strerror}") from None
    return public


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a PEM Ed25519 private key; SigningError naming the file otherwise.

    A key readable by group or others is refused: it would sign configs for the whole fleet.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        st = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        raise SigningError("key_missing", f"private key {path} not found") from None
    except OSError as exc:
        raise SigningError("key_unreadable", f"cannot read {path}: {exc.strerror}") from None
    if st.st_mode & 0o077:
        raise SigningError("key_permissions",
                           f"private key {path} is accessible by group/others "
                           f"(mode {st.st_mode & 0o777:04o}); chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError("bad_key", f"{path} is not an unencrypted PEM private key: "
                                      f"{exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError("bad_key", f"{path} is not an Ed25519 key")
    return key


# --------------------------------------------------------------------------- envelope


class Envelope(BaseModel):
    """A signed remote configuration as it travels (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal[1] = Field(ENVELOPE_SCHEMA, alias="schema")
    probe_id: Annotated[str, StringConstraints(pattern=PROBE_ID_PATTERN + r"|^\*$")]
    version: int = Field(ge=1, le=2**53 - 1, strict=True)
    issued_at: UtcDatetime
    key_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
    plan: dict[str, Any]
    signature: Annotated[str, StringConstraints(min_length=1, max_length=200)]

    def signed_part(self) -> dict[str, Any]:
        """The members the signature covers, as they appear on the wire."""
        data = self.model_dump(by_alias=True, mode="json", exclude={"signature"})
        data["issued_at"] = format_time(self.issued_at)
        return data

    def to_json(self) -> bytes:
        """The payload as published (canonical form, signature included)."""
        return canonical_bytes(self.signed_part() | {"signature": self.signature})


def sign(plan: dict[str, Any], *, probe_id: str, version: int, key: Ed25519PrivateKey,
         issued_at: datetime | None = None) -> Envelope:
    """Sign ``plan`` for ``probe_id`` (or :data:`ALL_PROBES`) at ``version``."""
    unsigned: dict[str, Any] = {
        "schema": ENVELOPE_SCHEMA,
        "probe_id": probe_id,
        "version": version,
        "issued_at": format_time(issued_at or now_utc()),
        "key_id": key_id(key.public_key()),
        "plan": plan,
    }
    signature = key.sign(canonical_bytes(unsigned))
    try:
        env = Envelope.model_validate(
            unsigned | {"signature": base64.b64encode(signature).decode("ascii")})
    except ValidationError as exc:
        raise SigningError("malformed", describe_validation_error(exc)) from None
    if len(env.to_json()) > MAX_MESSAGE_BYTES:
        raise SigningError("too_large", f"signed config is {len(env.to_json())} bytes, "
                                        f"above the {MAX_MESSAGE_BYTES} byte message limit")
    return env


def parse_signed(payload: bytes, model: type[M], what: str) -> tuple[M, dict[str, Any]]:
    """Decode a signed JSON object and validate its shape as ``model`` (not its signature).

    Returns the model and the raw object (the signature is checked against the raw
    object's members, exactly as received). Raises SigningError ``too_large`` /
    ``malformed`` / ``unsigned``; ``what`` names the message in the detail.
    """
    obj = decode_signed(payload, what)
    try:
        parsed = model.model_validate(obj)
    except ValidationError as exc:
        raise SigningError("malformed", describe_validation_error(exc)) from None
    return parsed, obj


def parse_envelope(payload: bytes) -> tuple[Envelope, dict[str, Any]]:
    """Decode and validate the shape of a signed config envelope (not its signature):
    :func:`parse_signed` for :class:`Envelope`."""
    return parse_signed(payload, Envelope, "config")


def verify(payload: bytes, public_keys: Sequence[VerifyKey | Ed25519PublicKey]) -> Envelope:
    """Parse ``payload`` and check its signature against the trusted ``public_keys``.

    Raises SigningError: ``unsigned``, ``malformed``, ``too_large``, ``unknown_key`` (signed
    by a key this probe does not trust) or ``bad_signature``.
    """
    env, obj = parse_envelope(payload)
    check_signature(obj, env.key_id, env.signature, public_keys)
    return env
