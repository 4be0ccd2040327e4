"""The chosen model at work: every servable model is logged by its evaluation as an MLflow pyfunc
that predicts what segbench's predictor predicts; the report's reference is registered with the
alias ``champion``, which moves when the reference changes. (``mlflow models serve`` of the
champion a pipeline registered: tests/test_pipeline_e2e.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segbench.errors import SegbenchError
from segbench.evalmetrics import EvalMetrics
from segbench.evaluate import evaluate
from segbench.io import read_csv, read_image, read_mask
from segbench.modelcard import ModelCard
from segbench.postprocess import to_labels
from segbench.predict import load_predictor
from segbench.registry import register_reference, registered_name
from segbench.tracking import MODEL_URI_TAG
from segbench.training import train
from tests.conftest import seeded_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def evaluated(real_report, tiny_data):
    """The session's real report (a trained U-Net and Otsu, evaluated, reported, its reference
    registered): (eval dir, store, params, raw dir)."""
    from segbench.config import parse_params
    from tests.conftest import deep_update, only_models

    reports, models = real_report
    raw, _, params = tiny_data
    small = deep_update(only_models(params.model_dump(mode="json"), models), {})
    root = reports.parent
    return root / "eval", f"sqlite:///{root / 'mlflow.db'}", parse_params(small), raw


def _test_images(raw):
    tests = [r for r in read_csv(raw / "manifest.csv") if r["split"] == "test"]
    return [(read_image(raw / r["image"]), read_mask(raw / r["mask"])) for r in tests]


@pytest.mark.parametrize("name", ["unet", "otsu"])
def test_the_logged_pyfunc_predicts_what_the_predictor_predicts(evaluated, monkeypatch, name):
    import mlflow
    from mlflow.exceptions import MlflowException

    eval_dir, store, _, raw = evaluated
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mlflow.set_tracking_uri(store)
    metrics = EvalMetrics.read(eval_dir / name, stage=f"evaluate@{name}")
    run = mlflow.MlflowClient(store).get_run(ModelCard.read(eval_dir / name).mlflow_run_id)
    assert MODEL_URI_TAG in run.data.tags, "evaluate logged no model"
    model = mlflow.pyfunc.load_model(run.data.tags[MODEL_URI_TAG])
    # Logged as code, not as a pickle: loading it unpickles nothing.
    local = Path(mlflow.artifacts.download_artifacts(run.data.tags[MODEL_URI_TAG]))
    assert not list(local.rglob("*.pkl")) and list(local.rglob("segbench_model.py"))
    assert model.metadata.get_params_schema() is not None  # threshold, min_area
    predictor = load_predictor(eval_dir.parent / "models" / name)
    image, _ = _test_images(raw)[0]
    got = model.predict(image[None])
    want = to_labels(predictor.predict_proba(image), metrics.threshold, metrics.min_area)
    assert got.shape == (1, *image.shape[:2]) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[0], want)
    # The signature takes a batch of the data's images; another shape is refused.
    with pytest.raises(MlflowException):
        model.predict(image)
    # The threshold is a param of the call.
    if name == "unet":
        low = model.predict(image[None], params={"threshold": 0.05})
        assert low.sum() >= got.sum()


def test_an_oracle_model_is_evaluated_but_not_logged_as_a_servable_model(
    tiny_data, tmp_path, monkeypatch
):
    """SAM prompted from the reference masks has nothing to prompt it on a user's image."""
    from segbench.pyfunc import servable

    raw, tiles, params = tiny_data
    monkeypatch.setenv("MLFLOW_TRACKING_URI", seeded_store(tmp_path / "mlflow.db"))
    train("sam_box", params, tiles, tmp_path / "sam_box")
    metrics = evaluate(tmp_path / "sam_box", params, raw, tmp_path / "eval")
    assert metrics["oracle_prompts"]
    card = ModelCard.read(tmp_path / "sam_box")
    assert "oracle prompts" in servable(card)
    import mlflow

    run = mlflow.MlflowClient(seeded_store(tmp_path / "mlflow.db")).get_run(card.mlflow_run_id)
    assert MODEL_URI_TAG not in run.data.tags  # evaluated, but no model logged


def test_the_champion_alias_moves_with_the_reference(evaluated, monkeypatch):
    import mlflow

    eval_dir, store, params, _ = evaluated
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    client = mlflow.MlflowClient(store)
    name = registered_name(params)
    assert name == f"segbench-{params.data.synthetic.domain}"
    # The report registered its reference already.
    assert client.get_model_version_by_alias(name, "champion").tags["segbench.model"] in (
        "unet",
        "otsu",
    )
    unet = register_reference([{"model": "unet", "reference": True}], eval_dir, params)
    holder = client.get_model_version_by_alias(name, "champion")
    assert int(holder.version) == unet["version"] and holder.tags["segbench.model"] == "unet"
    # The same reference again: nothing new is registered.
    again = register_reference([{"model": "unet", "reference": True}], eval_dir, params)
    assert again["version"] == unet["version"] and not again["changed"]
    # Another reference: the alias moves to its version ...
    otsu = register_reference([{"model": "otsu", "reference": True}], eval_dir, params)
    assert otsu["changed"] and otsu["previous"] == unet["version"]
    holder = client.get_model_version_by_alias(name, "champion")
    assert int(holder.version) == otsu["version"] and holder.tags["segbench.model"] == "otsu"
    # ... and back, to the version registered before: no duplicate.
    back = register_reference([{"model": "unet", "reference": True}], eval_dir, params)
    assert back["version"] == unet["version"] and back["changed"]
    assert len(client.search_model_versions(f"name = '{name}'")) == 2
    off = params.with_overrides({"report.registry.enabled": False})
    assert register_reference([{"model": "unet", "reference": True}], eval_dir, off) is None


def test_registering_a_model_without_its_mlflow_run_is_one_plain_error(
    evaluated, tmp_path, monkeypatch
):
    eval_dir, _, params, _ = evaluated
    # Another (empty) tracking store: the model's run is not there.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", seeded_store(tmp_path / "other.db"))
    with pytest.raises(SegbenchError) as err:
        register_reference([{"model": "unet", "reference": True}], eval_dir, params)
    message = str(err.value)
    assert "unet" in message and "is not in the tracking store" in message
    assert "report.registry.enabled: false" in message and "\n" not in message
