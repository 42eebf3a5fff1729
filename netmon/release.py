"""Signed agent release manifests (issue 18), shared by the NOC (signs) and the probe
(verifies, decides whether it is targeted).

The signature rule is the one of :mod:`netmon.signing`: Ed25519 over the canonical bytes
(sorted keys, compact, UTF-8) of every member except ``signature``; ``key_id`` picks the
trusted NOC key. Reason codes (``SigningError.reason``): ``malformed``, ``too_large``,
``unsigned``, ``unknown_key``, ``bad_signature``.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # only the NOC signs, with cryptography; a probe verifies without it
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from netmon.contract import ReleaseManifest
    from netmon.ed25519 import VerifyKey

# The models (pydantic) are imported by the functions that sign or parse: a probe's run
# time decides whether it is targeted (:func:`targets`) without them (issue 20).


class Rollout(Protocol):
    """What :func:`targets` reads of a manifest (the model, or the probe's plain copy)."""

    @property
    def version(self) -> str: ...
    @property
    def probes(self) -> Sequence[str] | None: ...
    @property
    def percent(self) -> int: ...


def sign_manifest(*, serial: int, version: str, base_url: str, wheels: Sequence[dict[str, Any]],
                  key: Ed25519PrivateKey, probes: Sequence[str] | None = None,
                  percent: int = 100, health_timeout_s: float = 300.0,
                  issued_at: datetime | None = None) -> bytes:
    """The signed manifest as published (canonical bytes). SigningError(``malformed``)
    names the member that does not fit the contract."""
    from pydantic import ValidationError

    from netmon.contract import (
        MAX_MESSAGE_BYTES,
        ReleaseManifest,
        describe_validation_error,
        format_time,
        now_utc,
    )
    from netmon.signing import SigningError, canonical_bytes, key_id

    unsigned: dict[str, Any] = {
        "schema": 1, "serial": serial, "version": version,
        "issued_at": format_time(issued_at or now_utc()),
        "base_url": base_url if base_url.endswith("/") else base_url + "/",
        "wheels": [dict(w) for w in wheels],
        "probes": sorted(set(probes)) if probes is not None else None,
        "percent": percent, "health_timeout_s": float(health_timeout_s),
        "key_id": key_id(key.public_key()),
    }
    signed = unsigned | {"signature": base64.b64encode(
        key.sign(canonical_bytes(unsigned))).decode("ascii")}
    try:
        ReleaseManifest.model_validate(signed)
    except ValidationError as exc:
        raise SigningError("malformed", describe_validation_error(exc)) from None
    payload = canonical_bytes(signed)
    if len(payload) > MAX_MESSAGE_BYTES:
        raise SigningError("too_large", f"manifest is {len(payload)} bytes")
    return payload


def verify_manifest(payload: bytes, trusted: Sequence[VerifyKey | Ed25519PublicKey]
                    ) -> ReleaseManifest:
    """Parse and check a manifest's signature against the trusted NOC keys."""
    from netmon.contract import ReleaseManifest
    from netmon.signing import check_signature, parse_signed

    manifest, obj = parse_signed(payload, ReleaseManifest, "manifest")
    check_signature(obj, manifest.key_id, manifest.signature, trusted)
    return manifest


def bucket(version: str, probe_id: str) -> int:
    """The probe's place (0-99) in a staged rollout of ``version``."""
    digest = hashlib.sha256(f"{version}\0{probe_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def targets(manifest: Rollout, probe_id: str) -> bool:
    """True when ``probe_id`` takes this release: named in ``probes``, or (no list) in
    the first ``percent`` buckets."""
    if manifest.probes is not None:
        return probe_id in manifest.probes
    return bucket(manifest.version, probe_id) < manifest.percent
