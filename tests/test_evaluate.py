"""evaluate(): threshold tuned on validation, small components removed, per-image metrics that
binary_metrics reproduces from the saved masks, intervals and cost figures."""

import csv
import math

import numpy as np
import pytest

from segbench.evaluate import evaluate, per_image_fields
from segbench.io import read_csv, read_json, read_mask
from segbench.metrics import binary_metrics
from segbench.modelcard import ModelCard
from segbench.threshold import GRID
from segbench.training import train
from tests.conftest import seeded_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def unet_dir(tiny_data, tmp_path_factory):
    _, tiles, params = tiny_data
    out = tmp_path_factory.mktemp("eval_unet") / "unet"
    store = out.parent / "mlflow.db"
    params = params.with_overrides({"train.epochs": 1})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", seeded_store(store))
        train("unet", params, tiles, out)
    return out, f"sqlite:///{store}"


def _with(params, **evaluate):
    return params.with_overrides({f"evaluate.{k}": v for k, v in evaluate.items()})


def _evaluate(unet_dir, tiny_data, out, monkeypatch, **evaluate_params):
    model, store = unet_dir
    raw, _, params = tiny_data
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    return evaluate(model, _with(params, **evaluate_params), raw, out)


def test_threshold_tuned_on_validation_is_recorded(
    unet_dir, tiny_data, tmp_path, monkeypatch, capsys
):
    m = _evaluate(unet_dir, tiny_data, tmp_path / "e", monkeypatch, threshold="tune")
    assert m["threshold_tuned"] is True and m["threshold"] in GRID
    curve = read_csv(tmp_path / "e" / "threshold.csv")
    assert [float(r["threshold"]) for r in curve] == list(GRID)
    # Chosen on the criterion models are ranked on: the mean per-image Dice over all images.
    best = max(float(r["val_score"]) for r in curve)
    chosen = next(float(r["val_score"]) for r in curve if float(r["threshold"]) == m["threshold"])
    assert chosen == pytest.approx(best)
    # ... and scored there on the validation images: the reference is chosen on that.
    assert m["val_score"] == pytest.approx(best, abs=1e-6)
    on_disk = read_json(tmp_path / "e" / "metrics.json")
    assert on_disk["threshold"] == m["threshold"] and on_disk["blend"] == "gaussian"
    # One test image in the shrunk data: flagged, warned about, and no interval from one value.
    assert m["small_test_set"] and "only 1 test images" in capsys.readouterr().err
    assert on_disk["dice_ci_low"] is None


def test_per_image_rows_are_binary_metrics_of_the_saved_masks(
    unet_dir, tiny_data, tmp_path, monkeypatch
):
    raw = tiny_data[0]
    m = _evaluate(unet_dir, tiny_data, tmp_path / "e", monkeypatch, threshold=0.5)
    assert m["threshold"] == 0.5 and not m["threshold_tuned"]
    assert read_csv(tmp_path / "e" / "threshold.csv") == []  # header only: nothing tuned
    with open(tmp_path / "e" / "per_image.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and list(rows[0]) == per_image_fields(2)
    manifest = {r["id"]: r for r in read_csv(raw / "manifest.csv")}
    for row in rows:
        pred = read_mask(tmp_path / "e" / "pred" / f"{row['id']}.png")
        ref = read_mask(raw / manifest[row["id"]]["mask"])
        assert pred.shape == ref.shape
        expected = binary_metrics(pred, ref)
        for key in ("dice", "iou", "mpa", "miou", "precision", "recall", "tp", "fn"):
            got, want = float(row[key]) if row[key] != "nan" else math.nan, expected[key]
            assert got == pytest.approx(want, nan_ok=True), key
    # Cost: training's figures travel with the test metrics, inference's are measured.
    trained = ModelCard.read(unet_dir[0]).training
    assert m["params_total"] == trained.params_total > 0
    assert m["train_seconds"] == trained.seconds
    # The evaluation directory describes its row alone: the card and history travel with it.
    assert ModelCard.read(tmp_path / "e") == ModelCard.read(unet_dir[0])
    assert read_csv(tmp_path / "e" / "history.csv") == read_csv(unet_dir[0] / "history.csv")
    assert m["images_per_second"] > 0 and m["peak_memory_mb"] > 0 and m["device"] == "cpu"


def test_small_components_are_removed(unet_dir, tiny_data, tmp_path, monkeypatch):
    kept = _evaluate(unet_dir, tiny_data, tmp_path / "a", monkeypatch, threshold=0.5)
    big = 10**9  # larger than any image: every component goes
    gone = _evaluate(unet_dir, tiny_data, tmp_path / "b", monkeypatch, threshold=0.5, min_area=big)
    assert kept["n_empty_prediction"] == 0
    assert gone["n_empty_prediction"] == gone["n_images"] and gone["min_area"] == big
    for path in (tmp_path / "b" / "pred").iterdir():
        assert not read_mask(path).any()


def test_mean_and_gaussian_blending_differ_only_slightly(
    unet_dir, tiny_data, tmp_path, monkeypatch
):
    mean = _evaluate(unet_dir, tiny_data, tmp_path / "m", monkeypatch, threshold=0.5, blend="mean")
    gauss = _evaluate(unet_dir, tiny_data, tmp_path / "g", monkeypatch, threshold=0.5)
    assert mean["blend"] == "mean" and gauss["blend"] == "gaussian"
    assert abs(mean["dice"] - gauss["dice"]) < 0.05
    a = np.concatenate([read_mask(p).ravel() for p in sorted((tmp_path / "m" / "pred").iterdir())])
    b = np.concatenate([read_mask(p).ravel() for p in sorted((tmp_path / "g" / "pred").iterdir())])
    assert (a != b).any()  # the blend changes the seams between windows
