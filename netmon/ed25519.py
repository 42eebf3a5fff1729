"""Ed25519 signature *verification* (RFC 8032, section 5.1.7) in plain Python, for the
probe.

A probe only ever checks the NOC's signatures (signed configs, release manifests); it
never signs. Importing the ``cryptography`` package for that costs about 10 MB of
resident memory for the agent's whole life (issue 20), so the agent verifies with this
module instead, while the NOC tools keep signing with ``cryptography``
(:mod:`netmon.signing`). Verification handles public data only (key, message,
signature), so the timing of this code reveals nothing secret. It follows RFC 8032's
reference code (section 6) and is strict where the RFC allows it: a point encoding with
y >= p or a negative zero x, and S >= L, are rejected (no malleable signatures).
``tests/fleet/test_ed25519.py`` checks it against ``cryptography`` and RFC 8032's test
vectors.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Final

#: The field prime, the group order and the curve constant of edwards25519.
P: Final = 2**255 - 19
L: Final = 2**252 + 27742317777372353535851937790883648493
_D: Final = -121665 * pow(121666, P - 2, P) % P
_SQRT_M1: Final = pow(2, (P - 1) // 4, P)

#: DER of SubjectPublicKeyInfo for Ed25519 (RFC 8410) before the 32 raw key bytes.
_SPKI_PREFIX: Final = bytes.fromhex("302a300506032b6570032100")

# Points in extended homogeneous coordinates (X, Y, Z, T) with x = X/Z, y = Y/Z, xy = T/Z.
_Point = tuple[int, int, int, int]


def _add(a: _Point, b: _Point) -> _Point:
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = (y1 - x1) * (y2 - x2) % P
    bb = (y1 + x1) * (y2 + x2) % P
    cc = 2 * t1 * t2 * _D % P
    dd = 2 * z1 * z2 % P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return e * f % P, g * h % P, f * g % P, e * h % P


def _mul(scalar: int, point: _Point) -> _Point:
    acc: _Point = (0, 1, 1, 0)  # the neutral element
    while scalar > 0:
        if scalar & 1:
            acc = _add(acc, point)
        point = _add(point, point)
        scalar >>= 1
    return acc


def _equal(a: _Point, b: _Point) -> bool:
    x1, y1, z1, _ = a
    x2, y2, z2, _ = b
    return (x1 * z2 - x2 * z1) % P == 0 and (y1 * z2 - y2 * z1) % P == 0


def _recover_x(y: int, sign: int) -> int | None:
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, P - 2, P) % P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * _SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    if x & 1 != sign:
        x = P - x
    return x


def _decode_point(data: bytes) -> _Point | None:
    y = int.from_bytes(data, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    if x is None:
        return None
    return x, y, 1, x * y % P


def _base_point() -> _Point:
    y = 4 * pow(5, P - 2, P) % P
    x = _recover_x(y, 0)
    assert x is not None  # the standard base point is on the curve
    return x, y, 1, x * y % P


_BASE: Final = _base_point()


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` (64 bytes) is a valid Ed25519 signature of ``message`` by
    ``public_key`` (32 raw bytes); False for anything else, malformed input included."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    a = _decode_point(public_key)
    r = _decode_point(signature[:32])
    if a is None or r is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= L:
        return False
    h = int.from_bytes(hashlib.sha512(signature[:32] + public_key + message).digest(),
                       "little") % L
    return _equal(_mul(s, _BASE), _add(r, _mul(h, a)))


class BadSignature(ValueError):
    """A signature that does not verify (raised by :meth:`VerifyKey.verify`)."""


class VerifyKey:
    """An Ed25519 public key that can only verify: what a probe trusts. Its ``verify``
    raises like ``cryptography``'s (it never returns a verdict a caller could ignore)."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32 or _decode_point(raw) is None:
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
