"""Signed agent updates with rollback (issue 18), end to end: real wheels of this project
with bumped versions built offline in the test (``pip wheel --no-deps
--no-build-isolation``), served over HTTP on loopback (http.server), a real mosquitto with
the fleet ACL, real agent processes supervised by a stand-in for systemd
(:class:`tests.helpers.supervisor.FakeSystemd`: PID 1 here is not systemd), and the NOC's
``probes update`` commands.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from collector import cli
from devstack import services
from netmon import __version__
from netmon.contract import ReleaseManifest, Topics, now_utc, parse_result, parse_status
from netmon.release import bucket, sign_manifest, targets
from tests.helpers.agent import Listener
from tests.helpers.fleet import Client, make_keys, start_acl_broker
from tests.helpers.supervisor import FakeSystemd

ROOT = Path(__file__).resolve().parents[2]
T = Topics()
A, B = "ht-capnhat-01", "ht-capnhat-02"
USERS = {"noc": "noc-secret-pw", "collector": "coll-secret-pw", A: "probe-a-secret",
         B: "probe-b-secret"}
GOOD, BAD, FAILING = "0.1.1", "0.1.2", "0.1.3"


def _build(tmp: Path, version: str, patch: Callable[[Path], None] | None = None) -> Path:
    """A real wheel of this project at ``version`` (optionally patched), built offline."""
    src = tmp / f"src-{version}"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "json")
    for name in ("netmon", "agent", "collector"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    init = src / "netmon" / "__init__.py"
    init.write_text(init.read_text().replace(f'"{__version__}"', f'"{version}"'))
    if patch is not None:
        patch(src)
    out = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "-w", str(out), str(src)],
                   check=True, capture_output=True, timeout=600)
    return next(out.glob(f"hatinh_netmon-{version}-*.whl"))


def _measures_nothing(src: Path) -> None:
    # A broken release: it starts and connects but never stores a result.
    path = src / "agent" / "runtime.py"
    text = path.read_text()
    marker = "        results = list(results)\n        if not results:\n            return\n"
    assert marker in text
    path.write_text(text.replace(marker, "        return\n"))


def _measurements_fail(src: Path) -> None:
    # A broken release: it starts, connects and publishes, but every test fails.
    path = src / "agent" / "runtime.py"
    text = path.read_text()
    marker = "        try:\n            results = await asyncio.wait_for(plugin.run("
    assert marker in text
    path.write_text(text.replace(marker, "        try:\n            raise RuntimeError("
                                         "'this release cannot measure')\n"
                                         "            results = await asyncio.wait_for("
                                         "plugin.run("))


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("wheels")
    return {GOOD: _build(tmp, GOOD), BAD: _build(tmp, BAD, _measures_nothing),
            FAILING: _build(tmp, FAILING, _measurements_fail)}


class WebSite:
    """The measurement server's HTTP site, serving a folder on loopback (http.server).
    ``wheel_requests`` lists the wheels asked for; while ``gate`` is clear, a wheel request
    waits (a slow download the test controls)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.wheel_requests: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        handler = functools.partial(_QuietHandler, directory=str(folder), site=self)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args: Any, site: WebSite, **kwargs: Any) -> None:
        self.site = site
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        if self.path.endswith(".whl"):
            self.site.wheel_requests.append(self.path)
            self.site.gate.wait(300)
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Probe:
    """An installed probe: config, update root, agent under the systemd stand-in."""

    def __init__(self, fleet: UpdateFleet, probe_id: str, budget_mb: float | None = None,
                 update_extra: str = "") -> None:
        self.probe_id = probe_id
        tmp = fleet.tmp / probe_id
        tmp.mkdir()
        pw = tmp / "mqtt-password"
        pw.write_text(USERS[probe_id])
        pw.chmod(0o600)
        self.root = tmp / "releases"
        budget = f"budget_mb = {budget_mb}\n" if budget_mb is not None else ""
        self.config = tmp / "agent.toml"
        self.config.write_text(f"""
probe_id = "{probe_id}"
heartbeat_s = 5
state_dir = "{tmp}/state"

[broker]
host = "127.0.0.1"
port = {fleet.broker.port}
tls = false
password_file = "{pw}"
reconnect_min_s = 0.2
reconnect_max_s = 1.0

[spool]
path = "{tmp}/state/spool.db"
receipts = false

[links.fibre]
access = "fixed"
isp = "VNPT"
{budget}
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

[update]
root = "{self.root}"
{update_extra}
""")
        subprocess.run([sys.executable, "-m", "agent.cli", "update-init", "--root",
                        str(self.root)], check=True, capture_output=True, cwd=tmp,
                       timeout=300)
        self.log = tmp / "agent.log"
        self.systemd = FakeSystemd(
            [str(self.root / "stable" / "bin" / "python"), "-m", "agent.cli", "update-guard",
             "--root", str(self.root)],
            [str(self.root / "current" / "bin" / "python"), "-m", "agent.cli", "run",
             "--config", str(self.config)], self.log, cwd=tmp)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.root / "update-state.json").read_text())
        return data

    def link(self, name: str) -> str:
        return os.readlink(self.root / name)


class UpdateFleet:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.priv, self.pub, self.key = make_keys(tmp / "noc")
        self.target = Listener()
        self.broker = start_acl_broker(tmp / "broker", USERS)
        self.site_dir = tmp / "www"
        (self.site_dir / "wheels").mkdir(parents=True)
        self.site = WebSite(self.site_dir)
        noc_pw = tmp / "noc.pw"
        noc_pw.write_text(USERS["noc"])
        noc_pw.chmod(0o600)
        self.noc_config = tmp / "collector.toml"
        self.noc_config.write_text(f"""
[mqtt]
host = "127.0.0.1"
port = {self.broker.extra["service_port"]}
tls = false
username = "noc"
password_file = "{noc_pw}"
client_id = "netmon_noc-test"
""")
        self.watch = self._watcher()
        self.probes: list[Probe] = []

    def _watcher(self) -> Client:
        watch = Client(self.broker, "collector", USERS["collector"],
                       client_id="netmon_collector-observer",
                       port=int(str(self.broker.extra["service_port"])))
        watch.subscribe(T.all_status())
        watch.subscribe(T.all_results())
        return watch

    def broker_down(self) -> None:
        """Stop the broker (the observer goes with it)."""
        self.watch.close()
        self.broker.stop()

    def broker_up(self) -> None:
        """Start the broker again on the same ports, with a fresh observer."""
        self.broker = start_acl_broker(self.tmp / "broker", USERS, port=self.broker.port,
                                       service_port=int(str(self.broker.extra["service_port"])))
        self.watch = self._watcher()

    def probe(self, probe_id: str, budget_mb: float | None = None, update_extra: str = ""
              ) -> Probe:
        p = Probe(self, probe_id, budget_mb, update_extra)
        self.probes.append(p)
        p.systemd.start()
        return p

    def publish_wheel(self, wheel: Path) -> Path:
        dest = self.site_dir / "wheels" / wheel.name
        shutil.copy(wheel, dest)
        return dest

    def statuses(self, probe_id: str) -> list[Any]:
        return [parse_status(p) for p in self.watch.payloads(T.status(probe_id)) if p]

    def results(self, probe_id: str) -> list[Any]:
        return [parse_result(p) for p in self.watch.payloads(T.results(probe_id))]

    def wait_status(self, probe: Probe, check: Callable[[Any], bool], what: str,
                    timeout: float = 120) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            found = [s for s in self.statuses(probe.probe_id)
                     if s.state == "online" and check(s)]
            if found:
                return found[-1]
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{probe.text()[-4000:]}")
            time.sleep(0.3)

    def push(self, capsys: pytest.CaptureFixture[str], version: str, wheel: Path,
             *extra: str) -> dict[str, Any]:
        rc = cli.main(["probes", "update", "push", "--config", str(self.noc_config),
                       "--version", version, "--wheel", str(wheel), "--base-url",
                       self.site.url + "wheels/", "--key", str(self.priv), "--json", *extra])
        out = capsys.readouterr()
        assert rc == 0, out.err
        pushed: dict[str, Any] = json.loads(out.out)
        return pushed

    def close(self) -> None:
        for p in self.probes:
            p.systemd.stop()
        self.watch.close()
        self.broker.stop()
        self.site.close()
        self.target.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[UpdateFleet]:
    try:
        services.require_binary("mosquitto")
        services.require_binary("mosquitto_passwd")
    except services.ServiceError as exc:
        pytest.skip(str(exc))
    f = UpdateFleet(tmp_path)
    yield f
    f.close()


def test_staged_rollout_reaches_only_the_chosen_probe_which_installs_and_reports(
        fleet: UpdateFleet, wheels: dict[str, Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    f = fleet
    a, b = f.probe(A, budget_mb=1000), f.probe(B)
    for p in (a, b):
        f.wait_status(p, lambda s: s.agent_version == __version__ and s.update is not None,
                      f"{p.probe_id} online at {__version__}")
    wheel = f.publish_wheel(wheels[GOOD])
    pushed = f.push(capsys, GOOD, wheel, "--probe", A, "--health-timeout", "120")
    assert pushed["probes"] == [A]

    st = f.wait_status(a, lambda s: s.agent_version == GOOD and s.update.trial is None
                       and "updated to" in (s.update.last_event or ""),
                       f"{A} running {GOOD} after its health check")
    assert st.update.failed == {}
    assert a.link("current") == a.link("stable") == f"versions/{GOOD}"
    # Its results now come from the new version, and the download counted on its link.
    f.wait_status(a, lambda s: s.links[0].data_used_bytes >= wheel.stat().st_size,
                  "the download counted against the fibre link's month")
    deadline = time.monotonic() + 60
    while not any(r.agent_version == GOOD for r in f.results(A)):
        assert time.monotonic() < deadline, a.text()[-3000:]
        time.sleep(0.3)
    # The agent exited with the restart status once (after switching), never crashed.
    assert a.systemd.exits == [75]

    # B was not chosen: it read the manifest, said so, and still runs the old version.
    f.wait_status(b, lambda s: "not for this probe" in (s.update.last_event or ""),
                  f"{B} skipping the release")
    assert f.statuses(B)[-1].agent_version == __version__
    assert b.link("current") == f"versions/{__version__}"
    assert not (b.root / "versions" / GOOD).exists() and b.systemd.exits == []

    rc = cli.main(["probes", "update", "status", "--config", str(f.noc_config), "--json"])
    rows = {r["probe_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rc == 0 and rows[A]["running"] == GOOD and rows[B]["running"] == __version__


def test_a_failing_health_check_rolls_back_by_itself(
        fleet: UpdateFleet, wheels: dict[str, Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    f = fleet
    a = f.probe(A)
    f.wait_status(a, lambda s: s.agent_version == __version__, f"{A} online")
    wheel = f.publish_wheel(wheels[BAD])
    f.push(capsys, BAD, wheel, "--probe", A, "--health-timeout", "10")
    f.wait_status(a, lambda s: s.agent_version == BAD, f"{A} trying {BAD}")
    st = f.wait_status(a, lambda s: s.agent_version == __version__ and BAD in s.update.failed,
                       f"{A} back on {__version__} reporting {BAD} failed", timeout=180)
    assert "health check not passed within 10 s" in st.update.failed[BAD]
    assert f"no result measured by {BAD} acknowledged by the broker" in st.update.failed[BAD]
    assert f"rolled back from {BAD}" in (st.update.last_event or "")
    assert a.link("current") == a.link("stable") == f"versions/{__version__}"
    # The broken version's manifest stays retained: the probe does not try it again.
    n = len(a.systemd.exits)
    time.sleep(3)
    assert len(a.systemd.exits) == n and a.state()["trial"] is None


def _spooled(probe: Probe, version: str) -> int:
    """Results measured by ``version`` waiting in the probe's spool file (read-only)."""
    db = probe.root.parent / "state" / "spool.db"
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            rows = con.execute("SELECT payload FROM spool").fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return 0
    return sum(1 for (payload,) in rows if json.loads(payload)["agent_version"] == version)


def _wait(check: Callable[[], bool], what: str, probe: Probe, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{probe.text()[-4000:]}")
        time.sleep(0.3)


def test_only_successful_results_of_the_new_version_prove_its_health(
        fleet: UpdateFleet, wheels: dict[str, Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    """The new version drains at start the results the old one left in the spool, and
    its own tests all fail: every one of those results is acknowledged, yet none was a
    success measured by the new version, so it is rolled back."""
    f = fleet
    a = f.probe(A)
    f.wait_status(a, lambda s: s.agent_version == __version__, f"{A} online")
    wheel = f.publish_wheel(wheels[FAILING])
    f.site.gate.clear()  # the download hangs until the old version has spooled results
    f.push(capsys, FAILING, wheel, "--probe", A, "--health-timeout", "60")
    _wait(lambda: bool(f.site.wheel_requests), f"{A} downloading {FAILING}", a)
    f.broker_down()
    down_at = now_utc()
    _wait(lambda: _spooled(a, __version__) >= 3, f"results of {__version__} spooled", a)
    f.site.gate.set()
    _wait(lambda: a.link("current") == f"versions/{FAILING}", f"{A} switched", a, 300)
    f.broker_up()

    st = f.wait_status(a, lambda s: s.agent_version == __version__
                       and FAILING in s.update.failed,
                       f"{A} back on {__version__} reporting {FAILING} failed", timeout=300)
    why = st.update.failed[FAILING]
    assert "health check not passed within 60 s" in why
    assert f"only failed results measured by {FAILING} acknowledged by the broker" in why
    assert a.link("current") == a.link("stable") == f"versions/{__version__}"
    # What the check had to see through: the new version published the old one's results
    # (measured while the broker was away) before its own, and its own were all failures.
    results = f.results(A)
    first_new = next(i for i, r in enumerate(results) if r.agent_version == FAILING)
    assert any(r.agent_version == __version__ and r.started_at >= down_at
               for r in results[:first_new])
    assert all(r.error is not None for r in results if r.agent_version == FAILING)


def test_a_release_refused_for_the_data_budget_is_retried_by_itself(
        fleet: UpdateFleet, wheels: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Refused for the metered link's budget, the release waits (``pending``) and is
    checked again on a timer, without downloading; once the NOC raises the budget it is
    installed with no reconnect (which used to be the only retry)."""
    f = fleet
    a = f.probe(A, budget_mb=0.01, update_extra="budget_retry_s = 2")
    f.wait_status(a, lambda s: s.agent_version == __version__, f"{A} online")
    wheel = f.publish_wheel(wheels[GOOD])
    f.push(capsys, GOOD, wheel, "--probe", A, "--health-timeout", "120")
    st = f.wait_status(a, lambda s: "not installed: budget" in (s.update.last_event or "")
                       and s.update.pending == GOOD, f"{GOOD} refused for the budget")
    assert st.update.failed == {}
    _wait(lambda: a.text().count(f"release {GOOD} checked again") >= 2,
          "the release checked again by itself", a)
    assert f.site.wheel_requests == [] and a.systemd.exits == []

    plan = tmp_path / "plan.toml"
    plan.write_text(f"""
[tests.rtt]
method = "tcp"
target = "{f.target.target}"
every_s = 1
jitter_s = 0
count = 1
timeout_s = 5

[budgets_mb]
fibre = 1000
""")
    rc = cli.main(["probes", "config", "push", "--config", str(f.noc_config), "--probe", A,
                   "--file", str(plan), "--key", str(f.priv), "--json"])
    assert rc == 0, capsys.readouterr().err
    f.wait_status(a, lambda s: s.agent_version == GOOD and s.update.trial is None
                  and "updated to" in (s.update.last_event or ""),
                  f"{A} running {GOOD} after the budget was raised", timeout=240)
    assert f"release {GOOD} now fits the fibre link's data budget" in a.text()
    assert len(f.site.wheel_requests) == 1
    assert a.systemd.exits == [75]


def test_a_tampered_manifest_or_wheel_is_refused(
        fleet: UpdateFleet, wheels: dict[str, Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    f = fleet
    a = f.probe(A)
    f.wait_status(a, lambda s: s.agent_version == __version__, f"{A} online")
    wheel = f.publish_wheel(wheels[GOOD])
    size = wheel.stat().st_size
    import hashlib

    ref = {"name": wheel.name, "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
           "size": size}
    signed = json.loads(sign_manifest(serial=int(time.time()), version=GOOD,
                                      base_url=f.site.url + "wheels/", wheels=[ref],
                                      key=f.key, probes=[A]))
    # 1. A manifest changed after signing (another base URL) is refused by its signature.
    noc = Client(f.broker, "noc", USERS["noc"], client_id="netmon_noc-thief",
                 port=int(str(f.broker.extra["service_port"])))
    try:
        forged = json.dumps(signed | {"base_url": "http://127.0.0.1:9/evil/"}).encode()
        assert not noc.publish(T.updates(), forged).is_failure
    finally:
        noc.close()
    f.wait_status(a, lambda s: "manifest refused: bad_signature" in
                  (s.update.last_event or ""), "the forged manifest refused")
    # 2. A genuine manifest whose wheel was changed on the web server: same name and
    #    size, other bytes. Refused by its SHA-256; nothing installed; reported.
    data = bytearray(wheel.read_bytes())
    data[-100] ^= 0xFF
    wheel.write_bytes(bytes(data))
    f.push(capsys, GOOD, wheels[GOOD], "--probe", A)
    st = f.wait_status(a, lambda s: GOOD in s.update.failed, f"{GOOD} refused")
    assert st.update.failed[GOOD].startswith("hash_mismatch")
    assert not (a.root / "versions" / GOOD).exists()
    assert a.link("current") == f"versions/{__version__}" and a.systemd.exits == []
    assert list((a.root / "downloads").rglob("*.whl")) == []


def test_staged_percentages_are_stable_and_cumulative() -> None:
    """The rollout percentage picks probes by a hash of version and probe id: the probes
    chosen at 10% are still chosen at 50%, and about the stated share is chosen."""
    ids = [f"ht-probe-{i:03d}" for i in range(400)]

    def manifest(percent: int) -> ReleaseManifest:
        return ReleaseManifest.model_validate({
            "schema": 1, "serial": 1, "version": "0.2.0", "issued_at": "2026-12-01T00:00:00Z",
            "base_url": "http://x/", "wheels": [{"name": "a.whl", "sha256": "0" * 64,
                                                 "size": 1}],
            "percent": percent, "key_id": "0" * 16, "signature": "x"})

    chosen = {p: {i for i in ids if targets(manifest(p), i)} for p in (0, 10, 50, 100)}
    assert chosen[0] == set() and chosen[100] == set(ids)
    assert chosen[10] <= chosen[50]
    assert 20 <= len(chosen[10]) <= 60 and 160 <= len(chosen[50]) <= 240
    assert all((bucket("0.2.0", i) < 10) == (i in chosen[10]) for i in ids)


def test_update_init_keeps_a_pushed_update_and_adopts_a_newly_installed_base(
        tmp_path: Path) -> None:
    """``update-init`` runs before every start from the base environment: restarts keep a
    pushed update, but a different version installed in the base (an Ansible upgrade)
    moves ``current`` and ``stable`` to it. Real thin virtual environments."""
    from agent.update import Layout, init, make_env

    root = tmp_path / "releases"
    first = init(root, "0.1.0")
    assert first == {"current": "0.1.0", "stable": "0.1.0", "adopted": None}
    layout = Layout(root)
    # A pushed update that passed its health check (what Updater does on success).
    make_env(layout.version_dir("0.1.1"), layout.read()["base"])
    layout.switch(layout.current, "0.1.1")
    layout.switch(layout.stable, "0.1.1")
    assert init(root, "0.1.0") == {"current": "0.1.1", "stable": "0.1.1", "adopted": None}

    upgraded = init(root, "0.2.0")
    assert upgraded == {"current": "0.2.0", "stable": "0.2.0", "adopted": "0.2.0"}
    python = root / "current" / "bin" / "python"
    done = subprocess.run([str(python), "-c", "import agent.update"], capture_output=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    state = layout.read()
    assert "adopted 0.2.0" in state["last_event"] and state["base_version"] == "0.2.0"
    # The next start with the same base changes nothing.
    assert init(root, "0.2.0")["adopted"] is None


def test_the_budget_retry_comes_hourly_and_at_the_start_of_the_budget_month(
        tmp_path: Path) -> None:
    """The wait for the data budget checks again every ``budget_retry_s``, or just after
    the budget month starts when that comes first (its usage starts from zero)."""
    from agent.update import Updater, UpdateSettings

    month_left = [10 * 86400.0]

    def updater(retry_s: float) -> Updater:
        return Updater(UpdateSettings(root=tmp_path, budget_retry_s=retry_s), A, [], "4g",
                       count=lambda link, n: None, budget_left=lambda link: 0.0,
                       healthy=lambda: (False, ""), restart=lambda: None,
                       month_left_s=lambda: month_left[0])

    assert updater(3600)._retry_delay() == 3600
    month_left[0] = 120.0
    assert updater(3600)._retry_delay() == 125.0
    assert updater(60)._retry_delay() == 60
