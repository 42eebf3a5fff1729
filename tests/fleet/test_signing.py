"""Signed envelopes, the target allowlist and the remote-config checks, without a broker
(the broker-facing behaviour is in test_fleet_acl.py and test_fleet_agent.py)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from agent.remote_config import (
    Allowlist,
    RemoteConfig,
    RemoteConfigSettings,
    plan_targets,
    plan_validator,
    target_host,
)
from netmon import signing
from netmon.signing import SigningError, canonical_bytes, sign, verify
from tests.helpers.fleet import make_keys, tcp_plan

PROBE = "ht-kyanh-01"


# --------------------------------------------------------------------------- signing


def test_sign_verify_round_trip_survives_reserialisation(tmp_path: Path) -> None:
    _, _, key = make_keys(tmp_path)
    env = sign({"tests": {"a": {"target": "Kỳ Anh"}}}, probe_id=PROBE, version=7, key=key)
    # Key order, whitespace and \u escapes differ; the signed content does not.
    obj = json.loads(env.to_json())
    again = json.dumps(dict(reversed(list(obj.items()))), indent=3, ensure_ascii=True).encode()
    got = verify(again, [key.public_key()])
    assert got.version == 7 and got.plan == {"tests": {"a": {"target": "Kỳ Anh"}}}


@pytest.mark.parametrize("member,value", [
    ("version", 8), ("probe_id", "ht-other-01"), ("issued_at", "2030-01-01T00:00:00.000Z"),
    ("plan", {"tests": {}}),
])
def test_any_change_to_a_signed_member_breaks_the_signature(tmp_path: Path, member: str,
                                                            value: Any) -> None:
    _, _, key = make_keys(tmp_path)
    obj = json.loads(sign({"tests": {"a": {"x": 1}}}, probe_id=PROBE, version=7,
                          key=key).to_json())
    obj[member] = value
    with pytest.raises(SigningError) as exc:
        verify(json.dumps(obj).encode(), [key.public_key()])
    assert exc.value.reason == "bad_signature"


def test_unsigned_unknown_key_and_malformed(tmp_path: Path) -> None:
    _, _, key = make_keys(tmp_path / "a")
    _, _, other = make_keys(tmp_path / "b")
    obj = json.loads(sign({}, probe_id=PROBE, version=1, key=key).to_json())
    unsigned = {k: v for k, v in obj.items() if k != "signature"}
    cases = {
        "unsigned": json.dumps(unsigned).encode(),
        "unknown_key": json.dumps(obj).encode(),
        "malformed": b"{not json",
    }
    for reason, payload in cases.items():
        with pytest.raises(SigningError) as exc:
            verify(payload, [other.public_key()])
        assert exc.value.reason == reason, payload
    # Signed by the other key but claiming ours: the key id is not trust, the signature is.
    forged = dict(obj, signature=base64.b64encode(other.sign(canonical_bytes(unsigned))).decode())
    with pytest.raises(SigningError) as exc:
        verify(json.dumps(forged).encode(), [key.public_key()])
    assert exc.value.reason == "bad_signature"
    for bad in (b"[1]", b'{"signature": "x", "schema": 2}', b'{"a": NaN, "signature": "x"}',
                json.dumps(dict(obj, version="7")).encode(), b"\xff\xfe"):
        with pytest.raises(SigningError) as exc:
            verify(bad, [key.public_key()])
        assert exc.value.reason == "malformed", bad


def test_deeply_nested_config_is_malformed_not_a_crash(tmp_path: Path) -> None:
    _, _, key = make_keys(tmp_path)
    obj = json.loads(sign({}, probe_id=PROBE, version=1, key=key).to_json())
    text = json.dumps(dict(obj, plan={"tests": "PLAN"}))
    payload = text.replace('"PLAN"', "[" * 5000 + "]" * 5000).encode()
    with pytest.raises(SigningError) as exc:
        verify(payload, [key.public_key()])
    assert exc.value.reason == "malformed" and "deep" in exc.value.detail
    nested: list[Any] = []
    for _ in range(5000):
        nested = [nested]
    with pytest.raises(SigningError) as exc:
        canonical_bytes({"plan": nested})
    assert exc.value.reason == "malformed" and "deep" in exc.value.detail


def test_canonical_bytes_refuses_non_finite_numbers() -> None:
    with pytest.raises(SigningError, match="non-finite"):
        canonical_bytes({"a": [1.0, float("nan")]})
    assert canonical_bytes({"b": 1, "a": "ễ"}) == '{"a":"ễ","b":1}'.encode()


def test_keygen_private_key_mode_0600_and_no_silent_overwrite(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        priv, pub, _ = make_keys(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    with pytest.raises(SigningError) as exc:
        signing.write_keypair(priv, pub)
    assert exc.value.reason == "exists"
    priv.chmod(0o644)
    with pytest.raises(SigningError) as exc:
        signing.load_private_key(priv)
    assert exc.value.reason == "key_permissions"
    with pytest.raises(SigningError) as exc:
        signing.load_public_key(priv)  # a private key is not a public key file
    assert exc.value.reason == "bad_key"


# --------------------------------------------------------------------------- allowlist


@pytest.mark.parametrize("target,host", [
    ("speed.vnpt.vn", "speed.vnpt.vn"), ("Speed.VNPT.vn.:5201", "speed.vnpt.vn"),
    ("https://speed.vnpt.vn/file.bin", "speed.vnpt.vn"), ("[2001:db8::1]:443", "2001:db8::1"),
    ("2001:db8::1", "2001:db8::1"), ("10.1.2.3:5201", "10.1.2.3"),
])
def test_target_host(target: str, host: str) -> None:
    assert target_host(target) == host


def test_allowlist_names_wildcards_and_networks() -> None:
    allow = Allowlist(["speed.hatinh.gov.vn", "*.vnpt.vn", "10.20.0.0/16", "2001:db8::/32",
                       "127.0.0.1"])
    for ok in ("speed.hatinh.gov.vn:5201", "a.b.vnpt.vn", "http://10.20.3.4/x",
               "[2001:db8::5]:80", "127.0.0.1:9"):
        assert allow.allows(ok), ok
    for bad in ("vnpt.vn", "evilvnpt.vn", "speed.hatinh.gov.vn.evil.com", "10.21.0.1",
                "2001:db9::1", "127.0.0.2", "", "http:///nohost"):
        assert not allow.allows(bad), bad


def test_allowlist_entries_are_validated() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="allowed_targets"):
        RemoteConfigSettings(allowed_targets=["10.0.0.0/33"])
    with pytest.raises(ValidationError, match="allowed_targets"):
        RemoteConfigSettings(allowed_targets=["bad host"])


def test_plan_targets_follow_the_method_declarations() -> None:
    plan = {"tests": {"a": {"method": "http", "target": "http://x.vn/",
                            "latency_target": "y.vn"},
                      "b": {"method": "reachability", "target": "z.vn:443",
                            "endpoints": ["icmp:w.vn", "v.vn:80"]},
                      "c": {"method": "nope", "target": "ignored.vn"}}}
    assert sorted(plan_targets(plan)) == ["http://x.vn/", "icmp:w.vn", "v.vn:80", "y.vn",
                                          "z.vn:443"]


# --------------------------------------------------------------------------- remote config


class Harness:
    """A RemoteConfig with the agent's real plan model and a record of applied plans."""

    def __init__(self, tmp_path: Path, allowed: list[str] | None = None) -> None:
        _priv, self.pub, self.key = make_keys(tmp_path / "keys")
        self.settings = RemoteConfigSettings(
            public_keys=[self.pub], allowed_targets=allowed or ["127.0.0.1"],
            state_file=Path("remote.json"))
        self.state_dir = tmp_path / "state"
        self.applied: list[tuple[Any, int]] = []
        self.rc = self.make()

    def make(self) -> RemoteConfig[Any]:
        links = {"fibre": object(), "4g": object()}
        return RemoteConfig(PROBE, self.settings, plan_validator(links),  # type: ignore[arg-type]
                            apply=lambda plan, v: self.applied.append((plan, v)),
                            file_targets=["file-target.example:80"], state_dir=self.state_dir)

    def payload(self, plan: dict[str, Any], version: int, probe_id: str = PROBE) -> bytes:
        return sign(plan, probe_id=probe_id, version=version, key=self.key).to_json()


def test_apply_persist_redelivery_and_replay(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    first = h.payload(tcp_plan("127.0.0.1:1"), 5)
    d = h.rc.handle(first)
    assert d.applied and d.version == 5 and h.rc.version == 5 and h.rc.error is None
    assert h.applied[-1][1] == 5 and "rtt" in h.applied[-1][0].tests
    assert (h.state_dir / "remote.json").read_bytes() == first
    assert stat.S_IMODE((h.state_dir / "remote.json").stat().st_mode) == 0o600
    # The broker redelivers the retained message on every reconnect: not an error.
    assert h.rc.handle(first).outcome == "unchanged" and h.rc.error is None
    assert len(h.applied) == 1
    for version in (4, 5):  # older, and same version with other content
        d = h.rc.handle(h.payload(tcp_plan("127.0.0.1:2"), version))
        assert d.outcome == "rejected" and d.reason == "replay"
        assert h.rc.version == 5 and f"config version {version} rejected: replay" in h.rc.error
    assert (h.state_dir / "remote.json").read_bytes() == first
    assert h.rc.handle(h.payload(tcp_plan("127.0.0.1:3"), 6)).applied
    assert h.rc.error is None and h.rc.version == 6


@pytest.mark.parametrize("case,reason", [
    ("unsigned", "unsigned"), ("wrong_key", "unknown_key"), ("tampered", "bad_signature"),
    ("garbage", "malformed"), ("other_probe", "wrong_probe"), ("unknown_method", "invalid_plan"),
    ("unknown_link", "invalid_plan"), ("secret", "invalid_plan"), ("bad_option", "invalid_plan"),
    ("third_party", "target_not_allowed"), ("url_third_party", "target_not_allowed"),
])
def test_each_bad_config_is_refused_and_the_previous_keeps_running(
        tmp_path: Path, case: str, reason: str) -> None:
    h = Harness(tmp_path)
    good = h.payload(tcp_plan("127.0.0.1:1"), 5)
    assert h.rc.handle(good).applied
    _, _, other = make_keys(tmp_path / "other")
    plan = tcp_plan("127.0.0.1:1")
    payloads: dict[str, bytes] = {
        "unsigned": json.dumps({k: v for k, v in json.loads(h.payload(plan, 9)).items()
                                if k != "signature"}).encode(),
        "wrong_key": sign(plan, probe_id=PROBE, version=9, key=other).to_json(),
        "tampered": h.payload(plan, 9).replace(b'"version":9', b'"version":10'),
        "garbage": b'{"schema": 1, "signature": "AAAA", "plan": [',
        "other_probe": h.payload(plan, 9, probe_id="ht-other-01"),
        "unknown_method": h.payload({"tests": {"x": {"method": "nope", "target": "127.0.0.1"}}},
                                    9),
        "unknown_link": h.payload(tcp_plan("127.0.0.1:1", links=["5g"]), 9),
        "secret": h.payload(plan | {"broker": {"password": "x"}}, 9),
        "bad_option": h.payload(tcp_plan("127.0.0.1:1", every_s=-1), 9),
        "third_party": h.payload(tcp_plan("victim.example.com:443"), 9),
        "url_third_party": h.payload(tcp_plan("http://203.0.113.9/", method="http_latency"),
                                     9),
    }
    d = h.rc.handle(payloads[case])
    assert d.outcome == "rejected" and d.reason == reason, d
    assert h.rc.version == 5 and reason in (h.rc.error or "")
    assert len(h.applied) == 1
    assert (h.state_dir / "remote.json").read_bytes() == good


def test_wildcard_envelope_and_file_targets_are_accepted(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    d = h.rc.handle(h.payload(tcp_plan("file-target.example:443"), 3, probe_id="*"))
    assert d.applied, d


def test_restore_after_restart_and_tampered_state(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    payload = h.payload(tcp_plan("127.0.0.1:1"), 12)
    assert h.rc.handle(payload).applied
    fresh = h.make()  # a new process: nothing in memory
    d = fresh.restore()
    assert d.applied and d.version == 12 and fresh.version == 12
    assert d.plan is not None and d.plan.tests["rtt"].options.target == "127.0.0.1:1"
    # Redelivery of the same retained config after restart is recognised.
    assert fresh.handle(payload).outcome == "unchanged"
    assert fresh.handle(h.payload(tcp_plan("127.0.0.1:1"), 11)).reason == "replay"
    # Ansible tightened the allowlist since: the persisted plan no longer runs.
    h.settings = RemoteConfigSettings(public_keys=[h.pub], allowed_targets=["10.0.0.1"],
                                      state_file=Path("remote.json"))
    d = h.make().restore()
    assert d.outcome == "rejected" and d.reason == "target_not_allowed"
    # A flipped bit on the SD card.
    h.settings = RemoteConfigSettings(public_keys=[h.pub], allowed_targets=["127.0.0.1"],
                                      state_file=Path("remote.json"))
    (h.state_dir / "remote.json").write_bytes(payload.replace(b"127.0.0.1:1", b"127.0.0.1:2"))
    again = h.make()
    d = again.restore()
    assert d.outcome == "rejected" and d.reason == "bad_signature" and again.version is None
    assert "persisted config" in (again.error or "")
    assert h.make().restore().outcome == "rejected"
    (h.state_dir / "remote.json").unlink()
    assert h.make().restore().outcome == "ignored"


def test_apply_failure_puts_the_previous_envelope_back(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    good = h.payload(tcp_plan("127.0.0.1:1"), 1)
    assert h.rc.handle(good).applied

    def boom(plan: Any, version: int) -> None:
        raise RuntimeError("scheduler refused")

    h.rc.apply = boom
    d = h.rc.handle(h.payload(tcp_plan("127.0.0.1:2"), 2))
    assert d.reason == "apply_failed" and "scheduler refused" in (h.rc.error or "")
    assert h.rc.version == 1 and (h.state_dir / "remote.json").read_bytes() == good


def test_agent_config_names_bad_remote_config_keys(tmp_path: Path) -> None:
    from agent.config import load
    from netmon.settings import ConfigError

    _, pub, _ = make_keys(tmp_path)
    base: dict[str, Any] = {"probe_id": PROBE, "links": {"fibre": {"access": "fixed",
                                                                     "isp": "VNPT"}},
                            "broker": {"tls": False}}
    cfg = load(None, data=base | {"remote_config": {"public_keys": [str(pub)],
                                                     "allowed_targets": ["10.0.0.0/8"]}})
    assert cfg.remote_config.enabled
    cases = {
        "remote_config.public_keys[0]": {"public_keys": [str(tmp_path / "missing.pub")]},
        "remote_config.public_keys[1]": {"public_keys": [str(pub), str(tmp_path / "noc.key")]},
        "remote_config.allowed_targets": {"allowed_targets": ["not a host"]},
        "remote_config.state_fle": {"state_fle": "x"},
    }
    for key, section in cases.items():
        with pytest.raises(ConfigError) as exc:
            load(None, data=base | {"remote_config": section})
        assert any(p.startswith(key) for p in exc.value.problems), exc.value.problems


def test_openssl_made_keys_work(tmp_path: Path) -> None:
    """deploy/ansible/pki.yml makes the NOC key with openssl; it must sign and verify."""
    import subprocess

    from devstack import services

    try:
        openssl = services.require_binary("openssl")
    except services.ServiceError as exc:
        pytest.skip(str(exc))
    priv, pub = tmp_path / "noc-config.key", tmp_path / "noc-config.pub"
    subprocess.run([openssl, "genpkey", "-algorithm", "ed25519", "-out", str(priv)], check=True)
    subprocess.run([openssl, "pkey", "-in", str(priv), "-pubout", "-out", str(pub)], check=True)
    priv.chmod(0o600)
    env = sign({"tests": {}}, probe_id=PROBE, version=1, key=signing.load_private_key(priv))
    assert verify(env.to_json(), [signing.load_public_key(pub)]).version == 1
