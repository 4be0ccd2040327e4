"""Which files each DVC stage runs, and the digest of them that the stage depends on.

A stage's code is its script in ``stages/`` and every module of segbench that script can
import, at module level or inside a function (a lazy import runs when its function does), read
from the source with ``ast`` (nothing is imported), plus the files those modules read (the
report's templates). The ``code`` stage writes ``code/<script>.json``, the sha256 of each of
those files, and every stage depends on its own file: an edit re-runs exactly the stages that
can run the edited file, and ``dvc.yaml`` lists no code file by hand (so it cannot miss one).
One dependency per stage also keeps ``dvc.lock`` small, which DVC rewrites after every stage.

The import graph over-approximates what a process executes (every import counts, whatever branch
it sits in): the safe side for deciding what a stage depends on.
"""

from __future__ import annotations

import ast
import hashlib
import json
from functools import cache
from pathlib import Path

from segbench.io import atomic_dir

PACKAGE = "segbench"
# Files a module reads at run time beside its imports, relative to the package directory.
RESOURCES = {"segbench.report": ("templates",)}


class ImportGraph:
    """segbench's own imports, for the package under ``src`` (``src/segbench``)."""

    def __init__(self, src: str | Path):
        self.src = Path(src).resolve()
        self.modules: dict[str, Path] = {}
        for path in sorted((self.src / PACKAGE).rglob("*.py")):
            parts = list(path.relative_to(self.src).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            self.modules[".".join(parts)] = path
        self.named_imports = cache(self._named_imports)

    def _resolve(self, name: str) -> str | None:
        """The deepest module of the package that ``name`` (a module or an attribute) is."""
        while name and name not in self.modules:
            name = name.rpartition(".")[0]
        return name or None

    def _named_imports(self, path: Path, name: str | None = None) -> frozenset[str]:
        """The package's modules the file at ``path`` (module ``name``, if it is one) names in
        its import statements."""
        tree = ast.parse(path.read_text(), filename=str(path))
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = (name or "").split(".")
                    keep = len(here) - node.level + (path.name == "__init__.py")
                    base = ".".join(here[:keep] + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                resolved = self._resolve(target) if target.split(".")[0] == PACKAGE else None
                if resolved and resolved != name:
                    found.add(resolved)
        return frozenset(found)

    def imports_of(self, path: Path, name: str | None = None) -> frozenset[str]:
        """What running the file imports: the modules it names and their parent packages
        (whose ``__init__`` runs first)."""
        found: set[str] = set()
        for target in self.named_imports(path, name):
            parts = target.split(".")
            found |= {".".join(parts[: i + 1]) for i in range(len(parts))} & set(self.modules)
        found.discard(name)
        return frozenset(found)

    def graph(self, *, named: bool = False) -> dict[str, frozenset[str]]:
        """``{module: modules it imports}`` over the whole package (``named``: only those its
        import statements name, without their parent packages)."""
        edges = self.named_imports if named else self.imports_of
        return {name: edges(path, name) for name, path in self.modules.items()}

    def closure(self, path: Path) -> set[str]:
        """Every module of the package that running the script or module at ``path`` can
        import."""
        todo, seen = list(self.imports_of(path)), set()
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(self.imports_of(self.modules[name], name))
        return seen

    def files(self, script: Path) -> list[Path]:
        """The script, the modules it can import and the files they read, sorted."""
        names = self.closure(script)
        out = {Path(script).resolve(), *(self.modules[n] for n in names)}
        for name in names:
            for resource in RESOURCES.get(name, ()):
                folder = self.src / PACKAGE / resource
                out |= {p for p in folder.rglob("*") if p.is_file()}
        return sorted(out)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@cache
def module_digest(module: str) -> str:
    """The sha256 of the files running ``module`` (a segbench module, dotted) can execute: the
    module, its import closure and the files they read, as installed. Training keeps it in its
    resume checkpoint, so a checkpoint is never continued by code that did not write it."""
    graph = ImportGraph(Path(__file__).resolve().parents[1])  # the src/ (or site-packages/)
    path = graph.modules[module]
    digest = hashlib.sha256()
    for file in graph.files(path):
        digest.update(file.relative_to(graph.src).as_posix().encode() + b"\0")
        digest.update(_sha256(file).encode())
    return digest.hexdigest()


def code_digests(root: str | Path, stages_dir: str | Path, src: str | Path) -> dict[str, dict]:
    """``{script stem: {"script": path, "files": {path: sha256}}}`` for every stage script,
    paths relative to the repository ``root``."""
    root, graph = Path(root).resolve(), ImportGraph(src)
    out = {}
    for script in sorted(Path(stages_dir).resolve().glob("*.py")):
        files = {p.relative_to(root).as_posix(): _sha256(p) for p in graph.files(script)}
        out[script.stem] = {"script": script.relative_to(root).as_posix(), "files": files}
    return out


def write_code_digests(
    root: str | Path, stages_dir: str | Path, src: str | Path, out_dir: str | Path
) -> dict[str, dict]:
    """Write ``<out_dir>/<script stem>.json`` for every stage script; return them."""
    digests = code_digests(root, stages_dir, src)
    with atomic_dir(out_dir) as tmp:
        for stem, digest in digests.items():
            (tmp / f"{stem}.json").write_text(json.dumps(digest, indent=1, sort_keys=True) + "\n")
    return digests
