"""The dependency graph runs one way (issue 13): checked on the source, every import
included (those inside functions too), and on what a real process loads.

Rules: ``netmon`` (the leaf core) imports nothing first-party; ``agent`` imports only
``netmon``; ``collector`` never imports ``agent``; nothing in the wheel imports
``devstack`` (the local stack, not packaged); no import cycles between modules.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

WHEEL = ("netmon", "agent", "collector")
FIRST_PARTY = (*WHEEL, "devstack", "tests", "benchmarks")
ALLOWED: dict[str, set[str]] = {
    "netmon": {"netmon"},
    "agent": {"netmon", "agent"},
    "collector": {"netmon", "collector"},
    "devstack": {"netmon", "agent", "collector", "devstack"},
}


def module_name(path: Path) -> str:
    """Dotted module name of a source file under the repository."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources(top: str) -> list[Path]:
    """Every Python file of a top-level package."""
    return sorted((REPO / top).rglob("*.py"))


def is_module(dotted: str) -> bool:
    """Whether a dotted name is a first-party module or package on disk."""
    base = REPO.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(path: Path) -> set[str]:
    """First-party modules a file imports, wherever the import statement is."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import sub`` imports the submodule when there is one.
            names = [f"{base}.{a.name}" if is_module(f"{base}.{a.name}") else base
                     for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in FIRST_PARTY:
                while name and not is_module(name):
                    name = name.rpartition(".")[0]
                if name:
                    found.add(name)
    found.discard(me)
    return found


def graph() -> dict[str, set[str]]:
    """Module -> first-party modules it imports, for the wheel and devstack."""
    return {module_name(p): imports_of(p)
            for top in ALLOWED for p in sources(top)}


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    # The rule test below is only as good as this parser: a late import must count.
    src = REPO / "collector" / "commands" / "run.py"
    assert "collector.core.service" in imports_of(src)


@pytest.mark.parametrize("top", sorted(ALLOWED))
def test_each_layer_imports_only_what_it_may(top: str) -> None:
    bad = [f"{module_name(p)} imports {dep}"
           for p in sources(top) for dep in sorted(imports_of(p))
           if dep.split(".")[0] not in ALLOWED[top]]
    assert not bad, "\n".join(bad)


def test_no_import_cycles() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep):], dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def _loaded_after(code: str) -> list[str]:
    """Top-level first-party packages (and dashboards) loaded by running ``code``."""
    probe = (f"{code}\nimport json, sys\n"
             "print(json.dumps(sorted(m for m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    return [m for m in json.loads(out.splitlines()[-1])
            if m.split(".")[0] in FIRST_PARTY or m.split(".")[0] == "dashboards"]


def test_the_agent_loads_no_collector_or_devstack_module() -> None:
    loaded = _loaded_after(
        "import netmon, agent, agent.cli, agent.runtime, agent.methods.registry\n"
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    agent.cli.main(['--help'])")
    assert any(m.startswith("agent.methods.") for m in loaded)  # the check saw the agent
    assert not [m for m in loaded if m.split(".")[0] in ("collector", "devstack",
                                                         "dashboards", "tests")], loaded


def test_the_noc_tools_load_no_agent_module() -> None:
    loaded = _loaded_after(
        "import contextlib, io\nfrom collector import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    cli.main(['probes', '--help'])\n"
        "import collector.fleet.push, collector.fleet.inventory, collector.core.service")
    assert "collector.core.service" in loaded
    assert not [m for m in loaded if m.split(".")[0] in ("agent", "devstack", "tests")], loaded
