"""Signed agent updates, NOC side (issue 18): ``probes update push|status``.

:func:`push` hashes the release's wheel files, signs a
:class:`~netmon.contract.ReleaseManifest` (where the probes fetch them: the measurement
server's HTTP site, which probes already reach; which probes take it) and publishes it
retained on ``Topics.updates``. The wheels themselves are copied to that site beforehand
(docs/fleet.md). :func:`status` reads every probe's retained status: running version,
the version on trial, pending and failed ones, the last update event.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.fleet.errors import FleetError
from collector.fleet.noc_client import NocClient
from netmon.contract import ContractError, Topics, format_time, parse_status
from netmon.release import sign_manifest, verify_manifest
from netmon.signing import SigningError


def wheel_refs(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Name, SHA-256 and size of each wheel file (FleetError naming a missing one)."""
    out = []
    for path in paths:
        if path.suffix != ".whl":
            raise FleetError(f"--wheel {path}: not a .whl file", usage=True)
        digest, size = hashlib.sha256(), 0
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
        except OSError as exc:
            raise FleetError(f"--wheel {path}: {exc.strerror}", usage=True) from None
        out.append({"name": path.name, "sha256": digest.hexdigest(), "size": size})
    return out


@dataclass
class Pushed:
    """What ``update push`` published."""

    serial: int
    version: str
    wheels: list[dict[str, Any]]
    probes: list[str] | None
    percent: int
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        return {"serial": self.serial, "version": self.version, "wheels": self.wheels,
                "probes": self.probes, "percent": self.percent, "bytes": self.bytes}


def push(client: NocClient, topics: Topics, key: Ed25519PrivateKey, *, version: str,
         wheels: Sequence[Path], base_url: str, probes: Sequence[str] | None,
         percent: int, health_timeout_s: float) -> Pushed:
    """Sign and publish a release manifest (retained, QoS 1, PUBACK checked). The serial
    is ``max(now as Unix seconds, retained serial + 1)``."""
    refs = wheel_refs(wheels)
    retained = client.collect_retained(topics.updates(), expect=(), quiet_s=0.3)
    old = 0
    payload = retained.get(topics.updates())
    if payload:
        try:
            old = verify_manifest(payload, [key.public_key()]).serial
        except SigningError:
            old = 0
    serial = max(int(time.time()), old + 1)
    try:
        manifest = sign_manifest(serial=serial, version=version, base_url=base_url,
                                 wheels=refs, key=key, probes=probes, percent=percent,
                                 health_timeout_s=health_timeout_s)
    except SigningError as exc:
        raise FleetError(f"cannot sign the manifest: {exc}", usage=True) from None
    client.publish(topics.updates(), manifest, retain=True)
    return Pushed(serial, version, refs, sorted(set(probes)) if probes is not None else None,
                  percent, len(manifest))


def status(client: NocClient, topics: Topics) -> list[dict[str, Any]]:
    """Each probe's retained status, reduced to its update view."""
    raw = client.collect_retained(topics.all_status())
    rows = []
    for topic, payload in sorted(raw.items()):
        if not payload:
            continue
        try:
            probe_id, _ = topics.parse(topic)
            msg = parse_status(payload, probe_id)
        except ContractError:
            continue
        up = msg.update
        rows.append({
            "probe_id": msg.probe_id, "state": msg.state, "running": msg.agent_version,
            "board_model": msg.board_model,
            "at": format_time(msg.at) if msg.at else None,
            "trial": up.trial if up else None, "pending": up.pending if up else None,
            "failed": dict(up.failed) if up else {},
            "last_event": up.last_event if up else None,
            "last_event_at": format_time(up.last_event_at) if up and up.last_event_at
            else None})
    return rows
