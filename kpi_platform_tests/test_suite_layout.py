"""The test suite's own floor plan: every test directory is a package, and shared helpers come from `support/`,
never from another test module or a conftest."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
PACKAGE = TESTS_DIR.name


def _python_files() -> list[Path]:
    return sorted(p for p in TESTS_DIR.rglob("*.py") if "__pycache__" not in p.parts)


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_every_test_directory_is_a_package():
    directories = {path.parent for path in _python_files()}
    assert (
        sorted(str(d.relative_to(TESTS_DIR)) for d in directories if not (d / "__init__.py").exists()) == []
    )


def test_tests_import_shared_helpers_from_support_only():
    wrong = []
    for path in _python_files():
        for name in _imported_modules(path):
            parts = name.split(".")
            if parts[0] != PACKAGE or len(parts) < 2 or parts[1] == "support":
                continue
            if any(part == "conftest" or part.startswith("test_") for part in parts[1:]):
                wrong.append(f"{path.relative_to(TESTS_DIR)}: {name}")
    assert wrong == []
