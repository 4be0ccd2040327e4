"""The Prefect flow runs DVC's own stage graph, in graph order, as Prefect tasks.

The full flow run is the first half of tests/test_pipeline_e2e.py (one pipeline run serves both).
"""

import importlib.util

import pytest

from segbench.dag import StageFailed, repro_stage, stage_order
from tests.conftest import REPO, real_params_raw


def load_flow_module():
    spec = importlib.util.spec_from_file_location("pipeline_flow", REPO / "flows" / "pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_order_comes_from_dvc_yaml():
    order = stage_order(REPO)
    assert order[0] == "fetch" and order[1] == "prepare" and order[-1] == "report"
    models = tuple(real_params_raw()["models"])  # every entry, SAM's included
    assert {"otsu", "unet", "sam_box", "sam_lora"} <= set(models)
    for model in models:
        assert order.index(f"train@{model}") < order.index(f"evaluate@{model}")
        # The ensemble depends on the whole models/ directory: it comes after every train@.
        assert order.index(f"train@{model}") < order.index("ensemble@ensemble")
    assert order.index("ensemble@ensemble") < order.index("evaluate_ensemble@ensemble")
    assert len(order) == 3 + 2 * len(models) + 2


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
