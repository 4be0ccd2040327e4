"""segbench's own import graph, read from the source (``ast``), not by importing anything.

Every ``import`` counts, at module level or inside a function (a lazy import runs when its
function does), so the graph over-approximates what a process can execute: the right side to
err on when deciding which files a DVC stage depends on, or which layer imports which.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PACKAGE = "segbench"


@cache
def modules() -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of the package (packages by __init__)."""
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str) -> str | None:
    """The deepest module of the package that ``name`` (a module or an attribute of one) is."""
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name or None


def _with_parents(name: str) -> set[str]:
    """Importing ``a.b.c`` runs ``a``, ``a.b`` and ``a.b.c``."""
    parts = name.split(".")
    return {".".join(parts[: i + 1]) for i in range(len(parts))} & set(modules())


@cache
def imports_of(path: Path, name: str | None = None) -> frozenset[str]:
    """The package's modules that running the file at ``path`` (module ``name``, if it is one)
    imports: those it names and their parent packages (whose ``__init__`` runs first)."""
    found: set[str] = set()
    for target in named_imports(path, name):
        found |= _with_parents(target)
    found.discard(name)
    return frozenset(found)


@cache
def named_imports(path: Path, name: str | None = None) -> frozenset[str]:
    """The package's modules the file at ``path`` names in its import statements."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = (name or "").split(".")
                keep = len(here) - node.level + (1 if is_package else 0)
                base = ".".join(here[:keep] + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] != PACKAGE:
                continue
            resolved = _resolve(target)
            if resolved and resolved != name:
                found.add(resolved)
    return frozenset(found)


def graph(*, named: bool = False) -> dict[str, frozenset[str]]:
    """``{module: modules it imports}`` over the whole package (``named``: only those its
    import statements name, without their parent packages)."""
    edges = named_imports if named else imports_of
    return {name: edges(path, name) for name, path in modules().items()}


def closure(path: Path) -> set[str]:
    """Every module of the package that running the script or module at ``path`` can import."""
    todo, seen = list(imports_of(path)), set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(imports_of(modules()[name], name))
    return seen


def third_party(path: Path) -> set[str]:
    """Top-level names of modules outside the package that ``path`` imports (absolute only)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out - {PACKAGE}
