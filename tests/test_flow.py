"""The Prefect flows run DVC's own stage graph, in graph order, as Prefect tasks, and only the
stages that DVC's status (or a stage upstream that ran) says need it.

The full flow run is the first half of tests/test_pipeline_e2e.py (one pipeline run serves both);
runs through a served deployment, up-to-date skips included, are in tests/test_deploy.py.
"""

import importlib.util
import subprocess
import sys

import pytest

from segbench.dag import StageFailed, StageGraph, read_graph, repro_stage, repro_stages, stage_order
from segbench.errors import SegbenchError
from tests.conftest import REPO, real_params_raw, venv_env


def load_flow_module(name: str = "pipeline"):
    """flows/<name>.py as a module; flows/ is on sys.path meanwhile, as it is for the script
    (flows/sweep.py imports flows/pipeline.py)."""
    spec = importlib.util.spec_from_file_location(f"{name}_flow", REPO / "flows" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO / "flows"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "flows"))
    return module


def test_stage_order_comes_from_dvc_yaml():
    order = stage_order(REPO)
    assert order[:7] == ["code", "check", "fetch", "prepare", "sweep_plan", "sweep", "promote"]
    assert order[-1] == "report"
    models = tuple(real_params_raw()["models"])  # every entry, SAM's included
    assert {"otsu", "unet", "sam_box", "sam_lora"} <= set(models)
    for model in models:
        assert order.index(f"train@{model}") < order.index(f"evaluate@{model}")
        # The ensemble depends on the whole models/ directory: it comes after every train@.
        assert order.index(f"train@{model}") < order.index("ensemble@ensemble")
    assert order.index("ensemble@ensemble") < order.index("evaluate_ensemble@ensemble")
    assert len(order) == 8 + 2 * len(models) + 2


def test_targets_select_their_upstream_in_graph_order():
    graph = read_graph(REPO)
    assert graph.select(None) == graph.select([]) == list(graph.order)
    # check validates all of params.yaml before any stage can delete an output.
    assert graph.select(["prepare"]) == ["code", "check", "fetch", "prepare"]
    # train@ reads the sweep's promoted values, so the sweep is upstream of every model.
    assert graph.select(["evaluate@unet"]) == [
        "code",
        "check",
        "fetch",
        "prepare",
        "sweep_plan",
        "sweep",
        "promote",
        "train@unet",
        "evaluate@unet",
    ]
    # A foreach group names all of its stages.
    trains = [s for s in graph.order if s.startswith("train@")]
    assert [s for s in graph.select(["train"]) if s.startswith(("train@", "evaluate"))] == trains


def test_unknown_targets_list_the_valid_stages():
    with pytest.raises(SegbenchError) as info:
        read_graph(REPO).select(["prepare", "trian@unet"])
    message = str(info.value)
    assert "'trian@unet'" in message and "'prepare'" not in message
    assert "train@unet" in message and "report" in message  # the valid names


@pytest.mark.slow  # a process importing Prefect (~5 s)
def test_unknown_targets_on_the_command_line_are_one_line():
    # The command line says so in one line, before any flow run starts.
    proc = subprocess.run(
        [sys.executable, "flows/pipeline.py", "--targets", "trian@unet"],
        cwd=REPO,
        env=venv_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown stage 'trian@unet'")
    assert "Traceback" not in proc.stderr


@pytest.mark.slow  # imports the Prefect flows (~2 s)
def test_sweep_flow_runs_the_sweep_its_upstream_and_promote():
    sweep_flow = load_flow_module("sweep")
    graph = read_graph(REPO)
    selected = graph.select(sweep_flow.sweep_targets(graph))
    assert selected == ["code", "check", "fetch", "prepare", "sweep_plan", "sweep", "promote"]
    without = StageGraph(("fetch", "prepare"), {"fetch": frozenset(), "prepare": {"fetch"}})
    with pytest.raises(SegbenchError, match=r"no stage named 'sweep'.*fetch, prepare"):
        sweep_flow.sweep_targets(without)
    # The sweep reuses the pipeline's task and its retry rule, not a copy of them.
    pipeline_flow = sys.modules["pipeline"]
    assert sweep_flow.run_stages is pipeline_flow.run_stages
    assert pipeline_flow.run_stage.retry_condition_fn is pipeline_flow._retry_unless_user_error


def test_only_changed_stages_and_what_follows_a_run_start():
    """The rule that makes a no-op run fast, on a small graph: a stage starts if DVC said it
    changed, it is forced, or a stage it depends on really ran (DVC's "didn't change" does not
    count)."""
    graph = StageGraph(
        ("a", "b", "c", "d", "e"),
        {"a": set(), "b": {"a"}, "c": {"b"}, "d": set(), "e": {"d"}},
    )
    started = []

    def run(stage: str, force: bool) -> str:
        started.append((stage, force))
        ran = stage in {"a", "e"} or force
        return f"Running stage '{stage}'" if ran else f"Stage '{stage}' didn't change, skipping"

    outcome = repro_stages(graph, graph.order, changed={"a", "d"}, force={"e"}, run=run)
    assert started == [("a", False), ("b", False), ("d", False), ("e", True)]
    assert outcome == {
        "a": "ran",
        "b": "unchanged",
        "c": "up to date",
        "d": "unchanged",
        "e": "ran",
    }


@pytest.mark.slow  # two real `dvc repro` runs
def test_user_errors_are_not_retried(repo_copy):
    params = repo_copy / "params.yaml"
    params.write_text(params.read_text().replace("epochs: 2", "epochs: 0"))
    repro_stage("code", repo_copy)  # check depends on the digest of its code
    with pytest.raises(StageFailed) as info:
        repro_stage("check", repo_copy)  # every key is checked there, before any stage
    assert info.value.user_error and "train.epochs" in str(info.value)
    flow_module = load_flow_module()
    assert not flow_module._retry_unless_user_error(None, None, _FailedState(info.value))


class _FailedState:
    def __init__(self, exc):
        self.exc = exc

    def result(self, raise_on_failure=True):
        return self.exc
