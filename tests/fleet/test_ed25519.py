"""The probe's Ed25519 verification (netmon/ed25519.py, libsodium) agrees with the
``cryptography`` package (OpenSSL) and with RFC 8032's test vectors: it accepts every
valid signature and refuses every altered signature, message or key, malleable
signatures (S >= L) and keys that are not curve points."""

from __future__ import annotations

import random

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from netmon import ed25519
from netmon.ed25519 import BadSignature, VerifyKey

#: RFC 8032 section 7.1, TEST 1 and TEST 2: (secret key, public key, message, signature).
RFC8032 = [
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
     "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
     "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
]


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw)


def openssl_ok(public: bytes, signature: bytes, message: bytes) -> bool:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@pytest.mark.parametrize("secret,public,message,signature", RFC8032)
def test_rfc8032_vectors(secret: str, public: str, message: str, signature: str) -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
    assert raw_public(key).hex() == public  # the vector as transcribed here is right
    assert key.sign(bytes.fromhex(message)).hex() == signature
    assert ed25519.verify(bytes.fromhex(public), bytes.fromhex(signature),
                          bytes.fromhex(message))
    assert not ed25519.verify(bytes.fromhex(public), bytes.fromhex(signature),
                              bytes.fromhex(message) + b"\0")


def test_agrees_with_openssl_on_valid_and_altered_signatures() -> None:
    rng = random.Random(20)
    for n in range(40):
        key = Ed25519PrivateKey.generate()
        public = raw_public(key)
        message = rng.randbytes(rng.randrange(0, 300))
        signature = key.sign(message)
        assert ed25519.verify(public, signature, message)
        cases = []
        bit = rng.randrange(512)
        flipped = bytearray(signature)
        flipped[bit // 8] ^= 1 << (bit % 8)
        cases.append((public, bytes(flipped), message))
        cases.append((public, signature, message + b"x"))
        if message:
            changed = bytearray(message)
            changed[rng.randrange(len(message))] ^= 1 << rng.randrange(8)
            cases.append((public, signature, bytes(changed)))
        other = bytearray(public)
        other[n % 32] ^= 1 << (n % 8)
        cases.append((bytes(other), signature, message))
        cases.append((raw_public(Ed25519PrivateKey.generate()), signature, message))
        for case in cases:
            assert ed25519.verify(*case) is False
            assert openssl_ok(*case) is False


def test_malleable_and_malformed_signatures_are_refused() -> None:
    key = Ed25519PrivateKey.generate()
    public, message = raw_public(key), b"plan"
    signature = key.sign(message)
    s = int.from_bytes(signature[32:], "little")
    # S + L satisfies the group equation too: a strict verifier refuses it (as OpenSSL).
    malleated = signature[:32] + (s + ed25519.L).to_bytes(32, "little")
    assert not ed25519.verify(public, malleated, message)
    assert not openssl_ok(public, malleated, message)
    assert not ed25519.verify(public, signature[:63], message)
    assert not ed25519.verify(public[:31], signature, message)
    # y = p (non-canonical) and a y with no x on the curve: not points.
    assert not ed25519.verify(ed25519.P.to_bytes(32, "little"), signature, message)
    assert not ed25519.verify(b"\xff" * 32, signature, message)
    with pytest.raises(ValueError, match="curve point"):
        VerifyKey((2).to_bytes(32, "little"))


def test_verify_key_from_pem_raises_on_a_bad_signature() -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    vk = VerifyKey.from_pem(pem)
    assert vk.raw == raw_public(key)
    vk.verify(key.sign(b"m"), b"m")
    with pytest.raises(BadSignature):  # fails closed, like cryptography's verify
        vk.verify(key.sign(b"m"), b"n")


def test_pem_that_is_not_an_ed25519_public_key_is_refused() -> None:
    private_pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    with pytest.raises(ValueError, match="not a PEM public key"):
        VerifyKey.from_pem(private_pem)
    ec_pem = generate_private_key(SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ValueError, match="not an Ed25519 public key"):
        VerifyKey.from_pem(ec_pem)
    with pytest.raises(ValueError, match="non-ASCII"):
        VerifyKey.from_pem("-----BEGIN PUBLIC KEY-----\nkhóa\n".encode())
