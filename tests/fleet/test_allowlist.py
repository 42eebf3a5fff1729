"""A signed plan cannot point a probe anywhere the probe's allowlist does not name, nor
make it run another program (issue 15). The rules follow the method declarations
(``netmon.methods``: options typed ``TARGET`` or ``LOCAL``), so these tests walk every
declared method rather than a hand list."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest

from agent.remote_config import Allowlist, target_host
from netmon.methods import DECLARATIONS, LOCAL, TARGET, option_roles
from tests.fleet.test_signing import Harness

#: String-valued options reviewed as naming no host, address, URL or program. A new
#: string option must either be marked TARGET / LOCAL in netmon/methods.py or be added
#: here after review: otherwise test_every_string_option_is_reviewed fails.
NOT_A_HOST = {
    ("dns", "name"),  # the name asked of the resolver (``target``), never contacted
    ("http", "download_path"), ("http", "upload_path"),  # paths on ``target``
    ("icmp", "family"), ("ipv6", "family"),
    # A board model string (e.g. "Raspberry Pi 4 Model B Rev 1.4") looked up in a table.
    ("http", "device_model"), ("responsiveness", "device_model"), ("iperf3", "device_model"),
    # Paths on ``target``.
    ("responsiveness", "load_path"), ("responsiveness", "upload_path"),
    ("responsiveness", "small_path"),
}
#: A valid value per option for building plans; the host is replaced per case.
EVIL = {"url": "http://evil.example.com/", "host": "evil.example.com",
        "hostport": "evil.example.com:443", "icmp": "icmp:203.0.113.9"}
GOOD = {"url": "http://127.0.0.1/", "host": "127.0.0.1", "hostport": "127.0.0.1:443",
        "icmp": "icmp:127.0.0.1"}


def _stringy(annotation: Any) -> bool:
    if annotation is str:
        return True
    return any(_stringy(a) for a in typing.get_args(annotation))


def test_every_string_option_is_reviewed() -> None:
    unreviewed = []
    for name, decl in DECLARATIONS.items():
        roles = option_roles(decl.options)
        for key, info in decl.options.model_fields.items():
            if _stringy(info.annotation) and key not in roles and (name, key) not in NOT_A_HOST:
                unreviewed.append(f"{name}.{key}")
    assert not unreviewed, ("string options that may name a host: mark them TARGET or "
                            f"LOCAL in netmon/methods.py, or review them: {unreviewed}")


def test_the_known_leaks_are_marked() -> None:
    assert option_roles(DECLARATIONS["reachability"].options)["endpoints"] is TARGET
    assert option_roles(DECLARATIONS["ipv6"].options)["v4_target"] is TARGET
    for method in ("iperf3", "http", "speedtest"):
        assert option_roles(DECLARATIONS[method].options)["latency_target"] is TARGET
    assert option_roles(DECLARATIONS["iperf3"].options)["binary"] is LOCAL


def _form(method: str, key: str) -> str:
    if method in ("http", "http_latency", "responsiveness") and key == "target":
        return "url"
    if method == "speedtest" and key == "target":
        return "url"
    if method == "reachability":
        return "icmp" if key == "endpoints" else "hostport"
    return "host"


def _plan(method: str, key: str, hosts: dict[str, str]) -> dict[str, Any]:
    """A valid one-test plan of ``method`` whose ``key`` option takes a ``hosts`` value
    and every other target option a good one."""
    table: dict[str, Any] = {"method": method, "every_s": 3600, "jitter_s": 0}
    for k in option_roles(DECLARATIONS[method].options):
        if option_roles(DECLARATIONS[method].options)[k] is not TARGET:
            continue
        value = (hosts if k == key else GOOD)[_form(method, k)]
        table[k] = [value] if k == "endpoints" else value
    return {"tests": {"t": table}}


CASES = [(m, k) for m, d in sorted(DECLARATIONS.items())
         for k, role in sorted(option_roles(d.options).items()) if role is TARGET]


@pytest.mark.parametrize(("method", "key"), CASES, ids=[f"{m}.{k}" for m, k in CASES])
def test_every_target_option_outside_the_allowlist_is_refused(
        tmp_path: Path, method: str, key: str) -> None:
    h = Harness(tmp_path, allowed=["127.0.0.1", "::1"])
    good = _plan(method, key, GOOD)
    assert h.rc.handle(h.payload(good, 1)).applied, "the allowed plan must apply"
    d = h.rc.handle(h.payload(_plan(method, key, EVIL), 2))
    assert d.outcome == "rejected" and d.reason == "target_not_allowed", d
    assert h.rc.version == 1 and len(h.applied) == 1


def test_the_binary_option_cannot_be_set_remotely(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    plan = {"tests": {"t": {"method": "iperf3", "target": "127.0.0.1", "every_s": 3600,
                            "binary": "/bin/sh"}}}
    d = h.rc.handle(h.payload(plan, 1))
    assert d.outcome == "rejected" and d.reason == "local_option", d
    assert "tests.t.binary" in (d.detail or "") and not h.applied


@pytest.mark.parametrize(("target", "host"), [
    ("icmp:203.0.113.9", "203.0.113.9"), ("evil.example.com:443", "evil.example.com"),
    ("http://EVIL.example.com./x", "evil.example.com"), ("[2001:db8::1]:80", "2001:db8::1"),
    ("2001:db8::2", "2001:db8::2"), ("icmp:[::1]", "::1"),
])
def test_target_host_of_every_form(target: str, host: str) -> None:
    assert target_host(target) == host
    assert not Allowlist(["127.0.0.1", "::1"]).allows(target) or host == "::1"
