"""Never stale: every file of segbench a DVC stage can import is one of that stage's deps.

A stage's deps are computed here from the source (:mod:`tests.static_imports`): the stage
script's imports, followed through segbench, lazy imports included. ``dvc.yaml`` must list each
such file (or a directory holding it), and no ``src/`` dep that holds none of them (it would
re-run the stage for nothing). When this fails, the message is the deps list to paste.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.static_imports import REPO, closure, modules

# Files a module reads at run time, beside its imports.
RESOURCES = {"segbench.report": ["src/segbench/templates"]}


def stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def script_of(stage: dict) -> Path:
    body = stage.get("do", stage)
    match = re.search(r"python (stages/\w+\.py)", body["cmd"])
    assert match, f"no `python stages/<x>.py` in {body['cmd']!r}"
    return REPO / match.group(1)


def needed(script: Path) -> set[str]:
    """Repository-relative files (and resource directories) the stage's process can read."""
    names = closure(script)
    files = {str(modules()[n].relative_to(REPO)) for n in names}
    for name in names:
        files |= set(RESOURCES.get(name, []))
    return files | {str(script.relative_to(REPO))}


def suggested(files: set[str]) -> list[str]:
    """``files`` with each package directory whose every module is needed written once."""
    out = set(files)
    for package in sorted({str(Path(f).parent) for f in files}, key=len, reverse=True):
        if not package.startswith("src/segbench/"):
            continue
        members = {str(p.relative_to(REPO)) for p in (REPO / package).glob("*.py")}
        if members and members <= out and package != "src/segbench":
            out = (out - members) | {package}
    return sorted(out)


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("name", list(stages()))
def test_stage_deps_cover_every_file_the_stage_imports(name):
    stage = stages()[name]
    deps = [d for d in stage.get("do", stage).get("deps", []) if "${" not in d]
    files = needed(script_of(stage))
    missing = sorted(f for f in files if not covered(f, deps))
    code_deps = [d for d in deps if d.startswith(("src/", "stages/"))]
    idle = [d for d in code_deps if not any(covered(f, [d]) for f in files)]
    assert not missing and not idle, (
        f"dvc.yaml stage {name}: missing deps {missing}, deps it never imports {idle}; "
        f"its code deps should be:\n" + "\n".join(f"- {d}" for d in suggested(files))
    )


def test_every_stage_script_is_a_stage():
    used = {script_of(s).name for s in stages().values()}
    assert used == {p.name for p in (REPO / "stages").glob("*.py")}
