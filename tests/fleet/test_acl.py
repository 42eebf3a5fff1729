"""The broker ACL and the NOC's config commands against a real mosquitto with
per-account passwords (mosquitto_passwd) and the documented acl_file."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector import cli
from devstack import services
from netmon.contract import Topics
from netmon.signing import sign, verify
from tests.helpers.fleet import Client, make_keys, start_acl_broker

USERS = {"noc": "noc-secret", "collector": "coll-secret", "ht-kyanh-01": "p1-secret",
         "ht-huongkhe-02": "p2-secret"}
T = Topics()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[services.Service]:
    try:
        services.require_binary("mosquitto")
        services.require_binary("mosquitto_passwd")
    except services.ServiceError as exc:
        pytest.skip(str(exc))
    svc = start_acl_broker(tmp_path / "broker", USERS)
    yield svc
    svc.stop()


def test_probe_account_cannot_publish_a_config(broker: services.Service, tmp_path: Path) -> None:
    _, _, key = make_keys(tmp_path)
    noc = Client(broker, "noc", USERS["noc"])
    probe = Client(broker, "ht-kyanh-01", USERS["ht-kyanh-01"])
    try:
        noc.subscribe(T.config("+"))
        time.sleep(0.3)
        forged = sign({"tests": {}}, probe_id="ht-kyanh-01", version=99, key=key).to_json()
        for target in ("ht-kyanh-01", "ht-huongkhe-02"):  # its own and another probe's
            rc = probe.publish(T.config(target), forged)
            assert rc.getName() == "Not authorized", (target, rc)
        # The NOC account may; its message reaches the subscriber, the probe's did not.
        assert not noc.publish(T.config("ht-huongkhe-02"), b"from-noc").is_failure
        assert noc.wait(lambda: bool(noc.payloads(T.config("ht-huongkhe-02"))), 5)
        time.sleep(0.3)
        assert noc.payloads(T.config("ht-kyanh-01")) == []
        assert noc.payloads(T.config("ht-huongkhe-02")) == [b"from-noc"]
        # The collector account may not write configs either.
        coll = Client(broker, "collector", USERS["collector"])
        assert coll.publish(T.config("ht-kyanh-01"), forged).getName() == "Not authorized"
        coll.close()
    finally:
        noc.close()
        probe.close()


def test_probe_reads_only_its_own_config(broker: services.Service) -> None:
    noc = Client(broker, "noc", USERS["noc"])
    assert not noc.publish(T.config("ht-kyanh-01"), b"mine").is_failure
    assert not noc.publish(T.config("ht-huongkhe-02"), b"theirs").is_failure
    probe = Client(broker, "ht-kyanh-01", USERS["ht-kyanh-01"])
    try:
        probe.subscribe(T.config("+"))
        assert probe.wait(lambda: bool(probe.payloads(T.config("ht-kyanh-01"))), 5)
        time.sleep(0.5)
        assert probe.payloads(T.config("ht-kyanh-01")) == [b"mine"]
        assert probe.payloads(T.config("ht-huongkhe-02")) == []
        # and may publish its results, which is what it is for
        rc = probe.publish(T.results("ht-kyanh-01"), b"{}", retain=False)
        assert rc.getName() != "Not authorized"
    finally:
        noc.close()
        probe.close()


def test_only_the_collector_writes_receipts_and_each_probe_reads_only_its_own(
        broker: services.Service) -> None:
    """Receipts let a probe forget results: a forged one would lose data. The collector
    account writes them; a probe reads its own and can write none (not even its own)."""
    coll = Client(broker, "collector", USERS["collector"])
    p1 = Client(broker, "ht-kyanh-01", USERS["ht-kyanh-01"])
    p2 = Client(broker, "ht-huongkhe-02", USERS["ht-huongkhe-02"])
    noc = Client(broker, "noc", USERS["noc"])
    try:
        for c in (p1, p2):
            c.subscribe(T.receipts("+"))
        for name, c, probe in (("probe 1", p1, "ht-kyanh-01"), ("probe 2", p2, "ht-kyanh-01"),
                               ("noc", noc, "ht-kyanh-01"), ("probe 1", p1, "ht-huongkhe-02")):
            rc = c.publish(T.receipts(probe), b"forged", retain=False)
            assert rc.getName() == "Not authorized", (name, probe, rc)
        for payload in (b"r", b"end"):
            for probe in ("ht-kyanh-01", "ht-huongkhe-02"):
                assert not coll.publish(T.receipts(probe), payload, retain=False).is_failure
        # "end" comes last on each probe's connection, so once it is here, everything the
        # broker would deliver to that probe before it is here too.
        assert p1.wait(lambda: b"end" in p1.payloads(T.receipts("ht-kyanh-01")), 10)
        assert p2.wait(lambda: b"end" in p2.payloads(T.receipts("ht-huongkhe-02")), 10)
        assert p1.payloads(T.receipts("ht-kyanh-01")) == [b"r", b"end"]
        assert p1.payloads(T.receipts("ht-huongkhe-02")) == []
        assert p2.payloads(T.receipts("ht-huongkhe-02")) == [b"r", b"end"]
        assert p2.payloads(T.receipts("ht-kyanh-01")) == []
    finally:
        for c in (coll, p1, p2, noc):
            c.close()


# --------------------------------------------------------------------------- CLI


def _collector_config(tmp_path: Path, broker: services.Service, user: str) -> Path:
    pw = tmp_path / f"{user}.pw"
    pw.write_text(USERS[user] + "\n")
    pw.chmod(0o600)
    (tmp_path / "sites.toml").write_text("""
[[site]]
probe_id = "ht-kyanh-01"
name = "UBND phường Kỳ Trinh"
commune_code = "18754"
legacy_commune_code = "18820"
latitude = 18.07
longitude = 106.29
site_type = "commune_office"

[[site]]
probe_id = "ht-huongkhe-02"
name = "Trạm y tế Hương Khê"
commune_code = "18496"
latitude = 18.18
longitude = 105.71
site_type = "health_station"
""")
    path = tmp_path / f"collector-{user}.toml"
    path.write_text(f"""
[mqtt]
host = "{broker.host}"
port = {broker.port}
tls = false
username = "{user}"
password_file = "{pw}"
client_id = "noc-test"

[registry]
path = "sites.toml"
""")
    return path


PLAN = """
[tests.rtt-server]
method = "tcp"
target = "127.0.0.1:5201"
every_s = 600

[budgets_mb]
4g = 3000
"""


def test_cli_push_show_all_and_refusals(broker: services.Service, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    priv, pub, key = make_keys(tmp_path / "keys")
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    noc_cfg = _collector_config(tmp_path, broker, "noc")

    rc = cli.main(["probes", "config", "push", "--config", str(noc_cfg), "--probe",
                   "ht-kyanh-01", "--file", str(plan), "--key", str(priv), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out[0]["probe_id"] == "ht-kyanh-01"
    first = out[0]["version"]
    assert first >= int(time.time()) - 60

    # What a probe subscriber receives verifies with the public key and carries the plan.
    probe = Client(broker, "ht-kyanh-01", USERS["ht-kyanh-01"])
    probe.subscribe(T.config("ht-kyanh-01"))
    assert probe.wait(lambda: bool(probe.payloads(T.config("ht-kyanh-01"))), 5)
    env = verify(probe.payloads(T.config("ht-kyanh-01"))[0], [key.public_key()])
    probe.close()
    assert env.probe_id == "ht-kyanh-01" and env.version == first
    assert env.plan["tests"]["rtt-server"]["target"] == "127.0.0.1:5201"
    assert env.plan["budgets_mb"] == {"4g": 3000}

    rc = cli.main(["probes", "config", "show", "--config", str(noc_cfg), "--probe",
                   "ht-kyanh-01", "--public-key", str(pub), "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert rc == 0 and shown["verified"] is True and shown["version"] == first

    # --all: every registry probe, each with its own probe_id signed in, newer version.
    rc = cli.main(["probes", "config", "push", "--config", str(noc_cfg), "--all",
                   "--file", str(plan), "--key", str(priv), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and sorted(r["probe_id"] for r in out) == ["ht-huongkhe-02", "ht-kyanh-01"]
    assert all(r["version"] > first for r in out)

    # show with another key: present but not verified, exit 1
    _, other_pub, _ = make_keys(tmp_path / "other")
    rc = cli.main(["probes", "config", "show", "--config", str(noc_cfg), "--probe",
                   "ht-huongkhe-02", "--public-key", str(other_pub), "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert rc == 1 and shown["verified"] is False and "unknown_key" in shown["error"]
    rc = cli.main(["probes", "config", "show", "--config", str(noc_cfg), "--probe",
                   "ht-nothing-09", "--key", str(priv)])
    assert rc == 1 and "no config retained" in capsys.readouterr().out

    # A probe account pushing: the broker's refusal is an error, exit 1.
    probe_cfg = _collector_config(tmp_path, broker, "ht-kyanh-01")
    rc = cli.main(["probes", "config", "push", "--config", str(probe_cfg), "--probe",
                   "ht-kyanh-01", "--file", str(plan), "--key", str(priv), "--version",
                   str(first + 10**6)])
    err = capsys.readouterr().err
    assert rc == 1 and "Not authorized" in err
    rc = cli.main(["probes", "config", "show", "--config", str(noc_cfg), "--probe",
                   "ht-kyanh-01", "--key", str(priv), "--json"])
    assert json.loads(capsys.readouterr().out)["version"] < first + 10**6

    # Bad input: exit 2 with the key or file named.
    bad_plan = tmp_path / "bad.toml"
    bad_plan.write_text('[tests.x]\nmethod = "tcp"\ntarget = "127.0.0.1:1"\nevery_s = 0\n')
    rc = cli.main(["probes", "config", "push", "--config", str(noc_cfg), "--probe",
                   "ht-kyanh-01", "--file", str(bad_plan), "--key", str(priv)])
    assert rc == 2 and "tests.x.every_s" in capsys.readouterr().err
    priv.chmod(0o644)
    rc = cli.main(["probes", "config", "push", "--config", str(noc_cfg), "--probe",
                   "ht-kyanh-01", "--file", str(plan), "--key", str(priv)])
    assert rc == 2 and "chmod 600" in capsys.readouterr().err
    priv.chmod(0o600)
    rc = cli.main(["probes", "config", "push", "--config", str(noc_cfg), "--probe",
                   "Bad_Id", "--file", str(plan), "--key", str(priv)])
    assert rc == 2 and "Bad_Id" in capsys.readouterr().err


def test_cli_wrong_password_and_unreachable_broker(broker: services.Service, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    _, pub, _ = make_keys(tmp_path / "keys")
    cfg = _collector_config(tmp_path, broker, "noc")
    (tmp_path / "noc.pw").write_text("wrong\n")
    rc = cli.main(["probes", "config", "show", "--config", str(cfg), "--probe",
                   "ht-kyanh-01", "--public-key", str(pub)])
    err = capsys.readouterr().err
    assert rc == 1 and "refused the connection" in err and "wrong" not in err
    broker.stop()
    rc = cli.main(["probes", "config", "show", "--config", str(cfg), "--probe",
                   "ht-kyanh-01", "--public-key", str(pub)])
    assert rc == 1 and "unreachable" in capsys.readouterr().err
