"""The layers of docs/architecture.md, checked on the source: imports point down only.

``pfd/`` is the library (no Prefect, nothing from ``tasks/`` or ``flows/``), its import
graph has no cycle, and the schema module ``pfd.config`` imports nothing else of pfd, so
a stored config re-parses anywhere. Every import counts, also those inside functions:
a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, package: str) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = _module_name(path).split(".")
    if path.name != "__init__.py":
        here = here[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}  # `from pfd import steps`
    return {m for m in out if m.split(".")[0] == package or m.split(".")[0] in
            ("flows", "tasks", "prefect")}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in (ROOT / "pfd").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for imp in _imports(path, "pfd"):
            # the longest known module that the import names
            parts = imp.split(".")
            for n in range(len(parts), 0, -1):
                cand = ".".join(parts[:n])
                if cand in modules or parts[0] in ("flows", "tasks", "prefect"):
                    deps.add(cand if cand in modules else parts[0])
                    break
        deps.discard(name)
        # importing a submodule runs its package's __init__, not a dependency on it
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    return graph


def test_library_never_imports_the_workflow_layers() -> None:
    upward = {m: sorted(d & {"flows", "tasks", "prefect"}) for m, d in _graph().items()}
    assert {m: d for m, d in upward.items() if d} == {}


def test_schema_module_imports_nothing_of_pfd() -> None:
    assert _graph()["pfd.config"] == set()


def test_library_import_graph_has_no_cycle() -> None:
    graph = {m: {d for d in deps if d.startswith("pfd")} for m, deps in _graph().items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_console_script_imports_the_flow_only_to_run_one() -> None:
    """``pfd status``/``fetch``/``report`` must not pay for (or break on) Prefect: the
    console script (``flows.cli``) imports the flow inside ``pfd run`` only."""
    tree = ast.parse((ROOT / "flows" / "cli.py").read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in top if isinstance(n, ast.ImportFrom)}
    assert {m for m in names if m.split(".")[0] in ("flows", "tasks", "prefect")} == set()
    assert "pfd.cli" in names
    script = (ROOT / "pyproject.toml").read_text()
    assert 'pfd = "flows.cli:app"' in script
