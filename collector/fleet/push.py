"""Signed remote configuration from the NOC: plans in, retained signed envelopes out.

* :func:`load_plan` reads a plan TOML file and validates it with the probe's own model
  (:class:`netmon.plan.TestPlan`);
* :func:`push_configs` signs it (:mod:`netmon.signing`) once per probe and publishes it
  retained, QoS 1, on each probe's config topic through a :class:`NocClient`;
* :func:`show_config` verifies a retained config exactly as the probe would, for
  ``probes config show``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from collector.fleet.errors import FleetError
from collector.fleet.noc_client import NocClient
from netmon.contract import Topics, format_time
from netmon.settings import describe_errors, read_toml
from netmon.signing import Envelope, SigningError, parse_envelope, sign, verify


def load_plan(path: Path) -> dict[str, Any]:
    """Read a plan TOML file (``[tests.<name>]`` tables as in the agent's file config and
    ``[budgets_mb]``) and validate it with the agent's :class:`~netmon.plan.TestPlan`.

    Returns the plan as a JSON-ready dict; FleetError(usage=True) names each bad key.
    """
    from netmon.settings import ConfigError

    try:
        data = read_toml(path)
    except ConfigError as exc:
        raise FleetError(exc.report(), usage=True) from None
    from netmon.plan import TestPlan  # the same model the probe validates with

    try:
        TestPlan.model_validate(data)
    except ValidationError as exc:
        raise FleetError(f"invalid plan {path}:\n" + "\n".join(
            f"  - {p}" for p in describe_errors(exc)), usage=True) from None
    return data


@dataclass
class PushResult:
    """One probe's published config."""

    probe_id: str
    topic: str
    version: int
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        return {"probe_id": self.probe_id, "topic": self.topic, "version": self.version,
                "bytes": self.bytes}


def next_version(retained: Mapping[str, bytes], now: float | None = None) -> int:
    """A version newer than every retained config and at least the current Unix time, so
    versions keep growing even if a retained message was lost or cleared."""
    highest = 0
    for payload in retained.values():
        try:
            highest = max(highest, parse_envelope(payload)[0].version)
        except SigningError:
            continue
    return max(int(now if now is not None else time.time()), highest + 1)


def push_configs(client: NocClient, topics: Topics, probe_ids: Sequence[str],
                 plan: dict[str, Any], key: Ed25519PrivateKey,
                 version: int | None = None) -> list[PushResult]:
    """Sign ``plan`` once per probe (its own ``probe_id`` inside the signature, so an
    envelope cannot be replayed onto another probe) and publish each retained, QoS 1."""
    if version is None:
        retained = client.collect_retained(f"{topics.prefix}/probes/+/config",
                                           quiet_s=0.3)
        version = next_version({t: p for t, p in retained.items()
                                if topics.parse(t)[0] in set(probe_ids)})
    out = []
    for probe_id in probe_ids:
        try:
            env = sign(plan, probe_id=probe_id, version=version, key=key)
        except SigningError as exc:
            raise FleetError(f"cannot sign the plan: {exc}", usage=True) from None
        payload = env.to_json()
        topic = topics.config(probe_id)
        client.publish(topic, payload, retain=True)
        out.append(PushResult(probe_id, topic, version, len(payload)))
    return out


@dataclass
class ShownConfig:
    """A retained config as ``probes config show`` reports it."""

    probe_id: str
    topic: str
    present: bool
    verified: bool | None = None
    error: str | None = None
    envelope: Envelope | None = None

    def as_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        env = self.envelope
        return {
            "probe_id": self.probe_id, "topic": self.topic, "present": self.present,
            "verified": self.verified, "error": self.error,
            "version": env.version if env else None,
            "issued_at": format_time(env.issued_at) if env else None,
            "key_id": env.key_id if env else None,
            "envelope_probe_id": env.probe_id if env else None,
            "plan": env.plan if env else None,
        }


def show_config(payload: bytes | None, probe_id: str, topic: str,
                public_keys: Sequence[Any]) -> ShownConfig:
    """Verify a retained config exactly as the probe would (signature and addressee)."""
    if not payload:
        return ShownConfig(probe_id, topic, present=False)
    try:
        env = verify(payload, public_keys)
    except SigningError as exc:
        shape: Envelope | None
        try:
            shape = parse_envelope(payload)[0]
        except SigningError:
            shape = None
        return ShownConfig(probe_id, topic, True, False, str(exc), shape)
    if env.probe_id not in (probe_id, "*"):
        return ShownConfig(probe_id, topic, True, False,
                           f"wrong_probe: envelope is for {env.probe_id!r}", env)
    return ShownConfig(probe_id, topic, True, True, None, env)
