"""Never stale: every stage depends on the digest of every file of segbench it can run.

The ``code`` stage writes ``code/<script>.json`` (segbench.codedeps): the sha256 of the stage
script and of every module it can import, lazy imports included, plus the files they read. These
tests check that each stage of ``dvc.yaml`` depends on its own digest (and lists no code file by
hand), and that a digest changes exactly when a file its stage can run changes.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from segbench.codedeps import ImportGraph, code_digests
from tests.static_imports import REPO


def stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def script_of(stage: dict) -> str:
    body = stage.get("do", stage)
    match = re.search(r"python stages/(\w+)\.py", body["cmd"])
    assert match, f"no `python stages/<x>.py` in {body['cmd']!r}"
    return match.group(1)


@pytest.mark.parametrize("name", [s for s in stages() if s != "code"])
def test_each_stage_depends_on_its_code_digest_and_lists_no_code_by_hand(name):
    stage = stages()[name]
    deps = stage.get("do", stage)["deps"]
    assert f"code/{script_of(stage)}.json" in deps
    by_hand = [d for d in deps if d.startswith(("src/", "stages/"))]
    assert by_hand == [], f"{name}: code deps belong in its digest, not dvc.yaml: {by_hand}"


def test_the_code_stage_reads_every_stage_script_and_the_whole_package():
    code = stages()["code"]
    assert set(code["deps"]) == {"stages", "src/segbench"} and code["outs"] == ["code"]
    assert {script_of(s) for s in stages().values()} == {
        p.stem for p in (REPO / "stages").glob("*.py")
    }


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for folder in ("stages", "src"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("*.pyc"))
    return root


def _digests(root: Path) -> dict[str, dict]:
    return code_digests(root, root / "stages", root / "src")


def test_a_digest_changes_exactly_when_a_file_its_stage_can_run_changes(tmp_path):
    root = _copy(tmp_path)
    before = _digests(root)
    with open(root / "src/segbench/report.py", "a") as fh:
        fh.write("\n# an edit\n")
    after = _digests(root)
    changed = {stem for stem in before if before[stem] != after[stem]}
    assert changed == {"report"}
    # A module everything imports changes every stage's digest.
    with open(root / "src/segbench/errors.py", "a") as fh:
        fh.write("\n# an edit\n")
    again = _digests(root)
    assert {stem for stem in after if after[stem] != again[stem]} == set(after)


def test_lazy_imports_and_resources_are_part_of_a_stage(tmp_path):
    digests = _digests(_copy(tmp_path))
    train = digests["train"]["files"]
    # The registry imports the SAM and smp builders inside functions: training can run them.
    assert "src/segbench/sam/lora.py" in train and "src/segbench/models/smp_models.py" in train
    assert "src/segbench/report.py" not in train
    assert "src/segbench/templates/report.html.j2" in digests["report"]["files"]
    assert digests["train"]["script"] == "stages/train.py"


def test_a_new_lazy_import_joins_the_closure(tmp_path):
    root = _copy(tmp_path)
    graph = ImportGraph(root / "src")
    names = graph.closure(root / "stages/fetch.py")
    assert "segbench.stats" not in names
    with open(root / "src/segbench/fetch.py", "a") as fh:
        fh.write("\n\ndef _later():\n    from segbench.stats import bootstrap_ci\n")
    assert "segbench.stats" in ImportGraph(root / "src").closure(root / "stages/fetch.py")
