"""Zero-touch enrollment (issue 18) end to end: a real mosquitto with the generated ACL
and the enrollment listener, real ``netmon-agent run`` processes started blank (no probe
id, no account), and the NOC's ``probes enroll`` commands.

The NOC's broker reload is a real SIGHUP to the test's mosquitto (``kill -HUP``), the
accounts are made by the real ``mosquitto_passwd``.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from collector import cli
from collector.core.registry import load_sites
from devstack import services
from netmon import __version__
from netmon.contract import (
    Credentials,
    EnrollRequest,
    Topics,
    format_time,
    now_utc,
    parse_result,
)
from netmon.enrollment import (
    answer_bytes,
    claim_proof,
    new_claim_code,
    sign_answer,
    x25519_public_b64,
)
from tests.helpers.agent import AgentProcess, Listener
from tests.helpers.fleet import Client, make_keys, start_acl_broker

T = Topics()
USERS = {"noc": "noc-secret-pw", "collector": "coll-secret-pw"}
ENROLL_USER, ENROLL_PW = "netmon_enroll", "enroll-shared-secret"
NOT_AUTHORIZED = "Not authorized"


class BlankProbe(AgentProcess):
    """A freshly imaged probe: agent config without probe id or account, a claim code."""

    def __init__(self, fleet: EnrolFleet, name: str) -> None:
        self.fleet = fleet
        tmp = fleet.tmp / name
        tmp.mkdir()
        self.claim = new_claim_code()
        claim_file = tmp / "claim.txt"
        claim_file.write_text(self.claim + "\n")
        claim_file.chmod(0o600)
        self.state = tmp / "state"
        self.enroll_dir = tmp / "enrollment"
        self.config = tmp / "agent.toml"
        self.config.write_text(f"""
heartbeat_s = 60
state_dir = "{self.state}"

[broker]
host = "127.0.0.1"
port = {fleet.broker.port}
tls = false
reconnect_min_s = 0.2
reconnect_max_s = 1.0

[spool]
path = "{self.state}/spool.db"
receipts = false

[links.fibre]
access = "fixed"
isp = "VNPT"

[tests.rtt]
method = "tcp"
target = "{fleet.target.target}"
every_s = 1
jitter_s = 0
count = 1
timeout_s = 5

[remote_config]
public_keys = ["{fleet.pub}"]
allowed_targets = ["127.0.0.1"]

[enrollment]
claim_file = "{claim_file}"
password_file = "{fleet.enroll_pw}"
port = {fleet.broker.extra["enrollment_port"]}
state_dir = "{self.enroll_dir}"
""")
        super().__init__(self.config, tmp / "agent.log")

    def wait_log(self, needle: str, timeout: float = 60) -> None:
        self.fleet.wait(f"{needle!r} in the agent log", lambda: needle in self.text(),
                        timeout, self)


class EnrolFleet:
    """Broker with the enrollment listener, NOC keys and config, an observer."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.priv, self.pub, self.key = make_keys(tmp / "noc")
        self.target = Listener()
        self.broker = start_acl_broker(tmp / "broker", USERS,
                                       enrollment_users={ENROLL_USER: ENROLL_PW})
        self.enroll_pw = tmp / "enroll.pw"
        self.enroll_pw.write_text(ENROLL_PW + "\n")
        self.enroll_pw.chmod(0o600)
        # A wrapper, named as such, that records each mosquitto_passwd command line and
        # then runs the real mosquitto_passwd: the test checks no password is on it.
        self.passwd_argv = tmp / "mosquitto_passwd.argv"
        self.passwd_wrapper = tmp / "mosquitto_passwd-recording-wrapper"
        self.passwd_wrapper.write_text(
            f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{self.passwd_argv}"\n'
            f'exec "{services.require_binary("mosquitto_passwd")}" "$@"\n')
        self.passwd_wrapper.chmod(0o700)
        noc_pw = tmp / "noc.pw"
        noc_pw.write_text(USERS["noc"] + "\n")
        noc_pw.chmod(0o600)
        self.registry = tmp / "sites.toml"
        self.registry.write_text("""# the NOC's registry (one probe installed by Ansible)
[[site]]
probe_id = "ht-kyanh-01"
name = "UBND phường Sông Trí"
commune_code = "18754"
latitude = 18.07
longitude = 106.29
site_type = "commune_office"
""")
        self.noc_config = tmp / "collector.toml"
        self.noc_config.write_text(f"""
[mqtt]
host = "127.0.0.1"
port = {self.broker.extra["service_port"]}
tls = false
username = "noc"
password_file = "{noc_pw}"
client_id = "netmon_noc-test"

[registry]
path = "sites.toml"

[enrollment]
probes_password_file = "broker/passwd"
accounts_file = "broker/enrolled.passwd"
reload_command = ["kill", "-HUP", "{self.broker.proc.pid}"]
mosquitto_passwd = "{self.passwd_wrapper}"
state_file = "noc/enrollment.json"
""")
        self.watch = Client(self.broker, "collector", USERS["collector"],
                            client_id="netmon_collector-observer",
                            port=int(str(self.broker.extra["service_port"])))
        self.watch.subscribe(T.all_results())
        self.probes: list[BlankProbe] = []

    def probe(self, name: str) -> BlankProbe:
        p = BlankProbe(self, name)
        self.probes.append(p)
        return p

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 60,
             probe: BlankProbe | None = None) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                tail = probe.text()[-3000:] if probe else ""
                raise AssertionError(f"timed out waiting for {what}\n{tail}")
            time.sleep(0.2)

    def cli(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
        rc = cli.main(["probes", "enroll", *argv, "--config", str(self.noc_config)])
        out = capsys.readouterr()
        return rc, out.out, out.err

    def pending(self, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
        rc, out, err = self.cli(capsys, "list", "--json")
        assert rc == 0, err
        rows: list[dict[str, Any]] = json.loads(out)
        return rows

    def wait_request(self, capsys: pytest.CaptureFixture[str], probe: BlankProbe
                     ) -> dict[str, Any]:
        """The probe's request as ``enroll list`` shows it (its id is in the probe's
        request.json)."""
        self.wait("the probe's request file", lambda: (probe.enroll_dir / "request.json")
                  .exists(), 60, probe)
        rid = json.loads((probe.enroll_dir / "request.json").read_text())["request_id"]
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [r for r in self.pending(capsys) if r["request_id"] == rid]
            return bool(found)

        self.wait(f"request {rid} in `probes enroll list`", seen, 60, probe)
        return found[0]

    def approve_args(self, claim: str, probe_id: str) -> list[str]:
        return ["approve", "--claim", claim, "--probe-id", probe_id, "--commune-code",
                "18496", "--name", "Trạm Y tế xã Hương Khê", "--latitude", "18.17",
                "--longitude", "105.71", "--site-type", "health_station",
                "--key", str(self.priv)]

    def results_of(self, probe_id: str) -> list[Any]:
        return [parse_result(p) for p in self.watch.payloads(T.results(probe_id))]

    def close(self) -> None:
        for p in self.probes:
            p.stop()
        self.watch.close()
        self.broker.stop()
        self.target.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[EnrolFleet]:
    try:
        services.require_binary("mosquitto")
        services.require_binary("mosquitto_passwd")
    except services.ServiceError as exc:
        pytest.skip(str(exc))
    f = EnrolFleet(tmp_path)
    yield f
    f.close()


def test_blank_probe_enrols_and_publishes_results_as_itself(
        fleet: EnrolFleet, capsys: pytest.CaptureFixture[str]) -> None:
    f = fleet
    probe = f.probe("blank")
    # The unit's ExecStartPre (check-config) passes for a blank probe's config, and names
    # a missing enrollment file.
    check = [sys.executable, "-m", "agent.cli", "check-config", "--config", str(probe.config)]
    done = subprocess.run(check, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "blank probe" in done.stdout, done.stderr
    claim = probe.config.parent / "claim.txt"
    claim.rename(claim.with_suffix(".away"))
    done = subprocess.run(check, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "enrollment.claim_file" in done.stderr
    claim.with_suffix(".away").rename(claim)
    probe.start()
    row = f.wait_request(capsys, probe)
    assert row["status"] == "pending" and row["agent_version"] == __version__
    assert set(row["hardware"]) == {"board_model", "serial", "macs", "links"}
    key = probe.enroll_dir / "enroll-x25519.key"
    assert key.stat().st_mode & 0o777 == 0o600

    # A wrong claim code finds nothing; a commune code not on the map is refused (exit 2)
    # before anything changes.
    rc, _, err = f.cli(capsys, *f.approve_args(new_claim_code(), "ht-huongkhe-07"))
    assert rc == 1 and "no enrollment request proves this claim code" in err
    bad = f.approve_args(probe.claim, "ht-huongkhe-07")
    bad[bad.index("--commune-code") + 1] = "99999"
    rc, _, err = f.cli(capsys, *bad)
    assert rc == 2 and "commune_code" in err
    rc, _, err = f.cli(capsys, *f.approve_args(probe.claim, "ht-kyanh-01"))
    assert rc == 2 and "already in" in err  # a registered probe id needs --replace
    assert not (f.tmp / "broker" / "enrolled.passwd").exists()

    rc, out, err = f.cli(capsys, *f.approve_args(probe.claim.lower(), "ht-huongkhe-07"),
                         "--json")
    assert rc == 0, err
    assert json.loads(out)["probe_id"] == "ht-huongkhe-07"

    # The probe stores its credentials 0600, reconnects as itself and its results arrive
    # under its own id through the probes' listener (client id = username).
    f.wait("results from ht-huongkhe-07", lambda: len(f.results_of("ht-huongkhe-07")) >= 2,
           60, probe)
    assert all(r.probe_id == "ht-huongkhe-07" for r in f.results_of("ht-huongkhe-07"))
    identity = json.loads((probe.enroll_dir / "identity.json").read_text())
    assert identity["probe_id"] == identity["username"] == "ht-huongkhe-07"
    password = Path(identity["password_file"])
    assert password.stat().st_mode & 0o777 == 0o600
    assert password.read_text().strip() not in probe.text()  # never logged
    # The broker account was made by mosquitto_passwd without the password on its command
    # line (any local user can read /proc/PID/cmdline).
    argv_lines = f.passwd_argv.read_text().splitlines()
    assert argv_lines and all("ht-huongkhe-07" in ln for ln in argv_lines)
    assert not any(password.read_text().strip() in ln for ln in argv_lines)

    # The registry has the site, Vietnamese intact, on the reference map's unit.
    sites = load_sites(f.registry)
    assert sites["ht-huongkhe-07"].name == "Trạm Y tế xã Hương Khê"
    assert sites["ht-huongkhe-07"].commune_code == "18496"
    assert "ht-kyanh-01" in sites
    # The claim code is single-use.
    rc, _, err = f.cli(capsys, *f.approve_args(probe.claim, "ht-huongkhe-08"))
    assert rc == 1 and "claim code already used" in err
    # A restart runs as the enrolled probe without enrolling again.
    probe.stop()
    before = len(f.results_of("ht-huongkhe-07"))
    probe.start()
    f.wait("results after a restart", lambda: len(f.results_of("ht-huongkhe-07")) > before,
           60, probe)
    assert probe.text().count("published (claim proof") == 1


def _request(claim: str, created_ago: timedelta = timedelta(0)) -> tuple[EnrollRequest, Any]:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    key = X25519PrivateKey.generate()
    unsigned: dict[str, Any] = {
        "schema": 1, "request_id": f"enroll-{secrets.token_hex(16)}",
        "public_key": x25519_public_b64(key),
        "created_at": format_time(now_utc() - created_ago), "agent_version": "0.0.1",
        "hardware": {"board_model": "Raspberry Pi 4 Model B Rev 1.5", "serial": "x",
                     "macs": [], "links": []}}
    return EnrollRequest.model_validate(unsigned | {
        "claim_proof": claim_proof(claim, unsigned)}), key


def test_forged_replayed_and_expired_answers_are_refused(
        fleet: EnrolFleet, capsys: pytest.CaptureFixture[str]) -> None:
    """Answers written with the NOC broker account (a stolen password) that the probe must
    refuse; after each the probe is still blank and keeps waiting; the real approval then
    enrols it."""
    f = fleet
    probe = f.probe("blank")
    probe.start()
    row = f.wait_request(capsys, probe)
    rid = row["request_id"]
    own = EnrollRequest.model_validate_json(
        (probe.enroll_dir / "request.json").read_bytes())
    creds = Credentials(probe_id="ht-rogue-01", username="ht-rogue-01",
                        password="p" * 24)
    other, _ = _request(new_claim_code())
    _, _, thief = make_keys(f.tmp / "thief")
    good = json.loads(answer_bytes(sign_answer(own, f.key, decision="approved",
                                               probe_id="ht-rogue-01", credentials=creds)))
    answers = {
        # another probe's genuine approval, replayed onto this probe's answer topic
        "wrong_request": answer_bytes(sign_answer(other, f.key, decision="approved",
                                                  probe_id="ht-rogue-01",
                                                  credentials=creds)),
        "unknown_key": answer_bytes(sign_answer(own, thief, decision="approved",
                                                probe_id="ht-rogue-01", credentials=creds)),
        "bad_signature": json.dumps(good | {"probe_id": "ht-rogue-02"}).encode(),
        "expired": answer_bytes(sign_answer(own, f.key, decision="approved",
                                            probe_id="ht-rogue-01", credentials=creds,
                                            issued_at=now_utc() - timedelta(days=40))),
        "unsigned": json.dumps({k: v for k, v in good.items() if k != "signature"}).encode(),
    }
    noc = Client(f.broker, "noc", USERS["noc"], client_id="netmon_noc-attacker",
                 port=int(str(f.broker.extra["service_port"])))
    try:
        for reason, payload in answers.items():
            assert not noc.publish(T.enroll_answer(rid), payload).is_failure
            probe.wait_log(f"enrollment answer refused: {reason}")
            assert not (probe.enroll_dir / "identity.json").exists(), reason
    finally:
        noc.close()
    state = json.loads((probe.enroll_dir / "enrollment.json").read_text())
    assert state["state"] == "waiting" and "unsigned" in state["error"]
    assert f.results_of("ht-rogue-01") == []

    rc, _, err = f.cli(capsys, *f.approve_args(probe.claim, "ht-huongkhe-07"))
    assert rc == 0, err
    f.wait("results as the approved probe", lambda: bool(f.results_of("ht-huongkhe-07")), 60,
           probe)


def test_rejected_and_expired_requests_are_refused(
        fleet: EnrolFleet, capsys: pytest.CaptureFixture[str]) -> None:
    f = fleet
    # An old request (made by hand with the enrollment account, as a probe would).
    old, _ = _request(claim := new_claim_code(), created_ago=timedelta(days=8))
    enrollee = Client(f.broker, ENROLL_USER, ENROLL_PW, client_id=old.request_id,
                      port=int(str(f.broker.extra["enrollment_port"])))
    try:
        assert not enrollee.publish(T.enroll_request(old.request_id), old.to_json()
                                    ).is_failure
    finally:
        enrollee.close()
    rows = {r["request_id"]: r for r in f.pending(capsys)}
    assert rows[old.request_id]["status"] == "expired"
    rc, _, err = f.cli(capsys, *f.approve_args(claim, "ht-huongkhe-07"))
    assert rc == 1 and "expired" in err

    # A real probe rejected by the NOC: it reads the signed rejection, and the request can
    # no longer be approved.
    probe = f.probe("rejected")
    probe.start()
    f.wait_request(capsys, probe)
    rc, _, err = f.cli(capsys, "reject", "--claim", probe.claim, "--reason",
                       "không có trong kế hoạch lắp đặt", "--key", str(f.priv))
    assert rc == 0, err
    probe.wait_log("rejected by the NOC: không có trong kế hoạch lắp đặt")
    rc, _, err = f.cli(capsys, *f.approve_args(probe.claim, "ht-huongkhe-07"))
    assert rc == 1 and "no enrollment request proves" in err  # the request was cleared
    assert not (probe.enroll_dir / "identity.json").exists()
    assert not (f.tmp / "broker" / "enrolled.passwd").exists()


def test_enrollment_account_can_only_write_its_request_and_read_its_answer(
        fleet: EnrolFleet) -> None:
    f = fleet
    enroll_port = int(str(f.broker.extra["enrollment_port"]))
    mine, theirs = (f"enroll-{secrets.token_hex(16)}" for _ in range(2))
    noc = Client(f.broker, "noc", USERS["noc"], client_id="netmon_noc-t",
                 port=int(str(f.broker.extra["service_port"])))
    e = Client(f.broker, ENROLL_USER, ENROLL_PW, client_id=mine, port=enroll_port)
    # The enrollment account with a probe's id as client id: still not that probe.
    posing = Client(f.broker, ENROLL_USER, ENROLL_PW, client_id="ht-kyanh-01",
                    port=enroll_port)
    try:
        for client, topic in ((e, T.results("ht-kyanh-01")), (e, T.status("ht-kyanh-01")),
                              (e, T.config("ht-kyanh-01")), (e, T.receipts("ht-kyanh-01")),
                              (e, T.enroll_request(theirs)), (e, T.enroll_answer(mine)),
                              (posing, T.results("ht-kyanh-01")),
                              (posing, T.status("ht-kyanh-01"))):
            rc = client.publish(topic, b"{}", retain=False)
            assert rc.getName() == NOT_AUTHORIZED, (topic, rc)
        assert not e.publish(T.enroll_request(mine), b"{}").is_failure

        for topic in ("#", f"{T.prefix}/enroll/+/answer", f"{T.prefix}/enroll/#",
                      T.all_results(), f"{T.prefix}/probes/+/config"):
            e.subscribe(topic)
        assert not noc.publish(T.enroll_answer(theirs), b"theirs").is_failure
        assert not noc.publish(T.config("ht-kyanh-01"), b"cfg").is_failure
        assert not noc.publish(T.enroll_answer(mine), b"mine").is_failure
        e.subscribe(T.enroll_answer(mine))
        assert e.wait(lambda: bool(e.payloads(T.enroll_answer(mine))), 10)
        time.sleep(0.5)
        assert {m.topic for m in e.messages} == {T.enroll_answer(mine)}

        # The shared account logs in nowhere else: not on the probes' listener, not on
        # the service listener.
        for port in (f.broker.port, int(str(f.broker.extra["service_port"]))):
            c = Client(f.broker, ENROLL_USER, ENROLL_PW, client_id="x-enroll", port=port)
            assert c.connect_rc is not None and c.connect_rc.is_failure, port
            c.close()
        # Probe and service accounts do not log in on the enrollment listener.
        c = Client(f.broker, "noc", USERS["noc"], client_id="netmon_noc-x", port=enroll_port)
        assert c.connect_rc is not None and c.connect_rc.is_failure
        c.close()
    finally:
        for c in (noc, e, posing):
            c.close()
