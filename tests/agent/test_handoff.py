"""``netmon-agent run`` validates in a start stage, then replaces itself (``os.execv``,
same PID) with the run time, handing it the validated config on an inherited descriptor
(issue 20: the run time need not load the validation code). Checked on the real command
against a real mosquitto with TLS and a password: the PID systemd knows sends READY=1,
the broker password reaches the run time but no command line or log line, and the
descriptor is closed once read."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from agent import handoff
from tests.helpers import REPO
from tests.helpers.agent import (
    AGENT_ARGV,
    Subscriber,
    agent_config,
    agent_env,
    kill,
    start_agent,
    start_tls_mosquitto,
    tcp_test,
    wait_until,
    write_config,
)

PASSWORD = "s3cret-handoff-pw"


def _ready_from(sock: socket.socket, deadline: float) -> int:
    """The PID (from the kernel's SCM_CREDENTIALS) that sent READY=1 on ``sock``."""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            data, anc, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except TimeoutError:
            break
        if b"READY=1" not in data.split(b"\n"):
            continue
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid: int = struct.unpack("iii", payload[:12])[0]
                return pid
    raise AssertionError("no READY=1 with credentials on the notify socket")


@pytest.mark.parametrize("one_process", [False, True], ids=["exec", "one-process"])
def test_run_hands_the_validated_config_to_the_run_time_under_the_same_pid(
        tmp_path: Path, one_process: bool) -> None:
    broker = start_tls_mosquitto(tmp_path / "broker", {"test-probe-01": PASSWORD,
                                                       "reader": PASSWORD})
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    notify.bind(str(tmp_path / "notify.sock"))
    sub = Subscriber("127.0.0.1", broker.port, "netmon/v1/probes/+/results",
                     ca_file=str(broker.extra["ca"]), username="reader", password=PASSWORD)
    data = agent_config(tmp_path, broker, {"t": tcp_test(broker.port)})
    data["broker"] |= {"tls": True, "ca_file": str(broker.extra["ca"])}
    cfg = write_config(tmp_path, data)
    log = tmp_path / "agent.log"
    # The password from the environment: a secret the start stage must hand over as is
    # (pydantic's JSON dump would mask it).
    env = {"NETMON_BROKER__PASSWORD": PASSWORD, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
           handoff.ONE_PROCESS_ENV: "1" if one_process else ""}
    proc = start_agent(cfg, log, env=env)
    try:
        assert _ready_from(notify, time.monotonic() + 120) == proc.pid
        sub.wait(lambda: len(sub.results()) >= 1, 120, "a result published after the hand-over")
        argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[:-1]
        fds = [os.readlink(p) for p in Path(f"/proc/{proc.pid}/fd").iterdir()
               if p.is_symlink()]
        state = tmp_path / "state" / "agent-state.json"
        wait_until(state.exists, 60, "the state file")
    finally:
        code = kill(proc, signal.SIGTERM, timeout=60)
        sub.close()
        notify.close()
        broker.stop()
    text = log.read_text(errors="replace")
    assert code == 0, text[-3000:]
    assert f'"pid": {proc.pid}' in state.read_text()
    # The run time's command line is the start stage's (what systemd and `status` see)
    # plus the descriptor's number; never the config or a secret.
    assert b"run" in argv and (b"--handoff-fd" in argv) is not one_process, argv
    assert not any(PASSWORD.encode() in a for a in argv)
    assert not any("netmon-agent-config" in fd for fd in fds), fds  # closed once read
    assert PASSWORD not in text
    assert ("netmon-agent" in text and "running as test-probe-01" in text), text[-2000:]


def test_the_handed_over_config_keeps_secrets_and_reads_back_once(tmp_path: Path) -> None:
    from agent import config

    data = agent_config(tmp_path, None, {"t": tcp_test(1)})
    data["broker"]["password"] = PASSWORD
    data["links"]["lo"]["router"] = {"source": "snmp", "host": "192.0.2.1",
                                     "community": "c0mmunity", "if_index": 2}
    cfg = config.load(None, data=data, check_files=False)
    fd = handoff.write_fd(handoff.encode(cfg))
    assert os.get_inheritable(fd)
    back = config.from_handoff(handoff.read_fd(fd))
    assert back == cfg
    assert back.broker.read_password() == PASSWORD
    router = back.links["lo"].router
    assert router is not None and router.community.get_secret_value() == "c0mmunity"
    with pytest.raises(OSError):
        os.fstat(fd)  # closed: nothing the run time starts inherits it


def test_a_descriptor_without_a_handed_over_config_is_refused(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, agent_config(tmp_path, None, {"t": tcp_test(1)}))
    junk = tmp_path / "junk"
    junk.write_text('{"probe_id": "x"}')
    with open(junk, "rb") as fh:
        res = subprocess.run([*AGENT_ARGV, "run", "--config", str(cfg), "--handoff-fd",
                              str(fh.fileno())], pass_fds=(fh.fileno(),),
                             capture_output=True, text=True, timeout=120, cwd=REPO,
                             env=agent_env())
    assert res.returncode == 2, res.stderr
    assert "not a config handed over by `netmon-agent run`" in res.stderr


def test_a_hand_over_of_another_version_is_refused_naming_what_is_missing(
        tmp_path: Path) -> None:
    # The run time builds its plain config without validating again: a start stage of
    # another version (a key it does not know of) must stop it clearly, exit 2.
    from agent import config

    cfg_path = write_config(tmp_path, agent_config(tmp_path, None, {"t": tcp_test(1)}))
    doc = json.loads(handoff.encode(config.load(cfg_path)))
    del doc["config"]["spool"]["receipts"]
    other = tmp_path / "other-version.json"
    other.write_text(json.dumps(doc))
    with open(other, "rb") as fh:
        res = subprocess.run([*AGENT_ARGV, "run", "--config", str(cfg_path), "--handoff-fd",
                              str(fh.fileno())], pass_fds=(fh.fileno(),),
                             capture_output=True, text=True, timeout=120, cwd=REPO,
                             env=agent_env())
    assert res.returncode == 2, res.stderr
    assert "the handed-over config is not this version's" in res.stderr
    assert "receipts" in res.stderr



def test_without_memfd_the_config_goes_in_an_unlinked_private_file(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_memfd(name: str, flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "memfd_create", no_memfd)
    doc = {"format": handoff.FORMAT, "config": {"probe_id": "x"}, "tests": {}}
    fd = handoff.write_fd(json.dumps(doc).encode())
    st = os.fstat(fd)
    assert st.st_mode & 0o777 == 0o600 and st.st_nlink == 0  # no name anywhere
    assert os.get_inheritable(fd)
    assert handoff.read_fd(fd) == doc
