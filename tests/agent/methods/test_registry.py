"""A method is declared once (netmon/methods.py) and implemented once (agent/methods/):
the two lists match one to one, and the contract's method set and groups and the table in
docs/methods.md follow the declarations."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from agent.methods.base import Method
from agent.methods.registry import IMPLEMENTATIONS, REGISTRY
from netmon import contract
from netmon.methods import DECLARATIONS
from netmon.plan import TestSpec
from tests.helpers import REPO
from tests.helpers.agent import TEST_ONLY_LATENCY, TestOnlyLatencyMethod

ROW = re.compile(r"^\|(.*)\|\s*$")


def docs_methods_table() -> list[tuple[str, str, str]]:
    """``(method, kind, what)`` of each row of the table headed ``| method | kind | what |``
    in docs/methods.md, in order (backticks around the method name removed)."""
    lines = (REPO / "docs" / "methods.md").read_text(encoding="utf-8").splitlines()
    head = [i for i, line in enumerate(lines)
            if [c.strip() for c in line.strip().strip("|").split("|")]
            == ["method", "kind", "what"]]
    assert len(head) == 1, "docs/methods.md needs exactly one | method | kind | what | table"
    rows: list[tuple[str, str, str]] = []
    for line in lines[head[0] + 2:]:  # past the header and the |---| line
        match = ROW.match(line.strip())
        if not match:
            break
        cells = [c.strip() for c in match.group(1).split("|")]
        assert len(cells) == 3, f"docs/methods.md: not three cells: {line!r}"
        rows.append((cells[0].strip("`"), cells[1], cells[2]))
    return rows


def test_every_declared_method_has_exactly_one_implementation_and_vice_versa() -> None:
    names = [cls.decl.name for cls in IMPLEMENTATIONS]
    assert sorted({n for n in names if names.count(n) > 1}) == [], "implemented twice"
    assert sorted(set(DECLARATIONS) - set(names)) == [], "declared, not implemented"
    assert sorted(set(names) - set(DECLARATIONS)) == [], "implemented, not declared"
    by_name = {cls.decl.name: cls for cls in IMPLEMENTATIONS}
    assert by_name == REGISTRY


@pytest.mark.parametrize("name", list(DECLARATIONS))
def test_each_implementation_is_its_own_module_and_uses_the_declaration(name: str) -> None:
    impl = REGISTRY[name]
    assert impl.__module__ == f"agent.methods.{name}"
    # The declaration itself, not a copy with the same fields: one place to change it.
    assert impl.decl is DECLARATIONS[name]


def test_contract_method_set_and_groups_follow_the_declarations() -> None:
    kinds = {name: decl.kind for name, decl in DECLARATIONS.items()}
    declared = tuple(kinds)
    throughput = tuple(n for n, d in DECLARATIONS.items() if d.kind == "throughput" and d.speed)
    latency = tuple(n for n, k in kinds.items() if k == "latency")
    assert declared == contract.METHODS
    assert throughput == contract.THROUGHPUT_METHODS
    assert latency == contract.LATENCY_METHODS
    assert kinds[contract.IPV6_METHOD] == kinds[contract.REACHABILITY_METHOD] == "check"
    # Before the declarations existed these were written out by hand; the dashboards'
    # committed queries follow this order.
    # responsiveness saturates the link like a speed test: kind throughput (never
    # overlapping another, charged to data budgets), but it reports no Mb/s figure, so it
    # stays out of the speed group the dashboards and the bulletin count.
    assert kinds["responsiveness"] == "throughput"
    assert contract.THROUGHPUT_METHODS == ("iperf3", "speedtest", "http")
    assert contract.LATENCY_METHODS == ("icmp", "tcp", "dns", "http_latency")


def test_docs_table_lists_exactly_the_declared_methods_with_their_kind() -> None:
    assert docs_methods_table() == [(d.name, d.kind, d.doc) for d in DECLARATIONS.values()]


def test_each_declaration_has_a_one_line_doc() -> None:
    for decl in DECLARATIONS.values():
        assert decl.doc.strip() and "\n" not in decl.doc and "|" not in decl.doc, decl.name


def _result(method: str) -> dict[str, Any]:
    return {"schema": 1, "probe_id": "probe-test", "link": "fibre", "access": "fixed",
            "isp": "test-isp", "method": method, "target": "t",
            "started_at": "2026-01-01T00:00:00.000Z", "duration_s": 1.0,
            "agent_version": "test"}


def test_register_method_fixture_makes_both_sides_accept_a_test_only_method(
        register_method: Callable[[type[Method[Any]]], None]) -> None:
    name = TEST_ONLY_LATENCY.name
    with pytest.raises(KeyError):
        DECLARATIONS[name]
    register_method(TestOnlyLatencyMethod)
    assert REGISTRY[name] is TestOnlyLatencyMethod
    assert TestSpec.model_validate({"method": name, "target": "x"}).kind == "latency"
    assert contract.ResultMessage.model_validate(_result(name)).method == name


def test_a_test_only_method_is_gone_after_its_test() -> None:
    # Runs after the test above (pytest keeps file order): the fixture cleaned up.
    assert not [n for n in (*DECLARATIONS, *REGISTRY) if n.startswith("test_only")]
    with pytest.raises(ValueError, match="Input should be 'iperf3'"):
        contract.ResultMessage.model_validate(_result(TEST_ONLY_LATENCY.name))

