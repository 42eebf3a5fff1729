"""The collector as operators run it: ``netmon-collector run`` in a subprocess (SIGKILL
mid-stream, SIGHUP reload, fatal credentials), ``check-config`` and ``dead-letters``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.core.deadletters import DeadLetterStore
from collector.core.schema import Site
from devstack import services
from netmon.contract import Topics
from tests.helpers import REPO
from tests.helpers.collector import (
    SITES,
    Publisher,
    count,
    make_result,
    sites_toml,
    wait_count,
    write_config,
)

T = Topics()
DB = "netmon"
CLI = [sys.executable, "-m", "collector.cli"]


class Running:
    """A ``netmon-collector run`` subprocess."""

    def __init__(self, cfg: Path) -> None:
        self.log = cfg.parent / f"collector-{time.monotonic_ns()}.log"
        self.fh = open(self.log, "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen([*CLI, "run", "--config", str(cfg)], stdout=self.fh,
                                     stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text():
                return
            assert self.proc.poll() is None, self.text()
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not in log:\n{self.text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(30)
        self.fh.close()
        return rc


@pytest.fixture
def running() -> Iterator[list[Running]]:
    procs: list[Running] = []
    yield procs
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(10)
        p.fh.close()


def _start(cfg: Path, procs: list[Running]) -> Running:
    r = Running(cfg)
    procs.append(r)
    r.wait_log("MQTT subscribed")
    return r


def test_sigkill_mid_stream_every_message_exactly_once(
        tmp_path: Path, mosquitto: services.Service, influxd: services.Service,
        influx: object, running: list[Running]) -> None:
    cfg = write_config(tmp_path / "c", mosquitto.port, influxd.port, client_id="crash-test")
    n = 6000
    first = _start(cfg, running)
    pub = Publisher(mosquitto.port)

    def stream() -> None:
        for start in range(0, n, 200):  # a steady stream, not one burst
            pub.results(make_result(i, probe_id=SITES[i % 4].probe_id)
                        for i in range(start, start + 200))
            time.sleep(0.02)

    t = threading.Thread(target=stream)
    t.start()
    assert wait_count(influx, DB, n // 5, timeout=60) >= n // 5
    first.proc.send_signal(signal.SIGKILL)  # mid-stream: some written, some in flight
    assert first.proc.wait(10) == -signal.SIGKILL
    at_kill = count(influx, DB)
    t.join(120)
    pub.close()
    assert at_kill < n, "the kill came too late to test anything"
    second = _start(cfg, running)
    assert wait_count(influx, DB, n, timeout=120) == n
    time.sleep(1.0)  # anything redelivered late would show up as an extra point
    assert count(influx, DB) == n
    # every single result id is there
    res = influx.query("SELECT count(distinct(result_id)) FROM results", db=DB)
    assert res["results"][0]["series"][0]["values"][0][1] == n
    assert second.stop() == 0
    assert "stats [crash-test]: received=" in second.text()


def test_sighup_reload_dead_letter_replay_and_list(
        tmp_path: Path, mosquitto: services.Service, influxd: services.Service,
        influx: object, running: list[Running]) -> None:
    cfg = write_config(tmp_path / "c", mosquitto.port, influxd.port, client_id="hup-test")
    newcomer = Site("vu-quang-01", "UBND thị trấn Vũ Quang", "Xã Vũ Quang", "Huyện Vũ Quang",
                    18.35, 105.45, "commune_office", commune_code="18313",
                    legacy_commune_code="18313")
    r = _start(cfg, running)
    pub = Publisher(mosquitto.port)
    pub.results([make_result(1, probe_id=newcomer.probe_id)])
    pub.wait()
    store = DeadLetterStore(cfg.parent / "dead-letters.jsonl")
    deadline = time.monotonic() + 20
    while not store.read() and time.monotonic() < deadline:
        time.sleep(0.1)
    [rec] = store.read()
    assert rec.reason == "unknown_probe" and rec.probe_id == newcomer.probe_id
    # add the site, SIGHUP, and the next result goes straight in
    (cfg.parent / "sites.toml").write_text(sites_toml([*SITES, newcomer]), encoding="utf-8")
    r.proc.send_signal(signal.SIGHUP)
    r.wait_log("site registry reloaded")
    pub.results([make_result(2, probe_id=newcomer.probe_id)])
    pub.close()
    assert wait_count(influx, DB, 1) == 1
    # list, then replay the earlier one
    out = subprocess.run([*CLI, "dead-letters", "list", "--config", str(cfg), "--json"],
                         capture_output=True, text=True, check=True).stdout
    assert [json.loads(x)["reason"] for x in out.splitlines()] == ["unknown_probe"]
    dry = subprocess.run([*CLI, "dead-letters", "replay", "--config", str(cfg), "--json",
                          "--dry-run"], capture_output=True, text=True, check=True).stdout
    assert json.loads(dry)["replayed"] == 1 and len(store.read()) == 1
    rep = subprocess.run([*CLI, "dead-letters", "replay", "--config", str(cfg), "--json",
                          "--reason", "unknown_probe"], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(rep) | {"reasons": {}} == {
        "selected": 1, "replayed": 1, "removed": 1, "still_rejected": 0, "dry_run": False,
        "reasons": {}}
    assert count(influx, DB) == 2 and store.read() == []
    # both tagged from the reference data by the code the registry gave
    res = influx.query("SELECT count(duration_s) FROM results WHERE commune_code = '18313' "
                       "GROUP BY commune, district", db=DB)
    [series] = res["results"][0]["series"]
    assert series["tags"] == {"commune": "Xã Vũ Quang", "district": "Huyện Vũ Quang"}
    assert series["values"][0][1] == 2
    # a broken registry on SIGHUP keeps the old one and the collector running
    (cfg.parent / "sites.toml").write_text("[[site]]\nprobe_id = 3\n", encoding="utf-8")
    r.proc.send_signal(signal.SIGHUP)
    r.wait_log("site registry NOT reloaded")
    assert r.proc.poll() is None
    assert r.stop() == 0


def test_wrong_influx_credentials_are_fatal_and_lose_nothing(
        tmp_path: Path, mosquitto: services.Service, running: list[Running]) -> None:
    try:
        ix = services.start_influxd(tmp_path / "ix-auth", auth=True)
    except services.ServiceError as exc:  # pragma: no cover - influxd missing
        pytest.skip(str(exc))
    try:
        url = f"http://127.0.0.1:{ix.port}"
        data = urllib.parse.urlencode({"q": "CREATE USER admin WITH PASSWORD 'right' WITH ALL "
                                            "PRIVILEGES"}).encode()
        urllib.request.urlopen(f"{url}/query", data=data, timeout=10).read()
        secret = tmp_path / "c" / "influx-password"
        secret.parent.mkdir(parents=True)
        secret.write_text("wrong\n")
        os.chmod(secret, 0o600)
        cfg = write_config(tmp_path / "c", mosquitto.port, ix.port, client_id="auth-test",
                           extra="")
        text = cfg.read_text().replace(
            "timeout_s = 5", 'timeout_s = 5\nusername = "admin"\npassword_file = '
                             f'"{secret}"\ncreate_database = false')
        cfg.write_text(text)
        r = Running(cfg)
        running.append(r)
        r.wait_log("MQTT subscribed")
        pub = Publisher(mosquitto.port)
        pub.results([make_result(5)])
        pub.wait()
        rc = r.proc.wait(30)
        assert rc == 1, r.text()
        assert "no retry can fix" in r.text() and "401" in r.text()
        assert "wrong" not in r.text()  # the secret is never logged
        # fix the password: the unacknowledged message is still on the broker
        secret.write_text("right\n")
        urllib.request.urlopen(f"{url}/query?u=admin&p=right", data=urllib.parse.urlencode(
            {"q": 'CREATE DATABASE "netmon"'}).encode(), timeout=10).read()
        r2 = _start(cfg, running)
        deadline = time.monotonic() + 30
        n = 0
        while time.monotonic() < deadline and n < 1:
            q = urllib.parse.urlencode({"q": "SELECT count(duration_s) FROM results",
                                        "db": DB, "u": "admin", "p": "right"})
            body = json.loads(urllib.request.urlopen(f"{url}/query?{q}", timeout=10).read())
            series = body["results"][0].get("series")
            n = series[0]["values"][0][1] if series else 0
            time.sleep(0.2)
        assert n == 1
        assert r2.stop() == 0
        pub.close()
    finally:
        ix.stop()


def test_check_config(tmp_path: Path) -> None:
    good = write_config(tmp_path / "good", 1883, 8086)
    out = subprocess.run([*CLI, "check-config", "--config", str(good), "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    verdict = json.loads(out.stdout)
    assert (verdict["sites"], verdict["units"]) == (len(SITES), 69)
    # a reference map that cannot be used: exit 2 naming the key, for check-config and run
    bad_units = write_config(tmp_path / "bu", 1883, 8086, units_file=Path("units.csv"))
    (bad_units.parent / "units.csv").write_text("new_code,new_name\n18754,Phường Sông Trí\n",
                                                encoding="utf-8")
    for cmd in ("check-config", "run"):
        out = subprocess.run([*CLI, cmd, "--config", str(bad_units)], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 2 and "registry.units_file: " in out.stderr, out.stderr
        assert "header must start with new_code,new_name,old_code" in out.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[mqtt]\nport = "x"\nbogus = 1\n[writer]\nbatch_size = 0\n'
                   '[registry]\npath = "missing.toml"\n')
    out = subprocess.run([*CLI, "check-config", "--config", str(bad)], capture_output=True,
                         text=True)
    assert out.returncode == 2
    for key in ("mqtt.port", "mqtt.bogus", "writer.batch_size"):
        assert key in out.stderr, out.stderr
    # issue 14's keys: limits out of range, caps in the wrong order
    limits = write_config(tmp_path / "lim", 1883, 8086,
                          extra="max_bytes_per_probe = 9000000\nmax_bytes_total = 8000000\n"
                                "[integrity]\nmax_isps_per_day = 0\nindex_max_age_days = -1\n")
    out = subprocess.run([*CLI, "check-config", "--config", str(limits)], capture_output=True,
                         text=True)
    assert out.returncode == 2
    for key in ("dead_letters", "max_bytes_per_probe must not exceed max_bytes_total",
                "integrity.max_isps_per_day", "integrity.index_max_age_days"):
        assert key in out.stderr, out.stderr
    # an index the collector cannot create: run exits 2 naming the key
    unusable = write_config(tmp_path / "ix", 1883, 8086,
                            extra='[integrity]\nindex_path = "/proc/nope/index.sqlite"\n')
    out = subprocess.run([*CLI, "run", "--config", str(unusable)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "integrity.index_path" in out.stderr, out.stderr
    broken_sites = write_config(tmp_path / "bs", 1883, 8086)
    (broken_sites.parent / "sites.toml").write_text('[[site]]\nprobe_id = "x"\n')
    out = subprocess.run([*CLI, "check-config", "--config", str(broken_sites)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "site[0] (x).probe_id" in out.stderr, out.stderr
    example = REPO / "examples" / "collector.toml"
    out = subprocess.run([*CLI, "check-config", "--config", str(example)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for cmd in (["run"], ["check-config"], ["dead-letters", "list"], ["dead-letters", "replay"]):
        h = subprocess.run([*CLI, *cmd, "--help"], capture_output=True, text=True)
        assert h.returncode == 0 and "--config" in h.stdout
    missing = subprocess.run([*CLI, "run", "--config", str(tmp_path / "nope.toml")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "file not found" in missing.stderr


def test_workers_split_load_through_a_shared_subscription(
        tmp_path: Path, mosquitto: services.Service, influxd: services.Service,
        influx: object, running: list[Running]) -> None:
    cfg = write_config(tmp_path / "c", mosquitto.port, influxd.port, client_id="multi")
    cfg.write_text(cfg.read_text().replace('client_id = "multi"',
                                           'client_id = "multi"\nworkers = 2'))
    r = Running(cfg)
    running.append(r)
    deadline = time.monotonic() + 30
    while r.text().count("MQTT subscribed") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "$share/netmon-collectors/netmon/v1/probes/+/results" in r.text()
    n = 2000
    pub = Publisher(mosquitto.port)
    pub.results(make_result(i, probe_id=SITES[i % 4].probe_id) for i in range(n))
    pub.close()
    assert wait_count(influx, DB, n) == n
    r.proc.send_signal(signal.SIGHUP)  # forwarded to both workers
    deadline = time.monotonic() + 10
    while r.text().count("site registry reloaded") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert r.text().count("site registry reloaded") == 2
    assert r.stop() == 0
    last: dict[str, int] = {}  # the last stats line of each worker
    for x in r.text().splitlines():
        if "stats [" in x:
            last[x.split("stats [")[1].split("]")[0]] = int(x.split("received=")[1].split()[0])
    assert sorted(last) == ["multi", "multi-1"]
    last_two = list(last.values())
    assert all(v > 0 for v in last_two), r.text()  # both took a share
    assert n <= sum(last_two) < n * 1.5
    assert count(influx, DB) == n


def test_the_service_process_freezes_start_up_and_collects_less_often() -> None:
    # In a child interpreter: the policy changes the whole process (benchmarks/ingest:
    # 22 -> 8 us of garbage-collector CPU per result in a backlog drain).
    code = ("import gc, json; import collector.core.service; "
            "from collector.core.gcpolicy import THRESHOLDS, "
            "tune_for_service; before = gc.get_threshold(); tune_for_service(); "
            "print(json.dumps([before, gc.get_threshold(), list(THRESHOLDS), "
            "gc.get_freeze_count()]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True, timeout=120)
    before, after, wanted, frozen = json.loads(out.stdout)
    assert before == [700, 10, 10] and after == wanted and after[0] >= 10_000
    assert frozen > 20_000  # the modules and validators start-up built
