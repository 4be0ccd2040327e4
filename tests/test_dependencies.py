"""The environment is fully declared: every third-party import maps to a distribution that
pyproject.toml declares (base or an extra), every declared distribution is imported somewhere or
says why not, requirements.lock pins everything at versions pyproject.toml allows, and
``segbench predict`` runs with the ``pipeline`` extra (Ray, Prefect, DVC) absent.
"""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO, SHRINK, deep_update, real_params_raw, seeded_store

SCANNED = ("src", "stages", "flows", "tests", "benchmarks", "tools")
FIRST_PARTY = {"segbench", "tests"}

# Imported, deliberately not declared: (module, the only file that may import it) -> why.
OUTSIDE_THE_VENV = {
    ("monai", "benchmarks/sliding_window.py"): "`make bench-sliding` installs MONAI into "
    ".bench-deps/, beside the virtualenv, with --no-deps so that it never changes torch",
    ("torchmetrics", "benchmarks/multiclass_metrics.py"): "`make bench-multiclass` installs "
    "torchmetrics into .bench-deps/torchmetrics, beside the virtualenv, with --no-deps",
}

# Declared, never imported -> why they are declared.
NOT_IMPORTED = {
    "fastapi": "pins Prefect's server: Prefect 3.8.8 crashes with newer FastAPI",
    "starlette": "pins Prefect's server, with fastapi",
    "pytest-xdist": "a pytest plugin: `pytest -n` (make test)",
    "ruff": "a command: make lint, make format",
}

LOCK = REPO / "requirements.lock"
LOCK_TOOLS = REPO / "tools" / "lock-tools.in"
# What tools/lock.sh resolves for: CPython 3.11 on Linux x86_64.
LOCK_ENV = {
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
}


def imports() -> dict[str, list[str]]:
    """``{top-level module: ["path:line", ...]}`` of every absolute import in the scanned
    folders, function-level ones included; standard library and first-party modules left out,
    and so is a module that is a file beside the importer (flows/ and benchmarks/ scripts
    import their neighbours)."""
    found: dict[str, list[str]] = defaultdict(list)
    for folder in SCANNED:
        for path in sorted((REPO / folder).rglob("*.py")):
            where = path.relative_to(REPO).as_posix()
            for node in ast.walk(ast.parse(path.read_text(), where)):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                elif _is_import_module_call(node):
                    names = [node.args[0].value]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in sys.stdlib_module_names or top in FIRST_PARTY:
                        continue
                    if (path.parent / f"{top}.py").exists() or (path.parent / top).is_dir():
                        continue
                    found[top].append(f"{where}:{node.lineno}")
    return found


def _is_import_module_call(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and ast.unparse(node.func) in ("importlib.import_module", "import_module")
        and bool(node.args)
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    )


def declared() -> dict[str, list[Requirement]]:
    """``{"base" or an extra's name: [its requirements]}`` from pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    groups = {"base": project["dependencies"], **project.get("optional-dependencies", {})}
    return {group: [Requirement(spec) for spec in specs] for group, specs in groups.items()}


def declared_names() -> set[str]:
    return {canonicalize_name(r.name) for reqs in declared().values() for r in reqs}


def lock_entries() -> list[str]:
    """The lock's requirement lines, each joined with its continuation lines."""
    text = LOCK.read_text().replace("\\\n", " ")
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def locked_versions() -> dict[str, str]:
    versions = {}
    for entry in lock_entries():
        req = Requirement(entry.split(" --hash=")[0])
        versions[canonicalize_name(req.name)] = str(next(iter(req.specifier)).version)
    return versions


def test_every_third_party_import_is_declared():
    providers = importlib.metadata.packages_distributions()
    names = declared_names()
    problems = []
    for module, places in sorted(imports().items()):
        allowed = {where for (mod, where) in OUTSIDE_THE_VENV if mod == module}
        if allowed:
            strays = [p for p in places if p.rsplit(":", 1)[0] not in allowed]
            problems += [f"{p}: import {module} (only {sorted(allowed)} may)" for p in strays]
            continue
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        if not dists:
            problems += [
                f"{p}: import {module}: no installed distribution provides it" for p in places
            ]
        elif not dists & names:
            problems += [
                f"{p}: import {module}: {'/'.join(sorted(dists))} is not declared in pyproject.toml"
                for p in places
            ]
    assert not problems, "\n".join(problems)


def test_monai_and_torchmetrics_stay_outside_the_venv():
    assert "monai" not in declared_names() and "torchmetrics" not in declared_names()
    makefile = (REPO / "Makefile").read_text()
    assert "--target .bench-deps monai==$(MONAI_VERSION)" in makefile
    assert "--target .bench-deps/torchmetrics torchmetrics==$(TORCHMETRICS_VERSION)" in makefile


def test_every_declared_distribution_is_imported_or_says_why_not():
    modules_of: dict[str, set[str]] = defaultdict(set)
    for module, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            modules_of[canonicalize_name(dist)].add(module)
    imported = set(imports())
    unused = {name for name in declared_names() if not modules_of[name] & imported}
    assert unused <= set(NOT_IMPORTED), (
        f"declared in pyproject.toml, imported nowhere in {', '.join(SCANNED)}: "
        f"{sorted(unused - set(NOT_IMPORTED))} (remove them, or add a reason to NOT_IMPORTED)"
    )
    assert unused == set(NOT_IMPORTED), (
        f"NOT_IMPORTED names what is imported or not declared: {sorted(set(NOT_IMPORTED) - unused)}"
    )


def test_lock_pins_every_package_with_hashes_and_no_urls():
    entries = lock_entries()
    assert len(entries) > 100, "requirements.lock looks empty; run `make lock`"
    for entry in entries:
        spec, _, hashes = entry.partition(" --hash=")
        req = Requirement(spec)
        operators = [s.operator for s in req.specifier]
        assert operators == ["=="], f"requirements.lock: {spec!r} is not pinned with =="
        assert hashes.startswith("sha256:"), f"requirements.lock: {spec!r} has no sha256 hash"
        assert not req.url and "://" not in entry, f"requirements.lock: {spec!r} names a URL"
    assert "segbench" not in locked_versions(), "segbench itself is installed editable, unlocked"
    assert not any(o in LOCK.read_text() for o in ("--index-url", "--find-links", "file:"))


def test_lock_satisfies_pyproject_and_the_venv_tools():
    versions = locked_versions()
    tools = [
        Requirement(line.split("#")[0])
        for line in LOCK_TOOLS.read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    problems = []
    for group, reqs in {**declared(), "tools/lock-tools.in": tools}.items():
        for req in reqs:
            if req.marker is not None and not req.marker.evaluate(LOCK_ENV):
                continue
            name = canonicalize_name(req.name)
            if name not in versions:
                problems.append(f"{group}: {req} is not in requirements.lock")
            elif not req.specifier.contains(versions[name], prereleases=True):
                problems.append(
                    f"{group}: {req} does not allow the locked {name}=={versions[name]}"
                )
    assert not problems, "\n".join(problems) + "\n(run `make lock`)"


def test_the_installed_environment_is_the_lock():
    """What `make setup` installed is the lock's versions (a stale virtualenv fails here)."""
    versions = locked_versions()
    wrong = []
    for dist in importlib.metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        if name in versions and dist.version != versions[name]:
            wrong.append(f"{name}: installed {dist.version}, locked {versions[name]}")
    assert not wrong, "\n".join(wrong) + "\n(run `make setup`)"


# Runs `segbench predict` in a fresh interpreter whose imports of Ray, Prefect and DVC fail, as
# they would after `pip install segbench` without the pipeline extra.
REFUSING_PREDICT = """
import sys

REFUSED = {"ray", "prefect", "dvc"}


class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in REFUSED:
            raise ModuleNotFoundError(f"No module named {name!r} (refused)", name=name)


sys.meta_path.insert(0, Refuse())
try:
    import ray
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("the import of ray was not refused")

from segbench.cli import main

try:
    main(sys.argv[1:])
finally:
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in REFUSED)
    assert not leaked, leaked
"""


@pytest.fixture(scope="module")
def models(tiny_data, tmp_path_factory) -> Path:
    """A folder holding an Otsu model and a small one-epoch U-Net, trained on the shrunk tiles."""
    from segbench.config import parse_params
    from segbench.training import train

    _, tiles, _ = tiny_data
    params = parse_params(deep_update(deep_update(real_params_raw(), SHRINK), SMALL))
    root = tmp_path_factory.mktemp("models_without_pipeline")
    with pytest.MonkeyPatch.context() as mp:  # one MLflow store for both
        mp.setenv("MLFLOW_TRACKING_URI", seeded_store(root / "mlflow.db"))
        for name in ("otsu", "unet"):
            train(name, params, tiles, root / name)
    return root


@pytest.mark.slow  # trains two models, then a fresh process each (~10 s)
@pytest.mark.parametrize("model", ["otsu", "unet"])
def test_predict_works_without_ray_prefect_or_dvc(model, models, tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    yy, xx = np.mgrid[:90, :130]
    disc = (yy - 45) ** 2 + (xx - 60) ** 2 <= 20**2
    cv2.imwrite(str(images / "disc.png"), np.where(disc, 200, 40).astype(np.uint8))
    argv = ["predict", str(models / model), str(images), str(tmp_path / "out")]

    proc = subprocess.run(
        [sys.executable, "-c", REFUSING_PREDICT, *argv],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )

    assert proc.returncode == 0, proc.stderr
    assert "wrote 1 masks" in proc.stdout
    mask = cv2.imread(str(tmp_path / "out" / "disc.png"), cv2.IMREAD_UNCHANGED)
    assert mask is not None and mask.shape == (90, 130)


# One epoch of a three-level U-Net: the same predict code as the real one, in a third of the time.
SMALL = {
    "train": {"epochs": 1},
    "models": {"unet": {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}},
}
