"""The local end-to-end stack (the README's first command).

Everything runs as plain processes under one folder (default ``./.localstack``), on
loopback or inside a network namespace this command creates; no system service is
touched. In order:

1. a measurement server like the Ansible ``netmon_server`` role's (one iperf3 server per
   link, nginx from the role's own template); as root, inside a namespace reached over
   two veth links shaped with ``tc tbf`` ("fibre" and "mobile"), else on 127.0.0.1;
2. mosquitto with per-account passwords and the deployed ACL (a probe may publish only
   as itself);
3. influxd (v1 HTTP API) and the collector (in-process, the real ingest/writer);
4. the agent (``netmon-agent once``, a real subprocess) measuring both links for a few
   rounds: iperf3 and http throughput with loaded latency, icmp latency;
5. a check that every result the agent printed is in InfluxDB, then the monthly bulletin
   for the current month and the Grafana dashboards with provisioning files;
6. a summary table per link against the targets (71 Mb/s mobile, 150 Mb/s fixed).

``--keep`` then leaves everything running (the agent as ``netmon-agent run``) until
Ctrl-C and prints how to reach each part. :func:`run_stack` is the same path as a
function, used by the end-to-end test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from devstack import measurement_server, netns, services
from netmon import __version__
from netmon.errors import NetmonError

PROBE_ID = "demo-ky-anh-01"
#: Service accounts carry "_", which no probe id may, as in the Ansible inventory.
COLLECTOR_USER = "netmon_collector"
DATABASE = "netmon"
TZ = ZoneInfo("Asia/Ho_Chi_Minh")
THROUGHPUT_METHODS = ("iperf3", "http")


@dataclass
class StackOptions:
    """What the stack should do."""

    workdir: Path = Path(".localstack")
    rounds: int = 2
    duration_s: int = 3
    fibre_mbit: float = 200.0
    mobile_mbit: float = 60.0
    use_netns: bool = True
    lang: str = "vi"
    keep: bool = False
    quiet: bool = False


@dataclass
class LinkPlan:
    """One of the agent's links and the server address it measures."""

    name: str
    access: str
    isp: str
    server_ip: str
    interface: str | None
    rate_mbit: float | None
    iperf3_port: int = 5201
    http_port: int = 8080
    #: The server's IPv6 address on this link (a ULA on the namespace's veth; ::1 without
    #: namespaces): the demo's IPv6 readiness target.
    server_ip6: str = "::1"


@dataclass
class StackReport:
    """What a run produced: results as the agent printed them, and the files written."""

    workdir: Path
    results: list[dict[str, Any]] = field(default_factory=list)
    links: list[LinkPlan] = field(default_factory=list)
    endpoints: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    summary: list[dict[str, Any]] = field(default_factory=list)
    collector_config: Path | None = None
    points_in_influx: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly view for ``--json``."""
        return {"workdir": str(self.workdir), "endpoints": self.endpoints, "files": self.files,
                "summary": self.summary, "results": len(self.results),
                "points_in_influx": self.points_in_influx,
                "links": [vars(link) for link in self.links]}


class StackError(NetmonError, RuntimeError):
    """The stack could not run; the message says which step and what to do."""


class _Progress:
    def __init__(self, quiet: bool, total: int) -> None:
        self.quiet, self.total, self.step = quiet, total, 0

    def __call__(self, text: str) -> None:
        self.step += 1
        if not self.quiet:
            print(f"[{self.step}/{self.total}] {text}", file=sys.stderr, flush=True)


def _write_secret(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def _add_password(passwd: Path, user: str, password: str) -> None:
    """Add ``user`` to a mosquitto password file, the password on mosquitto_passwd's
    standard input, not its command line (readable by any local user)."""
    subprocess.run([services.require_binary("mosquitto_passwd"), str(passwd), user],
                   input=f"{password}\n{password}\n".encode(), check=True,
                   capture_output=True)


def _toml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


class Stack:
    """Owns every process and namespace; :meth:`close` stops them in reverse order."""

    def __init__(self, opts: StackOptions) -> None:
        self.opts = opts
        self.dir = opts.workdir.resolve()
        self.services: list[services.Service] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ns: netns.ServerNamespace | None = None
        self.broker_port = 0
        self.service_port = 0
        self.agent_config: Path | None = None
        self.collector: Any = None
        self.report = StackReport(self.dir)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop everything; safe to call twice."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.procs.clear()
        if self.collector is not None:
            with contextlib.suppress(Exception):
                self.collector.stop()
            self.collector = None
        for svc in reversed(self.services):
            svc.stop()
        self.services.clear()
        if self.ns is not None:
            self.ns.destroy()
            self.ns = None
        (self.dir / "stack.pid").unlink(missing_ok=True)

    def _claim_dir(self) -> None:
        pidfile = self.dir / "stack.pid"
        if pidfile.exists():
            with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
                pid = int(pidfile.read_text())
                os.kill(pid, 0)
                raise StackError(f"a stack is already running from {self.dir} (pid {pid}); "
                                 f"stop it with Ctrl-C in its terminal or `kill {pid}`")
        # A fresh run every time: old data would mix into this run's summary and bulletin.
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        pidfile.write_text(str(os.getpid()))

    # ------------------------------------------------------------------ steps

    def start_measurement_server(self) -> None:
        """iperf3 (one server per link: it runs one test at a time) and nginx."""
        opts = self.opts
        reason = netns.can_use_netns() if opts.use_netns else "disabled by --no-netns"
        links: list[LinkPlan] = []
        if reason is None:
            self.ns = netns.ServerNamespace.create()
            for name, access, isp, rate in (("fibre", "fixed", "VNPT", opts.fibre_mbit),
                                            ("mobile", "mobile", "Viettel", opts.mobile_mbit)):
                shaped = self.ns.add_link(rate)
                links.append(LinkPlan(name, access, isp, shaped.server_ip, shaped.host_if, rate,
                                      server_ip6=shaped.server_ip6))
            for link in links:
                log = open(self.dir / f"iperf3-{link.name}.log", "wb")  # noqa: SIM115
                self.ns.spawn(services.iperf3_server_argv(link.iperf3_port, link.server_ip),
                              stdout=log, stderr=subprocess.STDOUT)
                services.wait_for(partial(services.tcp_open, link.server_ip, link.iperf3_port),
                                  10, f"iperf3 for {link.name}")
            nginx = measurement_server.start(
                self.dir / "nginx", host=links[0].server_ip, port=8080, netns=self.ns.name,
                extra_listen=[f"{links[1].server_ip}:8080"], sparse=True)
            self.services.append(nginx)
        else:
            self._note(f"no shaped links ({reason}): both links measure 127.0.0.1, unshaped")
            for name, access, isp in (("fibre", "fixed", "VNPT"),
                                      ("mobile", "mobile", "Viettel")):
                iperf = services.start_iperf3(self.dir / "iperf3")
                self.services.append(iperf)
                links.append(LinkPlan(name, access, isp, "127.0.0.1", None, None,
                                      iperf3_port=iperf.port))
            nginx = measurement_server.start(self.dir / "nginx", sparse=True)
            self.services.append(nginx)
            for link in links:
                link.http_port = nginx.port
        self.report.links = links
        self.report.endpoints["measurement_server"] = ", ".join(
            f"{link.name}: iperf3 {link.server_ip}:{link.iperf3_port}, "
            f"http://{link.server_ip}:{link.http_port}" for link in links)

    def start_broker(self) -> dict[str, str]:
        """mosquitto with passwords and the deployed ACL; returns account passwords."""
        mdir = self.dir / "mosquitto"
        mdir.mkdir()
        accounts = {PROBE_ID: secrets.token_urlsafe(18), COLLECTOR_USER: secrets.token_urlsafe(18)}
        passwd = mdir / "passwd"
        passwd.touch(mode=0o600)
        for user, password in accounts.items():
            _add_password(passwd, user, password)
        from collector.fleet.acl import Listener, mosquitto_acl, mosquitto_listeners

        # As deployed: the probe's listener ties its client id to its account; the
        # collector logs in on the service listener, whose password file has no probe.
        service_passwd = mdir / "services.passwd"
        service_passwd.touch(mode=0o600)
        _add_password(service_passwd, COLLECTOR_USER, accounts[COLLECTOR_USER])
        acl = mdir / "acl"
        acl.write_text(mosquitto_acl(noc_user="netmon_noc", collector_user=COLLECTOR_USER))
        port, service_port = services.free_port(), services.free_port()
        listeners = mosquitto_listeners(
            Listener(port, "127.0.0.1", str(passwd), str(acl), username_as_clientid=True),
            Listener(service_port, "127.0.0.1", str(service_passwd), str(acl)))
        broker = services.start_mosquitto(
            mdir, port, config=services.mosquitto_config(mdir, port, listeners=listeners))
        self.services.append(broker)
        services.wait_for(lambda: services.tcp_open("127.0.0.1", service_port), 15,
                          f"mosquitto service listener on {service_port}", broker.proc,
                          broker.log)
        self.report.endpoints["mqtt"] = (
            f"mqtt://{broker.host}:{broker.port} (probe {PROBE_ID}), "
            f"mqtt://{broker.host}:{service_port} (service listener: {COLLECTOR_USER}; "
            f"passwords in {self.dir}/agent/mqtt-password, {self.dir}/collector/mqtt-password)")
        self.broker_port = broker.port
        self.service_port = service_port
        return accounts

    def start_influx_and_collector(self, collector_password: str) -> None:
        """influxd, the site registry, the collector config, and the collector itself."""
        from collector import config as collector_config
        from collector.core.service import Collector

        influxd = services.start_influxd(self.dir / "influxd")
        self.services.append(influxd)
        cdir = self.dir / "collector"
        cdir.mkdir()
        pw = _write_secret(cdir / "mqtt-password", collector_password + "\n")
        (cdir / "sites.toml").write_text(
            f"[[site]]\nprobe_id = \"{PROBE_ID}\"\nname = \"UBND phường Sông Trí (demo)\"\n"
            # Phường Sông Trí (18754) on the map from 1 July 2025; before it, Phường Kỳ
            # Trinh (18820). Names and old district come from the reference data.
            "commune_code = \"18754\"\nlegacy_commune_code = \"18820\"\n"
            "latitude = 18.0706\nlongitude = 106.2967\nsite_type = \"commune_office\"\n",
            encoding="utf-8")
        cfg_path = cdir / "collector.toml"
        cfg_path.write_text(
            "[mqtt]\n"
            f"host = \"127.0.0.1\"\nport = {self.service_port}\ntls = false\n"
            f"username = \"{COLLECTOR_USER}\"\npassword_file = {_toml_str(str(pw))}\n"
            "client_id = \"netmon_collector-demo\"\n\n"
            "[influxdb]\n"
            f"url = \"http://{influxd.host}:{influxd.port}\"\ndatabase = \"{DATABASE}\"\n\n"
            "[registry]\npath = \"sites.toml\"\n\n"
            "[dead_letters]\npath = \"dead-letters.jsonl\"\n\n"
            f"[bulletin]\nmin_tests = 1\nmin_probe_days = 1\nlanguage = \"{self.opts.lang}\"\n",
            encoding="utf-8")
        self.report.collector_config = cfg_path
        cfg = collector_config.load(cfg_path)
        self.collector = Collector(cfg)
        self.collector.start()
        self.report.endpoints["influxdb"] = f"http://{influxd.host}:{influxd.port} " \
                                            f"(database {DATABASE})"

    def write_agent_config(self, probe_password: str) -> Path:
        """The agent's TOML: two links, each with its own tests against its own server."""
        adir = self.dir / "agent"
        adir.mkdir()
        pw = _write_secret(adir / "mqtt-password", probe_password + "\n")
        d = self.opts.duration_s
        lines = [
            f"probe_id = \"{PROBE_ID}\"", "heartbeat_s = 30", "",
            "[broker]", "host = \"127.0.0.1\"", f"port = {self.broker_port}", "tls = false",
            f"username = \"{PROBE_ID}\"", f"password_file = {_toml_str(str(pw))}", "",
            "[spool]", f"path = {_toml_str(str(adir / 'spool.db'))}", "",
            # The demo runs on whatever clock the machine has; results are flagged if unsynced.
            "[clock]", "policy = \"flag\"", "",
        ]
        for link in self.report.links:
            lines += [f"[links.{link.name}]", f"access = \"{link.access}\"",
                      f"isp = \"{link.isp}\""]
            if link.interface:
                lines.append(f"interface = \"{link.interface}\"")
            lines.append("")
        for link in self.report.links:
            lines += [
                f"[tests.iperf3_{link.name}]", "method = \"iperf3\"", "every_s = 600",
                "jitter_s = 5", f"links = [\"{link.name}\"]",
                f"target = \"{link.server_ip}\"", f"port = {link.iperf3_port}",
                f"duration_s = {d}", "omit_s = 1", "", f"[tests.http_{link.name}]",
                "method = \"http\"", "every_s = 600", "jitter_s = 5",
                f"links = [\"{link.name}\"]",
                f"target = \"http://{link.server_ip}:{link.http_port}\"",
                f"duration_s = {d + 1}", "warmup_s = 1", "",
                f"[tests.icmp_{link.name}]", "method = \"icmp\"", "every_s = 60",
                "jitter_s = 5", f"links = [\"{link.name}\"]", f"target = \"{link.server_ip}\"",
                "count = 10", "interval_s = 0.1", "",
                # IPv6 readiness (plan task 2.3), as deployed: v6 and v4 to the same server.
                f"[tests.ipv6_{link.name}]", "method = \"ipv6\"", "every_s = 600",
                "jitter_s = 5", f"links = [\"{link.name}\"]",
                f"target = \"{link.server_ip6}\"", f"v4_target = \"{link.server_ip}\"",
                "count = 3", "interval_s = 0.1", ""]
        # TSLCD reachability on the fixed link, as deployed; the measurement server's
        # namespace stands in for the government network (ping and nginx's TCP port).
        fibre = next(link for link in self.report.links if link.access == "fixed")
        lines += [
            "[tests.tslcd]", "method = \"reachability\"", "every_s = 600", "jitter_s = 5",
            f"links = [\"{fibre.name}\"]", f"target = \"icmp:{fibre.server_ip}\"",
            f"endpoints = [\"{fibre.server_ip}:{fibre.http_port}\"]", "count = 3",
            "interval_s = 0.1", ""]
        path = adir / "agent.toml"
        path.write_text("\n".join(lines), encoding="utf-8")
        return path

    def run_agent_rounds(self, agent_config: Path) -> None:
        """``netmon-agent once --json`` per round: results are spooled and published."""
        for n in range(1, self.opts.rounds + 1):
            self._note(f"round {n}/{self.opts.rounds}: measuring both links …")
            proc = subprocess.run(
                [sys.executable, "-m", "agent.cli", "once", "--config", str(agent_config),
                 "--json"], capture_output=True, text=True, timeout=600, check=False)
            (self.dir / "agent" / f"round-{n}.log").write_text(proc.stderr)
            if proc.returncode not in (0, 1):
                raise StackError(f"netmon-agent once failed ({proc.returncode}): "
                                 f"{proc.stderr.strip()[-2000:]}")
            got = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
            if not got:
                raise StackError(f"netmon-agent once printed no result: {proc.stderr[-2000:]}")
            for res in got:
                self._note(_one_line(res))
            self.report.results.extend(got)

    def wait_for_points(self, timeout: float = 60.0) -> None:
        """Every result the agent printed must reach InfluxDB through the collector."""
        from collector.core.influx import InfluxClient

        assert self.collector is not None
        want = {r["id"] for r in self.report.results}
        deadline = time.monotonic() + timeout
        with InfluxClient(self.collector.cfg.influxdb) as client:
            while True:
                self.collector.flush()
                [series] = client.query(
                    f"SELECT result_id, duration_s FROM results WHERE probe = '{PROBE_ID}'")
                have = {row["result_id"] for s in series for row in s.rows()}
                if want <= have:
                    self.report.points_in_influx = len(have)
                    # The dashboards' share and status panels read the rollups.
                    self.collector.flush_rollups()
                    return
                if time.monotonic() > deadline:
                    raise StackError(f"{len(want - have)} of {len(want)} results never reached "
                                     f"InfluxDB; see {self.dir}/collector and the broker log")
                time.sleep(0.5)

    def write_bulletin_and_dashboards(self) -> None:
        """The bulletin for this month and Grafana files, through the real commands."""
        assert self.report.collector_config is not None
        month = datetime.now(TZ).strftime("%Y-%m")
        out = self.dir / "bulletin"
        cmd = [sys.executable, "-m", "collector.cli", "bulletin", "--config",
               str(self.report.collector_config), "--month", month, "--out", str(out),
               "--lang", self.opts.lang, "--json"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode != 0:
            raise StackError(f"bulletin failed ({proc.returncode}): {proc.stderr[-2000:]}")
        for ext in ("html", "pdf", "csv"):
            self.report.files[f"bulletin_{ext}"] = str(out / f"bulletin-{month}.{ext}")
        grafana = self.dir / "grafana"
        proc = subprocess.run(
            [sys.executable, "-m", "collector.cli", "dashboards", "build", "--config",
             str(self.report.collector_config), "--out", str(grafana)],
            capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise StackError(f"dashboards build failed ({proc.returncode}): {proc.stderr[-2000:]}")
        self.report.files["grafana"] = str(grafana)

    def summarise(self, targets: dict[str, float]) -> None:
        """Per link: median download/upload of the throughput tests, RTT, loaded RTT."""
        rows = []
        for link in self.report.links:
            mine = [r for r in self.report.results if r["link"] == link.name and not r["error"]]

            def med(key: str, methods: tuple[str, ...], rs: list[dict[str, Any]] = mine
                    ) -> float | None:
                vals = [r["metrics"][key] for r in rs
                        if r["method"] in methods and key in r["metrics"]]
                return statistics.median(vals) if vals else None

            down = med("download_mbps", THROUGHPUT_METHODS)
            target = targets[link.access]
            rows.append({
                "link": link.name, "access": link.access, "isp": link.isp,
                "shaped_mbit": link.rate_mbit, "download_mbps": down,
                "upload_mbps": med("upload_mbps", THROUGHPUT_METHODS),
                "rtt_ms": med("rtt_ms", ("icmp",)),
                "loaded_rtt_ms": med("loaded_rtt_ms", THROUGHPUT_METHODS),
                "target_mbps": target,
                "meets_target": down is not None and down >= target,
                "failed_tests": sum(1 for r in self.report.results
                                    if r["link"] == link.name and r["error"]),
            })
        self.report.summary = rows

    def _note(self, text: str) -> None:
        if not self.opts.quiet:
            print(f"      {text}", file=sys.stderr, flush=True)


def _one_line(res: dict[str, Any]) -> str:
    m = res.get("metrics", {})
    if res.get("error"):
        return f"{res['link']:7} {res['method']:7} FAILED {res['error']['code']}: " \
               f"{res['error']['message'][:80]}"
    parts = [f"{k.removesuffix('_mbps')} {m[k]:.1f} Mb/s" for k in ("download_mbps",
                                                                     "upload_mbps") if k in m]
    parts += [f"{k.removesuffix('_ms')} {m[k]:.2f} ms" for k in ("rtt_ms", "loaded_rtt_ms")
              if k in m]
    return f"{res['link']:7} {res['method']:7} " + ", ".join(parts)


def _fmt(v: float | None, unit: str = "") -> str:
    return "—" if v is None else f"{v:.1f}{unit}"


def format_summary(rows: list[dict[str, Any]]) -> str:
    """The table printed at the end."""
    head = f"{'link':8} {'access':7} {'shaped':>8} {'download':>10} {'upload':>9} " \
           f"{'RTT':>8} {'loaded RTT':>11} {'target':>8}  verdict"
    out = [head, "-" * len(head)]
    for r in rows:
        verdict = "meets target" if r["meets_target"] else "BELOW target"
        shaped = f"{r['shaped_mbit']:g} Mb" if r["shaped_mbit"] else "none"
        out.append(f"{r['link']:8} {r['access']:7} {shaped:>8} "
                   f"{_fmt(r['download_mbps']):>10} {_fmt(r['upload_mbps']):>9} "
                   f"{_fmt(r['rtt_ms']):>8} {_fmt(r['loaded_rtt_ms']):>11} "
                   f"{r['target_mbps']:>8g}  {verdict}")
    out.append("speeds in Mb/s (median of the iperf3 and http tests), RTT in ms")
    return "\n".join(out)


@contextlib.contextmanager
def open_stack(opts: StackOptions) -> Iterator[Stack]:
    """Run the whole path; the stack stays up inside the ``with`` block."""
    from collector.config import Targets

    stack = Stack(opts)
    progress = _Progress(opts.quiet, 6)
    try:
        stack._claim_dir()
        progress("measurement server (iperf3 + nginx)")
        stack.start_measurement_server()
        progress("mosquitto (per-account passwords, ACL)")
        accounts = stack.start_broker()
        progress("influxd and the collector")
        stack.start_influx_and_collector(accounts[COLLECTOR_USER])
        progress(f"agent: {opts.rounds} round(s) of tests on two links")
        stack.agent_config = stack.write_agent_config(accounts[PROBE_ID])
        stack.run_agent_rounds(stack.agent_config)
        progress("collector -> InfluxDB: checking every result arrived")
        stack.wait_for_points()
        progress("bulletin for this month and Grafana dashboards")
        stack.write_bulletin_and_dashboards()
        t = Targets()
        stack.summarise({"fixed": t.fixed_mbps, "mobile": t.mobile_mbps})
        yield stack
    finally:
        stack.close()


def run_stack(opts: StackOptions) -> StackReport:
    """Bring the stack up, run it once, tear it down, and return what it produced."""
    with open_stack(opts) as stack:
        return stack.report


def main(argv: list[str] | None = None) -> int:
    """Command line; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="scripts/demo",
        description="Run the whole hatinh-netmon system on this machine: measurement server, "
                    "broker, InfluxDB, collector, an agent with two links, the bulletin and "
                    "the dashboards. Loopback and namespaces only; run as root for shaped links.")
    parser.add_argument("--dir", type=Path, default=Path(".localstack"),
                        help="folder for every service's files (default ./.localstack; "
                             "wiped at start)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of tests (default 2)")
    parser.add_argument("--duration", type=int, default=3,
                        help="seconds per throughput direction (default 3)")
    parser.add_argument("--fibre-mbit", type=float, default=200.0,
                        help="shaped rate of the fibre link (default 200)")
    parser.add_argument("--mobile-mbit", type=float, default=60.0,
                        help="shaped rate of the mobile link (default 60)")
    parser.add_argument("--no-netns", action="store_true",
                        help="measure 127.0.0.1 instead of shaped namespace links")
    parser.add_argument("--lang", choices=("vi", "en"), default="vi", help="bulletin language")
    parser.add_argument("--keep", action="store_true",
                        help="leave everything running (agent on its schedule) until Ctrl-C")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--version", action="version", version=__version__)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration < 1:
        parser.error("--rounds and --duration must be at least 1")
    opts = StackOptions(workdir=args.dir, rounds=args.rounds, duration_s=args.duration,
                        fibre_mbit=args.fibre_mbit, mobile_mbit=args.mobile_mbit,
                        use_netns=not args.no_netns, lang=args.lang, keep=args.keep)
    # Ctrl-C and SIGTERM both end in the same clean teardown (a shell may have started us
    # with SIGINT ignored, so set it explicitly).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        with open_stack(opts) as stack:
            report = stack.report
            if args.json:
                print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
            else:
                print(format_summary(report.summary))
                print()
                for name, path in report.files.items():
                    print(f"{name:14} {path}")
            if args.keep:
                log = open(stack.dir / "agent" / "run.log", "ab")  # noqa: SIM115
                stack.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "agent.cli", "run", "--config",
                     str(stack.agent_config)],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
                print("\nrunning until Ctrl-C:", file=sys.stderr)
                for name, value in report.endpoints.items():
                    print(f"  {name:18} {value}", file=sys.stderr)
                print(f"  {'agent':18} netmon-agent run (log {stack.dir}/agent/run.log)\n"
                      f"  {'collector':18} in this process; config "
                      f"{report.collector_config}\n"
                      f"  {'grafana':18} point a Grafana at {report.files['grafana']} "
                      f"(docs/dashboards.md)", file=sys.stderr)
                while all(s.running for s in stack.services):
                    time.sleep(1)
                print("a service stopped; shutting down", file=sys.stderr)
                return 1
        return 0
    except (StackError, services.ServiceError, netns.NetnsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
