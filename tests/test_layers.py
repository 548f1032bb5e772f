"""The package's shape, checked: the import contract of pyproject.toml (layers, no cycles), imports inside
functions only for optional dependencies (with their reason), and the size limits of modules and functions."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "src" / "dejavu").rglob("*.py"))
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80


def test_import_contract_holds():
    """lint-imports (import-linter) checks the layers and the absence of cycles declared in pyproject.toml."""
    command = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
               "sys.exit(lint_imports_command())", str(ROOT / "pyproject.toml")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken" in result.stdout, result.stdout[-2000:]


def _inner_imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    yield inner


def test_imports_inside_functions_are_only_optional_dependencies_with_a_reason():
    found = []
    for path in SOURCES:
        lines = path.read_text().splitlines()
        for node in _inner_imports(ast.parse("\n".join(lines))):
            module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if (module or "").split(".")[0] == "dejavu":
                found.append(f"{where}: imports dejavu's own {module} inside a function")
            elif "#" not in lines[node.lineno - 1]:
                found.append(f"{where}: imports {module} inside a function without a comment saying why")
    assert not found, "\n".join(found)


def test_no_module_over_500_lines_and_no_function_over_80():
    found = []
    for path in SOURCES:
        text = path.read_text()
        if len(text.splitlines()) > MAX_FILE_LINES:
            found.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert not found, "\n".join(found)
