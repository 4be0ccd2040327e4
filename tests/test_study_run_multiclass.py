"""configs/study-multiclass-unet-segformer.yaml, shrunk, through `segbench study` and
`dvc repro` (tests/studies.py): three classes, Tversky, plateau, SegFormer's own devices."""

from __future__ import annotations

import pytest

from segbench.modelcard import ModelCard
from tests.studies import run_study

pytestmark = [pytest.mark.slow, pytest.mark.long]  # make test-long (tests/conftest.py)


def test_multiclass_study_runs_with_per_model_training_keys(tmp_path):
    run = run_study("study-multiclass-unet-segformer", tmp_path)
    assert list(run.params["models"]) == ["unet", "segformer"]
    assert list(run.params["ensembles"]) == ["ensemble"]
    # The study's SegFormer trains with its own batch (devices made 1 by the shrink).
    assert run.params["models"]["segformer"]["train"] == {"devices": 1, "batch_size": 4}
    for name in ("unet", "segformer"):
        card = ModelCard.read(run.repo / "models" / name)
        assert card.train.loss == "tversky" and card.train.scheduler == "plateau"
        assert card.num_classes == 3
    for name in ("unet", "segformer", "ensemble"):
        metrics = run.metrics(name)
        assert metrics["num_classes"] == 3 and 0.0 <= metrics["miou"] <= 1.0
    assert all(f'<tr data-model="{m}"' in run.html() for m in ("unet", "segformer", "ensemble"))
