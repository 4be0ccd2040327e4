"""The Prefect flow runs DVC's own stage graph, in graph order, as Prefect tasks."""

import importlib.util

import pytest

from segbench.dag import StageFailed, repro_stage, stage_order
from tests.conftest import REPO


def load_flow_module():
    spec = importlib.util.spec_from_file_location("pipeline_flow", REPO / "flows" / "pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_order_comes_from_dvc_yaml():
    order = stage_order(REPO)
    assert order[0] == "fetch" and order[1] == "prepare" and order[-1] == "report"
    for model in ("otsu", "unet"):
        assert order.index(f"train@{model}") < order.index(f"evaluate@{model}")
    assert len(order) == 7


@pytest.mark.slow
def test_flow_runs_every_stage_and_returns_metrics(repo_copy, prefect_server):
    from prefect.client.orchestration import get_client

    flow_module = load_flow_module()
    metrics = flow_module.pipeline(root=str(repo_copy))
    assert set(metrics) == {"eval/otsu/metrics.json", "eval/unet/metrics.json"}
    assert (repo_copy / "reports" / "report.html").is_file()

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs()
    done = sorted(
        (r for r in runs if r.state and r.state.is_completed()), key=lambda r: r.start_time
    )
    names = [r.name for r in done if r.name in stage_order(repo_copy)]
    assert names == stage_order(repo_copy)


def test_user_errors_are_not_retried(repo_copy):
    params = repo_copy / "params.yaml"
    params.write_text(params.read_text().replace("epochs: 2", "epochs: 0"))
    with pytest.raises(StageFailed) as info:
        repro_stage("fetch", repo_copy)
    assert info.value.user_error and "train.epochs" in str(info.value)
    flow_module = load_flow_module()
    assert not flow_module._retry_unless_user_error(None, None, _FailedState(info.value))


class _FailedState:
    def __init__(self, exc):
        self.exc = exc

    def result(self, raise_on_failure=True):
        return self.exc
