"""Ed25519 signature *verification* for the probe, with libsodium (PyNaCl).

A probe only ever checks the NOC's signatures (signed configs, release manifests,
enrollment answers); it never signs. Importing the ``cryptography`` package for that
costs about 10 MB of resident memory for the agent's whole life (issue 20); PyNaCl's
libsodium costs about 1.3 MB, so the agent verifies with it while the NOC tools keep
signing with ``cryptography`` (:mod:`netmon.signing`). libsodium's verification is strict:
non-canonical encodings, small-order points and S >= L (malleable signatures) are refused.
``tests/fleet/test_ed25519.py`` checks it against ``cryptography`` (OpenSSL) and RFC
8032's test vectors.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

from nacl.bindings import crypto_core_ed25519_is_valid_point, crypto_sign_open
from nacl.exceptions import BadSignatureError, CryptoError

#: The field prime and the group order of edwards25519 (tests build bad inputs from them).
P: Final = 2**255 - 19
L: Final = 2**252 + 27742317777372353535851937790883648493

#: DER of SubjectPublicKeyInfo for Ed25519 (RFC 8410) before the 32 raw key bytes.
_SPKI_PREFIX: Final = bytes.fromhex("302a300506032b6570032100")


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` (64 bytes) is a valid Ed25519 signature of ``message`` by
    ``public_key`` (32 raw bytes); False for anything else, malformed input included."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        # crypto_sign_open takes the "signed message" form: signature then message.
        crypto_sign_open(signature + message, public_key)
    except (BadSignatureError, CryptoError, ValueError, TypeError):
        return False
    return True


class BadSignature(ValueError):
    """A signature that does not verify (raised by :meth:`VerifyKey.verify`)."""


class VerifyKey:
    """An Ed25519 public key that can only verify: what a probe trusts. Its ``verify``
    raises like ``cryptography``'s (it never returns a verdict a caller could ignore)."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32 or not crypto_core_ed25519_is_valid_point(raw):
            raise ValueError("not an Ed25519 public key (32 bytes encoding a curve point)")
        self.raw = raw

    def verify(self, signature: bytes, message: bytes) -> None:
        """Return when ``signature`` is this key's signature of ``message``; raise
        :class:`BadSignature` otherwise."""
        if not verify(self.raw, signature, message):
            raise BadSignature("Ed25519 signature does not verify")

    @classmethod
    def from_pem(cls, data: bytes) -> VerifyKey:
        """A SubjectPublicKeyInfo PEM (``-----BEGIN PUBLIC KEY-----``) holding an Ed25519
        key (RFC 8410), as ``netmon.signing.public_key_pem`` writes it; ValueError
        saying why otherwise."""
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("not a PEM file (non-ASCII bytes)") from None
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        if len(lines) < 3 or lines[0] != "-----BEGIN PUBLIC KEY-----" \
                or lines[-1] != "-----END PUBLIC KEY-----":
            raise ValueError("not a PEM public key (no BEGIN/END PUBLIC KEY lines)")
        try:
            der = base64.b64decode("".join(lines[1:-1]), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not a PEM public key (bad base64)") from None
        if len(der) != len(_SPKI_PREFIX) + 32 or not der.startswith(_SPKI_PREFIX):
            raise ValueError("not an Ed25519 public key")
        return cls(der[len(_SPKI_PREFIX):])
