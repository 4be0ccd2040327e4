"""configs/study-ultrasound-sam-vs-unet.yaml, shrunk (the hub dataset replaced by the synthetic
ultrasound frames), through `segbench study` and `dvc repro` (tests/studies.py)."""

from __future__ import annotations

import mlflow
import pytest

from segbench.modelcard import ModelCard
from tests.studies import run_study

pytestmark = [pytest.mark.slow, pytest.mark.long]  # make test-long (tests/conftest.py)


def test_ultrasound_study_runs_with_per_model_epochs_and_says_what_to_download(tmp_path):
    run = run_study("study-ultrasound-sam-vs-unet", tmp_path)
    # Applied on a machine without the dataset or the checkpoint: the study says what to get.
    assert "save_to_disk('data/hub/breast-cancer')" in run.applied
    assert "sam_vit_b_01ec64.pth" in run.applied
    assert list(run.params["models"]) == ["unet", "sam_decoder"]
    for name in ("unet", "sam_decoder"):
        card = ModelCard.read(run.repo / "models" / name)
        assert card.train.epochs == 1 and card.train.loss == "dice"  # shrunk from 50 / 10
        assert card.train.optimizer == "adam" and card.train.scheduler == "none"
        assert 0.0 <= run.metrics(name)["dice"] <= 1.0
    assert run.metrics("sam_decoder")["oracle_prompts"] is True  # box prompts
    # MLflow holds each model's own training settings (the per-model keys, shrunk).
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    for name in ("unet", "sam_decoder"):
        record = client.get_run(ModelCard.read(run.repo / "models" / name).mlflow_run_id)
        assert record.data.tags["dvc_stage"] == f"train@{name}"
        assert record.data.params["train.epochs"] == "1"
        assert record.data.params["train.batch_size"] == "4"
