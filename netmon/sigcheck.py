"""Checking Ed25519 signatures over canonical JSON: the probe's side of
:mod:`netmon.signing` (which re-exports all of this), without pydantic or
``cryptography``, so a probe's run time checks signed configs, release manifests and
enrollment answers with neither loaded (issue 20).

Keys are :class:`netmon.ed25519.VerifyKey` (libsodium through PyNaCl); every function
that checks signatures also takes ``cryptography``'s ``Ed25519PublicKey`` (NOC tools,
tests), imported only when one is given.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from netmon import ed25519
from netmon.contractbase import MAX_MESSAGE_BYTES
from netmon.ed25519 import VerifyKey
from netmon.errors import EXIT_INPUT, EXIT_RUNTIME, NetmonError
from netmon.jsonutil import JsonError, decode_object

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

#: ``probe_id`` of an envelope meant for every probe.
ALL_PROBES: Final = "*"


class SigningError(NetmonError):
    """A key or envelope that cannot be used. ``reason`` is a short stable code (it ends up
    in a probe's status and in counters); the message is what a person reads.

    Exit code 2 (a bad key, envelope or argument), except ``io``: a file that could not
    be written is a run-time failure (1).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.exit_code = EXIT_RUNTIME if reason == "io" else EXIT_INPUT


# --------------------------------------------------------------------------- canonical JSON


def _check_finite(obj: Any, where: str = "") -> None:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise SigningError("malformed", f"non-finite number at {where or '(top)'}")
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise SigningError("malformed", f"non-string key {key!r} at {where or '(top)'}")
            _check_finite(value, f"{where}.{key}" if where else key)
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            _check_finite(value, f"{where}[{i}]")


def canonical_bytes(obj: Any) -> bytes:
    """The bytes a signature covers: sorted keys, compact separators, UTF-8.

    Raises SigningError(``malformed``) for NaN/Infinity (JSON has no such numbers, and
    two parsers could disagree on them) and for non-string keys.
    """
    try:
        _check_finite(obj)
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SigningError("malformed", f"not JSON-serialisable: {exc}") from None
    except RecursionError:
        raise SigningError("malformed", "JSON nests too deeply") from None
    return text.encode("utf-8")


# --------------------------------------------------------------------------- keys


def _raw(public_key: VerifyKey | Ed25519PublicKey) -> bytes:
    if isinstance(public_key, VerifyKey):
        return public_key.raw
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw,
                                   serialization.PublicFormat.Raw)


def key_id(public_key: VerifyKey | Ed25519PublicKey) -> str:
    """Short fingerprint of a public key (16 hex digits of SHA-256 of the raw key)."""
    return hashlib.sha256(_raw(public_key)).hexdigest()[:16]


def load_public_key(path: Path) -> VerifyKey:
    """Read a PEM Ed25519 public key (verification only, without ``cryptography``);
    SigningError naming the file otherwise."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SigningError("key_missing", f"public key {path} not found") from None
    except OSError as exc:
        raise SigningError("key_unreadable", f"cannot read {path}: {exc.strerror}") from None
    try:
        return VerifyKey.from_pem(data)
    except ValueError as exc:
        raise SigningError("bad_key", f"{path}: {exc}") from None


def signature_ok(key: VerifyKey | Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    """True when ``signature`` is ``key``'s Ed25519 signature of ``data``; ``key`` is a
    probe's :class:`VerifyKey` or a ``cryptography`` public key (NOC tools, tests)."""
    if isinstance(key, VerifyKey):
        return ed25519.verify(key.raw, signature, data)
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def decode_signed(payload: bytes, what: str) -> dict[str, Any]:
    """A signed message's JSON object, before its shape and signature are checked: raises
    SigningError ``too_large`` / ``malformed`` (not one JSON object) / ``unsigned``;
    ``what`` names the message in the detail."""
    try:
        obj = decode_object(payload, MAX_MESSAGE_BYTES)
    except JsonError as exc:
        # Only the size has its own code; every other decoding problem is "malformed"
        # (the detail says which).
        raise SigningError("too_large" if exc.reason == "too_large" else "malformed",
                           exc.detail) from None
    if not obj.get("signature"):
        raise SigningError("unsigned", f"{what} has no signature")
    return obj


def check_signature(obj: dict[str, Any], signer: str, signature: str,
                    public_keys: Sequence[VerifyKey | Ed25519PublicKey]) -> None:
    """Check ``signature`` (base64) by the key named ``signer`` over every member of
    ``obj`` but ``signature``. Raises SigningError ``unknown_key`` (a key this side does
    not trust) or ``bad_signature``."""
    by_id = {key_id(k): k for k in public_keys}
    key = by_id.get(signer)
    if key is None:
        raise SigningError("unknown_key", f"signed with key {signer}, not a trusted NOC key "
                                          f"({', '.join(sorted(by_id)) or 'none configured'})")
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise SigningError("bad_signature", "signature is not valid base64") from None
    signed = {k: v for k, v in obj.items() if k != "signature"}
    if not signature_ok(key, raw, canonical_bytes(signed)):
        raise SigningError("bad_signature",
                           f"signature does not match the content (key {signer})")
