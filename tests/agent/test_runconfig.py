"""The run time's plain config (:mod:`agent.runconfig`) carries the same fields with the
same values as the pydantic models it mirrors, for the shipped example and for a config
that sets every section (both router sources, a modem, remote config, updates,
enrollment, a test of every declared method), built through the real hand-over
(:mod:`agent.handoff`). A field added to a model and not to its dataclass, or a value
that does not survive the JSON, fails here. What the run time calls on the config
(plan, budgets, state path, broker login, router secrets, jitter) answers the same."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from agent import config, handoff, runconfig
from netmon.methods import DECLARATIONS
from tests.helpers import REPO
from tests.helpers.agent import agent_config, make_tls

#: A valid test of each declared method (its own options at their defaults otherwise).
EVERY_METHOD: dict[str, dict[str, Any]] = {
    "iperf3": {"target": "192.0.2.10", "direction": "download"},
    "speedtest": {"target": "speedtest.net"},
    "http": {"target": "http://192.0.2.10/"},
    "responsiveness": {"target": "http://192.0.2.10/"},
    "icmp": {"target": "192.0.2.1"},
    "tcp": {"target": "192.0.2.1:443"},
    "dns": {"target": "192.0.2.53", "name": "hatinh.example"},
    "http_latency": {"target": "http://192.0.2.10/"},
    "ipv6": {"target": "ipv6.example"},
    "reachability": {"target": "192.0.2.20:443",
                     "endpoints": ["192.0.2.20:443", "tslcd.example:80"]},
}


def _every_section(tmp_path: Path) -> dict[str, Any]:
    files = {name: tmp_path / name for name in ("pw", "auth", "priv", "noc.pub")}
    for path in files.values():
        path.write_text("x" * 12 + "\n")
    files["ca.pem"] = make_tls(tmp_path / "tls")["ca"]
    data = agent_config(tmp_path, None, {
        f"t-{name.replace('_', '-')}": {"method": name, "every_s": 600 + i, **options}
        for i, (name, options) in enumerate(EVERY_METHOD.items())})
    data["tests"]["t-iperf3"] |= {"links": ["lo", "wwan"], "jitter_s": 30.0,
                                  "expected_mb": 40.0, "defer_when_busy_mbps": 5.0}
    data["state_dir"] = str(tmp_path / "st")
    data["broker"] |= {"tls": True, "ca_file": str(files["ca.pem"]), "username": "u1",
                       "password": "env-secret", "client_id": "c1", "max_inflight": 7}
    data["links"]["lo"]["router"] = {
        "source": "snmp", "host": "192.0.2.1", "version": "3", "user": "ops",
        "auth_key_file": str(files["auth"]), "priv_key_file": str(files["priv"]),
        "if_name": "wan0", "priv_protocol": "aes256"}
    data["links"]["wwan"] = {
        "access": "mobile", "isp": "Viettel", "interface": "wwan0", "budget_mb": 2000.0,
        "budget_reserve_pct": 7.5, "modem": {"modem": "0", "timeout_s": 3.0},
        "router": {"source": "upnp", "url": "http://192.168.1.1:5000/rootDesc.xml",
                   "community": "not-used"}}
    data["clock"] = {"policy": "hold", "not_before": "2026-01-01"}
    data["schedule"] = {"timezone": "Asia/Bangkok", "peak_start": "18:30",
                        "peak_end": "22:45:10"}
    data["remote_config"] = {"public_keys": [str(files["noc.pub"])],
                             "allowed_targets": ["*.example", "192.0.2.0/24"]}
    data["update"] = {"root": str(tmp_path / "releases"), "link": "lo", "max_starts": 4}
    data["enrollment"] = {"claim_file": str(tmp_path / "claim"),
                          "password_file": str(files["pw"]), "port": 8886}
    return data


def _same(model: Any, plain: Any, where: str) -> None:
    if isinstance(model, BaseModel):
        names = set(type(model).model_fields)
        have = {f.name for f in dataclasses.fields(plain)}
        if isinstance(plain, runconfig.Spec):
            have -= {"kind", "options"}
        assert have == names, f"{where}: fields {sorted(have ^ names)} differ"
        for name in names:
            _same(getattr(model, name), getattr(plain, name), f"{where}.{name}")
    elif isinstance(model, dict):
        assert set(model) == set(plain), where
        for key in model:
            _same(model[key], plain[key], f"{where}.{key}")
    elif isinstance(model, SecretStr):
        assert isinstance(plain, runconfig.Secret), where
        assert plain.get_secret_value() == model.get_secret_value(), where
    elif isinstance(model, (list, tuple)):
        assert isinstance(plain, (list, tuple)) and len(plain) == len(model), where
        for i, (a, b) in enumerate(zip(model, plain, strict=True)):
            _same(a, b, f"{where}[{i}]")
    else:
        assert type(plain) is type(model) and plain == model, \
            f"{where}: {plain!r} ({type(plain).__name__}) != {model!r}"


def _both(cfg_path: Path | None, data: dict[str, Any] | None
          ) -> tuple[config.AgentConfig, runconfig.RunConfig]:
    cfg = config.load(cfg_path, data=data, check_files=False)
    doc = handoff.read_fd(handoff.write_fd(handoff.encode(cfg)))
    return cfg, runconfig.from_handoff(json.loads(json.dumps(doc)))


@pytest.mark.parametrize("which", ["example", "every-section"])
def test_the_run_time_config_equals_the_validated_models(tmp_path: Path, which: str) -> None:
    if which == "example":
        cfg, run = _both(REPO / "examples" / "agent.toml", None)
    else:
        cfg, run = _both(None, _every_section(tmp_path))
        assert {spec.method for spec in cfg.tests.values()} == set(DECLARATIONS)
    _same(cfg, run, "config")
    for name, spec in cfg.tests.items():
        rspec = run.tests[name]
        assert rspec.kind == spec.kind, name
        assert rspec.jitter == spec.jitter and rspec.links_on(["a"]) == spec.links_on(["a"])
        model = spec.options
        names = set(type(model).model_fields)
        assert {f.name for f in dataclasses.fields(rspec.options)} == names, name
        for option in names:
            _same_option(getattr(model, option), getattr(rspec.options, option),
                         f"tests.{name}.{option}")
    plan, rplan = cfg.plan(), run.plan()
    assert rplan.budgets_mb == plan.budgets_mb
    for link in [*cfg.links, "nope"]:
        assert rplan.budget_bytes(link) == plan.budget_bytes(link)
    assert rplan.problems(["lo"]) == plan.problems(["lo"])
    assert run.state_path == cfg.state_path
    assert run.remote_config.enabled == cfg.remote_config.enabled
    assert run.broker.reconnect_policy() == cfg.broker.reconnect_policy()


def _same_option(model: Any, plain: Any, where: str) -> None:
    # Options reach the methods as the JSON the models dump (a tuple as a list): the
    # values must be equal as JSON.
    assert handoff.plain(model) == plain, f"{where}: {plain!r} != {model!r}"


def test_the_run_time_config_logs_in_and_reads_router_secrets_like_the_models(
        tmp_path: Path) -> None:
    cfg, run = _both(None, _every_section(tmp_path))
    assert run.broker.credentials("p") == cfg.broker.credentials("p") == ("u1", "env-secret")
    ctx, model_ctx = run.broker.tls_context(), cfg.broker.tls_context()
    assert ctx is not None and model_ctx is not None
    assert ctx.check_hostname and ctx.minimum_version == model_ctx.minimum_version
    assert ctx.get_ca_certs() == model_ctx.get_ca_certs() != []
    router, model = run.links["lo"].router, cfg.links["lo"].router
    assert router is not None and model is not None
    assert router.read_usm_keys() == model.read_usm_keys() == ("x" * 12, "x" * 12)
    upnp, upnp_model = run.links["wwan"].router, cfg.links["wwan"].router
    assert upnp is not None and upnp_model is not None
    assert upnp.read_community() == upnp_model.read_community() == "not-used"
    assert "not-used" not in repr(run) and "env-secret" not in repr(run)
