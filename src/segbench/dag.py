"""The pipeline's stage graph, read from DVC (``dvc.yaml`` is its only definition), and a way to
run one stage of it. Used by the Prefect flow; no ML here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from segbench.errors import USER_ERROR_EXIT


def stage_order(root: str | Path = ".") -> list[str]:
    """Stage names (``fetch``, ``train@unet``, ...) in an order where dependencies come first.

    DVC's graph has an edge from each stage to the stages it depends on, so the execution order
    is a topological order of the reversed graph; ties are broken by name for stable runs.
    """
    from dvc.repo import Repo

    # Stage addresses are relative to the working directory: read them from the repo's root.
    with contextlib.chdir(root), Repo(".") as repo:
        graph = repo.index.graph
        names = {stage: stage.addressing for stage in graph.nodes}
        order = nx.lexicographical_topological_sort(graph.reverse(), key=lambda s: names[s])
        return [names[stage] for stage in order]


@dataclass
class StageResult:
    stage: str
    returncode: int
    output: str


class StageFailed(RuntimeError):
    """``dvc repro`` of one stage exited non-zero; ``user_error`` when the cause is the input."""

    def __init__(self, result: StageResult):
        # DVC exits 255 whatever the command did; the command's own status is in its message.
        status = re.search(r"exited with (-?\d+)", result.output)
        self.result = result
        self.user_error = status is not None and int(status.group(1)) == USER_ERROR_EXIT
        tail = "\n".join(result.output.strip().splitlines()[-15:])
        super().__init__(f"stage {result.stage} failed (exit {result.returncode}):\n{tail}")


def stage_env() -> dict[str, str]:
    """The environment for stage commands: this interpreter's ``bin`` first on PATH, so the
    ``python`` of ``dvc.yaml`` is the one segbench is installed in."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def repro_stage(stage: str, root: str | Path = ".", *, force: bool = False) -> StageResult:
    """``dvc repro --single-item <stage>``: runs it if its deps, params or outs changed."""
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", stage]
    if force:
        cmd.append("--force")
    proc = subprocess.run(cmd, cwd=root, env=stage_env(), capture_output=True, text=True)
    result = StageResult(stage, proc.returncode, proc.stdout + proc.stderr)
    if proc.returncode:
        raise StageFailed(result)
    return result


def metrics_show(root: str | Path = ".") -> dict[str, dict]:
    """``{metrics file: {name: value}}`` for every metrics file ``dvc.yaml`` declares and that
    exists in the workspace (what ``dvc metrics show`` lists)."""
    from dvc.repo import Repo

    root = Path(root)
    with contextlib.chdir(root), Repo(".") as repo:
        paths = sorted({out.def_path for stage in repo.index.stages for out in stage.metrics})
    return {p: json.loads((root / p).read_text()) for p in paths if (root / p).is_file()}
