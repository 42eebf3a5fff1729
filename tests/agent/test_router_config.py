"""The ``[links.<name>.router]`` table: every bad key named by check-config (exit 2), and
the router libraries never loaded by an agent that has no such table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers.agent import REPO, agent_config, cli, tcp_test, write_config


def with_router(tmp_path: Path, router: dict[str, Any]) -> Path:
    data = agent_config(tmp_path, None, {"lat": tcp_test(443)})
    data["links"]["lo"]["router"] = router
    return write_config(tmp_path, data, f"agent-{len(list(tmp_path.iterdir()))}.toml")


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return cli("check-config", "--config", str(path), "--json")


def test_valid_router_tables_pass(tmp_path: Path) -> None:
    secret = tmp_path / "community"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    auth, priv = tmp_path / "auth.key", tmp_path / "priv.key"
    for path, text in ((auth, "auth-passphrase"), (priv, "priv-passphrase")):
        path.write_text(text + "\n")
        path.chmod(0o600)
    for table in ({"source": "snmp", "host": "192.168.1.1", "if_name": "ppp0",
                   "community_file": str(secret)},
                  {"source": "snmp", "host": "192.168.1.1", "if_index": 2},
                  {"source": "upnp", "url": "http://192.168.1.1:5000/rootDesc.xml"},
                  {"source": "snmp", "version": 3, "host": "192.168.1.1", "if_index": 2,
                   "user": "netmon", "auth_key_file": str(auth), "priv_key_file": str(priv),
                   "auth_protocol": "sha512", "priv_protocol": "aes256"}):
        res = check(with_router(tmp_path, table))
        assert res.returncode == 0, (table, res.stdout, res.stderr)
        assert "s3cret" not in res.stdout + res.stderr
        assert "passphrase" not in res.stdout + res.stderr


def test_bad_router_tables_exit_2_naming_the_key(tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_text("seven77\n")
    short.chmod(0o600)
    v3 = {"source": "snmp", "version": "3", "host": "r", "if_index": 1, "user": "u",
          "auth_key_file": str(short), "priv_key_file": str(short)}
    cases = [
        ({"source": "snmp", "if_index": 2}, "links.lo.router.host", "required"),
        ({k: v for k, v in v3.items() if k != "user"}, "links.lo.router.user",
         'required when version = "3"'),
        ({k: v for k, v in v3.items() if k != "priv_key_file"},
         "links.lo.router.priv_key_file", 'required when version = "3"'),
        (v3, "links.lo.router.auth_key_file", "8 characters"),
        (v3 | {"version": 1}, "links.lo.router.version", "2c"),
        ({"source": "snmp", "host": "r", "if_index": 1, "user": "u"},
         "links.lo.router.user", 'only for version = "3"'),
        ({"source": "upnp", "url": "http://r/d.xml", "priv_key_file": str(short)},
         "links.lo.router.priv_key_file", 'only for source = "snmp"'),
        ({"source": "snmp", "host": "10.0.0.1"}, "links.lo.router.if_index",
         "exactly one of if_index or if_name"),
        ({"source": "upnp"}, "links.lo.router.url", "required"),
        ({"source": "upnp", "url": "http://r/d.xml", "if_index": 3},
         "links.lo.router.if_index", 'only for source = "snmp"'),
        ({"source": "upnp", "url": "ftp://r/d.xml"}, "links.lo.router.url", "http"),
        ({"source": "netflow"}, "links.lo.router.source", "snmp"),
        ({"source": "snmp", "host": "r", "if_index": 1, "bogus": 1},
         "links.lo.router.bogus", "unknown key"),
        ({"source": "snmp", "host": "r", "if_index": 1,
          "community_file": "/nonexistent/community"},
         "links.lo.router.community_file", "nonexistent"),
    ]
    for table, key, why in cases:
        res = check(with_router(tmp_path, table))
        assert res.returncode == 2, (table, res.stdout)
        problems = json.loads(res.stdout)["problems"]
        assert any(p.startswith(key) and why in p for p in problems), (table, problems)


def test_agent_without_router_table_never_loads_the_router_libraries() -> None:
    # The base install of a Pi has no pysnmp/async-upnp-client; importing the agent (and
    # validating a config) must not need them.
    code = ("import sys, agent.cli, agent.runtime, agent.config, agent.methods.registry\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'pysnmp', 'async_upnp_client', 'aiohttp', 'pyasn1'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    assert out.strip() == "[]"
