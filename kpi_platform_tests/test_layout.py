"""The floor plan holds: imports go down the wings (docs/architecture.md), there are no import circles, and only
`runtime/dagster_private.py` reaches private Dagster names."""

from __future__ import annotations

import ast
from pathlib import Path

import kpi_platform

PACKAGE_DIR = Path(kpi_platform.__file__).resolve().parent

#: Wings from the bottom up: a module may import its own wing and the wings below it.
WINGS: tuple[tuple[str, ...], ...] = (
    ("settings", "keys"),
    ("clients", "simulator", "warehouse", "activity"),
    ("meta", "quality"),
    ("collect", "summaries", "forecast"),
    ("operations",),
    ("defs",),
    ("definitions",),
    ("runtime",),
    ("cli",),
)
#: Allowed upward imports, each with its reason.
EXCEPTIONS = {
    # The health report's instance checks read Dagster's history through the one module that reads it.
    ("operations.health.instance_checks", "defs.run_history"),
    # The production runtime's private-name door is imported by the Dagster glue that needs those names.
    ("defs.run_history", "runtime.dagster_private"),
    # The daily asset gives each partition of a range run its own metadata through the same door.
    ("defs.collection", "runtime.dagster_private"),
}


def _modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        rel = path.relative_to(PACKAGE_DIR).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        if "migrations" in parts:
            continue
        found[".".join(parts)] = ast.parse(path.read_text(encoding="utf-8"))
    return found


def _imports(tree: ast.Module, modules: frozenset[str] = frozenset()) -> list[str]:
    """Every module named by an import anywhere in the file (functions included). `from pkg import mod` names
    `pkg.mod` alone when that is one of `modules` (dotted, without the `kpi_platform.` prefix)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            submodules = [
                f"{node.module}.{a.name}"
                for a in node.names
                if f"{node.module}.{a.name}".removeprefix("kpi_platform.") in modules
            ]
            names += submodules or [node.module]
    return names


def _ours(name: str, modules: set[str]) -> str | None:
    if not name.startswith("kpi_platform."):
        return None
    name = name.removeprefix("kpi_platform.")
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _rank(module: str) -> int:
    top = module.split(".")[0]
    for rank, wing in enumerate(WINGS):
        if top in wing:
            return rank
    raise AssertionError(f"kpi_platform.{module} is in no wing of WINGS (docs/architecture.md)")


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    names = set(modules)
    graph: dict[str, set[str]] = {}
    for module, tree in modules.items():
        targets = {_ours(n, names) for n in _imports(tree, frozenset(names))}
        graph[module] = {t for t in targets if t is not None and t != module and t != ""}
    return graph


def test_imports_go_down_the_wings():
    upward = [
        (module, target)
        for module, targets in _graph().items()
        for target in targets
        if _rank(target) > _rank(module) and (module, target) not in EXCEPTIONS
    ]
    assert upward == []


def test_there_are_no_import_circles():
    graph = _graph()
    # A package importing its own submodules (re-exports) is not a circle back up.
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    circles = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_only_the_door_module_imports_private_dagster_names():
    private = sorted(
        module
        for module, tree in _modules().items()
        for name in _imports(tree)
        if name.startswith("dagster._") or name.startswith("dagster_postgres._")
    )
    assert set(private) <= {"runtime.dagster_private"}
