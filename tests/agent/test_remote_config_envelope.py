"""The run time's check of a signed config envelope (:func:`agent.remote_config.
verify_config`: size, JSON and signature in the process, the shape in the validation
child) is held equal to :func:`netmon.signing.verify` (the NOC tools' check, the
:class:`netmon.signing.Envelope` model in the process): on an edge set of envelopes, each
one re-signed so that only its shape decides, both accept the same ones with the same
values and refuse the others with the same reason and the same detail."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from agent.remote_config import SignedConfig, verify_config
from netmon.sigcheck import canonical_bytes, key_id, load_public_key
from netmon.signing import SigningError, verify
from tests.helpers.fleet import make_keys, tcp_plan

_DROP = object()

#: Members changed on a valid envelope (``_DROP`` removes one), then signed again.
SHAPES: list[dict[str, Any]] = [
    {}, {"probe_id": "*"}, {"probe_id": "HT-kyanh"}, {"probe_id": "ab"}, {"probe_id": "**"},
    {"schema": 2}, {"schema": "1"}, {"schema": True}, {"schema": 1.0}, {"schema": _DROP},
    {"version": 0}, {"version": 2**53 - 1}, {"version": 2**53}, {"version": 1.0},
    {"version": "5"}, {"version": True}, {"version": _DROP},
    {"issued_at": "2026-11-28T07:30:00+07:00"}, {"issued_at": "2026-11-28T07:30:00"},
    {"issued_at": "2026-11-28T07:30:00.123456Z"}, {"issued_at": "2026-11-28 07:30:00Z"},
    {"issued_at": 1_700_000_000}, {"issued_at": "1700000000"}, {"issued_at": "hôm qua"},
    {"issued_at": None},
    {"key_id": "ABCDEF0123456789"}, {"key_id": "0123456789abcde"}, {"key_id": "0" * 16},
    {"plan": []}, {"plan": None}, {"plan": {}}, {"plan": _DROP},
    {"note": "ngoài hợp đồng"},
]


def _envelope(key: Any, changes: dict[str, Any]) -> dict[str, Any]:
    obj: dict[str, Any] = {"schema": 1, "probe_id": "ht-kyanh-01", "version": 7,
                           "issued_at": "2026-11-28T07:30:00.000Z",
                           "key_id": key_id(key.public_key()),
                           "plan": tcp_plan("127.0.0.1:1")}
    for name, value in changes.items():
        if value is _DROP:
            obj.pop(name, None)
        else:
            obj[name] = value
    return obj | {"signature": base64.b64encode(key.sign(canonical_bytes(obj))).decode()}


def _cases(key: Any, other: Any) -> list[bytes]:
    good = _envelope(key, {})
    cases = [json.dumps(_envelope(key, c), ensure_ascii=False).encode() for c in SHAPES]
    tampered = good | {"version": 8}
    cases += [json.dumps(obj).encode() for obj in (
        tampered,                                      # bad_signature
        _envelope(other, {}),                          # unknown_key
        good | {"signature": "không phải base64"},     # bad_signature
        good | {"signature": "A" * 201},               # malformed
        good | {"signature": 123},                     # malformed
        good | {"signature": ""}, good | {"signature": 0},
        {k: v for k, v in good.items() if k != "signature"},  # unsigned
        _envelope(key, {"plan": {"x": "y" * 70_000}}),  # too_large
    )]
    cases += [b"{", b"[]", b"\xff{}", b"\xef\xbb\xbf{}", b'{"signature": NaN}', b""]
    return cases


def _outcome(check: Any, payload: bytes, keys: list[Any]) -> tuple[Any, ...]:
    try:
        env = check(payload, keys)
    except SigningError as exc:
        return ("refused", exc.reason, exc.detail)
    fields = ("probe_id", "version", "issued_at", "key_id", "plan", "signature")
    return ("accepted", *(getattr(env, f) for f in fields))


def test_the_run_times_check_accepts_and_refuses_as_verify_does(tmp_path: Path) -> None:
    _, pub, key = make_keys(tmp_path / "keys")
    _, _, other = make_keys(tmp_path / "keys", "other")
    keys = [load_public_key(pub)]
    cases = _cases(key, other)
    mismatches = [(p[:120], ours, theirs) for p in cases
                  if (ours := _outcome(verify_config, p, keys))
                  != (theirs := _outcome(verify, p, keys))]
    assert mismatches == []
    outcomes = [_outcome(verify, p, keys) for p in cases]
    # The set does reach every reason and both sides of the shape.
    assert {o[1] for o in outcomes if o[0] == "refused"} == {
        "malformed", "too_large", "unsigned", "unknown_key", "bad_signature"}
    assert sum(o[0] == "accepted" for o in outcomes) >= 5


def test_an_accepted_envelope_reads_as_the_model_reads_it(tmp_path: Path) -> None:
    _, pub, key = make_keys(tmp_path / "keys")
    payload = json.dumps(_envelope(key, {"issued_at": "2026-11-28T14:30:00.123456+07:00",
                                         "probe_id": "*"})).encode()
    env = verify_config(payload, [load_public_key(pub)])
    assert isinstance(env, SignedConfig)
    model = verify(payload, [load_public_key(pub)])
    assert (env.probe_id, env.version, env.issued_at, env.plan) == (
        "*", 7, model.issued_at, tcp_plan("127.0.0.1:1"))
    assert env.issued_at.isoformat() == "2026-11-28T07:30:00.123000+00:00"
