"""Dashboard JSON and provisioning: committed == generated, Grafana's model, our own
structural rules, thresholds == configured targets, i18n, and the CLI (build, check,
push to a FAKE Grafana HTTP server, since no Grafana can run here)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from collector.cli import main as collector_main
from collector.config import Targets
from collector.dashboards import checks, files
from collector.dashboards.build import DATASOURCE_UID, BuildConfig, build_all
from collector.dashboards.i18n import TEXTS
from collector.dashboards.provisioning import alert_rules, render_provisioning

CFG = BuildConfig.from_config()
NAMES = ("overview", "where", "quality", "probes")


def _committed() -> dict[str, dict[str, Any]]:
    return {f"{lang}/{name}": json.loads((files.ROOT / "json" / lang / f"{name}.json")
                                         .read_text(encoding="utf-8"))
            for lang in ("vi", "en") for name in NAMES}


def test_committed_files_equal_generated() -> None:
    stale = files.stale(CFG)
    assert not stale, f"run `netmon-collector dashboards build`; stale: {stale}"


def test_check_fails_on_a_changed_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    assert collector_main(["dashboards", "build", "--out", str(tmp_path)]) == 0
    assert collector_main(["dashboards", "check", "--dir", str(tmp_path)]) == 0
    target = tmp_path / "json" / "vi" / "overview.json"
    target.write_text(target.read_text().replace("71", "70"))
    capsys.readouterr()
    assert collector_main(["dashboards", "check", "--dir", str(tmp_path), "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == {"stale": ["json/vi/overview.json"],
                                                   "problems": []}


@pytest.mark.parametrize("argv", [["dashboards", "--help"], ["dashboards", "build", "--help"],
                                  ["dashboards", "check", "--help"],
                                  ["dashboards", "push", "--help"]])
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        collector_main(argv)
    assert exc.value.code == 0 and "usage" in capsys.readouterr().out


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert collector_main(["dashboards"]) == 2
    with pytest.raises(SystemExit) as exc:
        collector_main(["dashboards", "push", "--token-file", "x"])  # no --grafana-url
    assert exc.value.code == 2


def test_bad_config_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text("[targets]\nmobile_mbps = -3\n")
    assert collector_main(["dashboards", "build", "--config", str(bad), "--out",
                           str(tmp_path)]) == 2
    assert "mobile_mbps" in capsys.readouterr().err


@pytest.mark.parametrize("key", list(_committed()))
def test_grafana_model_and_structure(key: str) -> None:
    dash = _committed()[key]
    assert checks.model_problems(dash) == []
    assert checks.structural_problems(dash, {DATASOURCE_UID}) == []


def test_structural_checks_catch_mistakes() -> None:
    dash = _committed()["vi/overview"]
    broken = json.loads(json.dumps(dash))
    broken["panels"][2]["id"] = broken["panels"][1]["id"]
    broken["panels"][3]["gridPos"]["x"] = 20
    broken["panels"][4]["targets"].append(dict(broken["panels"][4]["targets"][0]))
    broken["panels"][5]["datasource"]["uid"] = "other"
    problems = " | ".join(checks.structural_problems(broken, {DATASOURCE_UID}))
    for needle in ("ids not unique", "outside the 24-column grid", "refIds", "not provisioned"):
        assert needle in problems
    broken["panels"][1]["options"]["bogusOption"] = 1
    assert any("bogusOption" in p for p in checks.model_problems(broken))


def test_datasource_uids_match_provisioning() -> None:
    prov = render_provisioning(CFG)
    for variant in ("influxdb-1x", "influxdb-token"):
        doc = yaml.safe_load(prov[f"provisioning/datasources/{variant}.yaml"])
        (ds,) = doc["datasources"]
        assert ds["uid"] == DATASOURCE_UID and ds["jsonData"]["version"] == "InfluxQL"
        assert "secureJsonData" in ds and "$__" in json.dumps(ds["secureJsonData"])
    rules = yaml.safe_load(prov["provisioning/alerting/netmon-rules.yaml"])
    for rule in rules["groups"][0]["rules"]:
        assert rule["data"][0]["datasourceUid"] == DATASOURCE_UID


@pytest.mark.parametrize("targets", [Targets(), Targets(mobile_mbps=80, fixed_mbps=200,
                                                        fixed_2030_mbps=2000)])
def test_thresholds_equal_configured_targets(targets: Targets) -> None:
    cfg = BuildConfig(targets=targets)
    allowed = checks.allowed_speed_steps(cfg)
    seen: set[float] = set()
    for lang in ("vi", "en"):
        for dash in build_all(cfg, lang).values():
            for title, sets in checks.speed_thresholds(dash.to_json()).items():
                for steps in sets:
                    assert set(steps) <= allowed, (title, steps)
                    seen |= set(steps)
            for panel in dash.data_panels():
                if panel.key.startswith(("overview.median_", "overview.peak_")) \
                        and not panel.key.endswith("upload"):
                    access = panel.key.rsplit("_", 1)[1]
                    assert panel.thresholds and panel.thresholds.values()[0] == \
                        cfg.target(access)
                if panel.key.startswith("overview.share_"):
                    # Shares read the hourly rollups' counts at the collector's configured
                    # targets (the same [targets]; tests/collector/test_rollups.py).
                    met = "met_2030" if panel.key.endswith("2030") else "met"
                    assert f'sum("{met}") / sum("tests")' in panel.targets[0].query
    assert seen == allowed
    rules = {r["uid"]: r for r in alert_rules(cfg)["groups"][0]["rules"]}
    for access in ("mobile", "fixed"):
        evaluator = rules[f"netmon-commune-below-{access}"]["data"][2]["model"]["conditions"][0]
        assert evaluator["evaluator"]["params"] == [cfg.target(access)]


def test_vietnamese_by_default_english_from_same_code() -> None:
    vi, en = build_all(CFG, "vi"), build_all(CFG, "en")
    for name in NAMES:
        assert vi[name].title != en[name].title and vi[name].uid != en[name].uid
        assert [p.key for p in vi[name].data_panels()] == [p.key for p in en[name].data_panels()]
        assert [p.targets for p in vi[name].data_panels()] == \
            [p.targets for p in en[name].data_panels()]
    assert vi["overview"].title.startswith("Tổng quan")
    assert "71" in vi["overview"].description and "150" in en["overview"].description
    for vi_text, en_text in TEXTS.values():
        assert vi_text and en_text
        assert not any(ch in en_text for ch in "ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệ")


# --------------------------------------------------------------------------- push


class FakeGrafana(BaseHTTPRequestHandler):
    """FAKE Grafana HTTP API (just the endpoints push uses), recording requests."""

    requests: ClassVar[list[tuple[str, str, Any, str]]] = []
    existing: ClassVar[set[str]] = set()

    def _reply(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        FakeGrafana.requests.append((self.command, self.path, body,
                                     self.headers.get("Authorization", "")))
        return body

    def do_GET(self) -> None:
        self._record()
        if self.path in FakeGrafana.existing:
            self._reply(200, {"uid": self.path.rsplit("/", 1)[1]})
        else:
            self._reply(404, {"message": "not found"})

    def do_POST(self) -> None:
        body = self._record()
        if self.path == "/api/dashboards/db" and not body["dashboard"].get("panels"):
            self._reply(400, {"message": "bad dashboard"})
            return
        self._reply(200, {"status": "success", "id": 1})

    def do_PUT(self) -> None:
        self._record()
        self._reply(200, {"message": "updated"})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_grafana() -> Iterator[str]:
    """A FAKE Grafana API on a free loopback port."""
    FakeGrafana.requests = []
    FakeGrafana.existing = set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGrafana)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_push_to_fake_grafana(fake_grafana: str, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "token"
    token.write_text("glsa_secret_token\n")
    token.chmod(0o600)
    influx_token = tmp_path / "influx-token"
    influx_token.write_text("influx-secret\n")
    cfg = tmp_path / "collector.toml"
    cfg.write_text(f'[influxdb]\nurl = "http://127.0.0.1:8086"\ntoken_file = "{influx_token}"\n')
    FakeGrafana.existing = {"/api/folders/netmon-vi"}
    rc = collector_main(["dashboards", "push", "--grafana-url", fake_grafana, "--token-file",
                         str(token), "--config", str(cfg), "--json",
                         "--datasource-url", "http://influx.noc.invalid:8086"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    summary = json.loads(out.out)
    assert summary["datasource"] == "created"
    assert sorted(summary["dashboards"]) == sorted(
        d.uid for lang in ("vi", "en") for d in build_all(CFG, lang).values())
    reqs = FakeGrafana.requests
    assert all(auth == "Bearer glsa_secret_token" for *_x, auth in reqs)
    (ds_post,) = [b for m, p, b, _a in reqs if m == "POST" and p == "/api/datasources"]
    assert ds_post["uid"] == DATASOURCE_UID and ds_post["jsonData"]["version"] == "InfluxQL"
    assert ds_post["secureJsonData"] == {"httpHeaderValue1": "Token influx-secret"}
    assert ds_post["url"] == "http://influx.noc.invalid:8086"
    folders = [b for m, p, b, _a in reqs if p == "/api/folders" and m == "POST"]
    assert folders == [{"title": "Hà Tĩnh netmon (English)", "uid": "netmon-en"}]
    dashes = [b for m, p, b, _a in reqs if p == "/api/dashboards/db"]
    assert len(dashes) == 8 and all(b["overwrite"] for b in dashes)
    assert {b["folderUid"] for b in dashes} == {"netmon-vi", "netmon-en"}
    assert "secret" not in out.out + out.err


def test_push_errors(fake_grafana: str, tmp_path: Path,
                     capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "token"
    assert collector_main(["dashboards", "push", "--grafana-url", fake_grafana,
                           "--token-file", str(token)]) == 2
    assert "--token-file" in capsys.readouterr().err
    token.write_text("t0k\n")
    assert collector_main(["dashboards", "push", "--grafana-url", "ftp://x",
                           "--token-file", str(token)]) == 2
    # Nothing listens on the fake's port once we pick a closed one: runtime failure = 1.
    from devstack.services import free_port

    rc = collector_main(["dashboards", "push", "--grafana-url",
                         f"http://127.0.0.1:{free_port()}", "--token-file", str(token),
                         "--timeout", "2"])
    assert rc == 1
    assert "t0k" not in capsys.readouterr().err
