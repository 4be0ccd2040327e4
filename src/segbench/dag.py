"""The pipeline's stage graph, read from DVC (``dvc.yaml`` is its only definition), which of its
stages DVC sees as changed, and a way to run them one at a time. Used by the Prefect flows; no ML
here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from segbench.errors import USER_ERROR_EXIT, SegbenchError


@dataclass(frozen=True)
class StageGraph:
    """DVC's stage graph by stage name (``fetch``, ``train@unet``, ...).

    ``order`` lists every stage with its dependencies first; ``needs[s]`` holds the stages whose
    outputs ``s`` depends on directly.
    """

    order: tuple[str, ...]
    needs: Mapping[str, frozenset[str]]

    def select(self, targets: Iterable[str] | None = None) -> list[str]:
        """The ``targets`` and every stage upstream of them, in ``order``; all stages when
        ``targets`` is None or empty. A target is a stage name or a ``foreach`` group
        (``train`` selects every ``train@...``). Unknown names raise a :class:`SegbenchError`
        that lists the valid ones."""
        targets = list(targets or [])
        if not targets:
            return list(self.order)
        groups = {name.partition("@")[0] for name in self.order} - set(self.order)
        unknown = [t for t in targets if t not in self.order and t not in groups]
        if unknown:
            raise SegbenchError(
                f"unknown stage {', '.join(map(repr, unknown))}; the stages of dvc.yaml are "
                f"{', '.join(self.order)} (or a group: {', '.join(sorted(groups))})"
            )
        todo = [s for s in self.order if s in targets or s.partition("@")[0] in targets]
        wanted: set[str] = set()
        while todo:
            stage = todo.pop()
            if stage not in wanted:
                wanted.add(stage)
                todo.extend(self.needs[stage])
        return [s for s in self.order if s in wanted]


def read_graph(root: str | Path = ".") -> StageGraph:
    """The stage graph of the DVC repository at ``root`` (``dvc.yaml`` is its only definition).

    DVC's graph has an edge from each stage to the stages it depends on, so the execution order
    is a topological order of the reversed graph; ties are broken by name for stable runs.
    """
    from dvc.repo import Repo

    # Stage addresses are relative to the working directory: read them from the repo's root.
    with contextlib.chdir(root), Repo(".") as repo:
        graph = repo.index.graph
        names = {stage: stage.addressing for stage in graph.nodes}
        order = nx.lexicographical_topological_sort(graph.reverse(), key=lambda s: names[s])
        needs = {names[s]: frozenset(names[d] for d in graph.successors(s)) for s in graph}
        return StageGraph(tuple(names[stage] for stage in order), needs)


def stage_order(root: str | Path = ".") -> list[str]:
    """Stage names in an order where dependencies come first (see :func:`read_graph`)."""
    return list(read_graph(root).order)


def changed_stages(root: str | Path, stages: Iterable[str]) -> dict[str, list]:
    """What ``dvc status`` reports for ``stages``, computed once in this process:
    ``{stage: [changes]}`` for each stage that ``dvc repro`` would run (changed deps, params,
    command or outs, or outs missing); stages that are up to date are absent.

    File hashes come from DVC's state database, so when nothing changed this costs a stat per
    file rather than a hash, and no ``dvc`` process per stage.
    """
    from dvc.repo import Repo, lock_repo

    wanted = set(stages)
    if not wanted:
        return {}
    status: dict[str, list] = {}
    # What `Repo.status()` does, over the index's stages: naming them as `targets` instead makes
    # DVC resolve each name on its own, 3 s rather than 0.7 s for this repository's 25 stages.
    with contextlib.chdir(root), Repo(".") as repo, lock_repo(repo):
        for stage in repo.index.stages:
            if stage.addressing in wanted:
                status.update(stage.status())
    return status


def repro_stages(
    graph: StageGraph,
    stages: Iterable[str],
    *,
    changed: Collection[str],
    force: Collection[str] = (),
    run: Callable[[str, bool], str],
    log: Callable[[str], object] = print,
) -> dict[str, str]:
    """Run ``stages`` (in the given order) through ``run(stage, force) -> DVC's output``, but
    only those that DVC reported ``changed``, those in ``force``, and those downstream of a
    stage that DVC ran in this call (its inputs may be new; DVC checks them again). The others
    are logged as up to date and cost nothing.

    Returns ``{stage: "ran" | "unchanged" | "up to date"}``: ``unchanged`` when ``run`` was
    called but DVC found nothing to do.
    """
    outcome: dict[str, str] = {}
    for stage in stages:
        upstream_ran = any(outcome.get(dep) == "ran" for dep in graph.needs[stage])
        if stage in changed or stage in force or upstream_ran:
            output = run(stage, stage in force)
            # Conservative: anything but DVC's "didn't change" counts as a run, so a change of
            # DVC's wording only costs downstream stages a `dvc repro` check, never a skip.
            outcome[stage] = "unchanged" if _DVC_SKIPPED in output else "ran"
        else:
            outcome[stage] = "up to date"
            log(f"{stage}: up to date (DVC status: nothing changed)")
    return outcome


_DVC_SKIPPED = "didn't change, skipping"


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


def repro_stage(
    stage: str,
    root: str | Path = ".",
    *,
    force: bool = False,
    env: Mapping[str, str] | None = None,
) -> StageResult:
    """``dvc repro --single-item <stage>``: runs it if its deps, params or outs changed.
    ``env`` is added to the environment of the stage's command (e.g. ``RAY_ADDRESS``)."""
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", stage]
    if force:
        cmd.append("--force")
    proc = subprocess.run(
        cmd, cwd=root, env={**stage_env(), **(env or {})}, capture_output=True, text=True
    )
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
