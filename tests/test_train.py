"""Training: the loss goes down, the best checkpoint is kept, and MLflow records the run."""

import csv
from pathlib import Path

import mlflow
import pytest
import torch

from segbench.evaluate import evaluate
from segbench.io import read_json
from segbench.modelcard import ModelCard
from segbench.training import train
from tests.conftest import seeded_store

# The module's tests share one trained U-Net: on one xdist worker it is trained once.
pytestmark = pytest.mark.xdist_group("trained_unet")


# A three-level U-Net: the same training code as the shipped five-level one, in half the time.
THREE_LEVELS = {"models.unet.encoder_depth": 3, "models.unet.decoder_channels": [32, 16, 8]}


@pytest.fixture(scope="module")
def unet_store(tmp_path_factory) -> str:
    """The MLflow store of the module's one trained U-Net (trained once: it takes seconds)."""
    return seeded_store(tmp_path_factory.mktemp("unet_mlflow") / "mlflow.db")


@pytest.fixture(scope="module")
def trained_unet(tiny_data, tmp_path_factory, unet_store):
    raw, tiles, params = tiny_data
    params = params.with_overrides(THREE_LEVELS)
    out = tmp_path_factory.mktemp("unet") / "models" / "unet"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", unet_store)
        metrics = train("unet", params, tiles, out)
    return raw, out, params, metrics


def test_two_epochs_lower_the_loss(trained_unet):
    _, out, params, metrics = trained_unet
    with open(out / "history.csv") as fh:
        history = list(csv.DictReader(fh))
    assert len(history) == params.train.epochs == 2
    assert float(history[1]["train_loss"]) < float(history[0]["train_loss"])
    assert float(history[0]["lr"]) == params.train.lr  # cosine schedule: starts at train.lr
    assert float(history[1]["lr"]) < params.train.lr  # ... and anneals
    best = max(history, key=lambda r: float(r["val_dice"]))
    assert metrics["best_epoch"] == int(best["epoch"])
    assert metrics["params_total"] == metrics["params_trainable"] > 1_000_000


def test_checkpoint_is_a_plain_state_dict(trained_unet):
    _, out, params, metrics = trained_unet
    state = torch.load(out / "weights.pt", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    card = ModelCard.read(out)
    assert card.entry.model == "unet" and card.entry.encoder_name == "resnet18"
    assert card.train == params.train and card.prepare == params.prepare
    assert card.training.best_epoch == metrics["best_epoch"] and card.mlflow_run_id


def test_mlflow_run_holds_params_metrics_checkpoint_and_test_metrics(
    trained_unet, unet_store, monkeypatch, tmp_path
):
    raw, out, params, _ = trained_unet
    monkeypatch.setenv("MLFLOW_TRACKING_URI", unet_store)
    evaluate(out, params, raw, tmp_path / "eval" / "unet")
    run_id = ModelCard.read(out).mlflow_run_id
    mlflow.set_tracking_uri(unet_store)
    run = mlflow.get_run(run_id)
    assert run.data.params["train.lr"] == str(params.train.lr)
    assert run.data.params["entry.encoder_name"] == "resnet18"
    assert "val_dice" in run.data.metrics and "test_dice" in run.data.metrics
    assert run.data.tags["dvc_stage"] == "train@unet"
    assert run.data.tags["evaluate.dvc_stage"] == "evaluate@unet"
    assert len(run.data.tags["data_version"]) == 16
    history = mlflow.MlflowClient().get_metric_history(run_id, "val_dice")
    assert [m.step for m in history] == [1, 2]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "model")}
    assert "model/weights.pt" in artifacts
    assert run.info.artifact_uri.startswith("file:///")


def test_otsu_fits_without_training(tiny_data, tmp_path):
    raw, tiles, params = tiny_data
    metrics = train("otsu", params, tiles, tmp_path / "otsu")
    assert metrics["params_total"] == 0
    assert read_json(tmp_path / "otsu" / "state.json")["polarity"] in ("bright", "dark")
    result = evaluate(tmp_path / "otsu", params, raw, tmp_path / "eval_otsu")
    assert 0 < result["dice"] < 1
    assert (tmp_path / "eval_otsu" / "pred").is_dir()


def test_cli_predict_writes_full_size_masks(trained_unet, tmp_path):
    from segbench.cli import main
    from segbench.io import read_csv, read_image, read_mask

    raw, out, _, _ = trained_unet
    rec = read_csv(raw / "manifest.csv")[0]
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / Path(rec["image"]).name).symlink_to(raw / rec["image"])
    main(["predict", str(out), str(tmp_path / "images"), str(tmp_path / "pred")])
    mask = read_mask(tmp_path / "pred" / f"{Path(rec['image']).stem}.png")
    assert mask.shape == read_image(raw / rec["image"]).shape
    assert 0 < mask.mean() < 1


def test_cli_unknown_model_is_a_clean_error(tiny_data, tmp_path, capsys):
    from segbench.cli import main

    _, tiles, _ = tiny_data
    with pytest.raises(SystemExit) as info:
        main(["train", "segnet", "--tiles", str(tiles), "--out", str(tmp_path / "m")])
    assert info.value.code == 2
    assert "models.segnet: not configured (configured: otsu, sobel, canny, unet, " in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "m").exists()
    with pytest.raises(SystemExit):
        main(["train", "ensemble", "--tiles", str(tiles), "--out", str(tmp_path / "m")])
    assert "ensembles are not trained" in capsys.readouterr().err


def test_online_augmentation_trains_from_plain_tiles(tiny_data, tmp_path):
    from segbench.config import parse_params
    from segbench.prepare import prepare
    from tests.conftest import SHRINK, deep_update, real_params_raw

    raw, _, _ = tiny_data
    online = {
        "prepare": {"augment": {"mode": "online", "rotate": {"p": 1.0}}},
        "train": {"epochs": 1},
    }
    params = parse_params(deep_update(deep_update(real_params_raw(), SHRINK), online))
    params = params.with_overrides(THREE_LEVELS)
    summary = prepare(params.prepare, raw, tmp_path / "tiles")
    assert summary["augment"] == "online"
    metrics = train("unet", params, tmp_path / "tiles", tmp_path / "unet")
    assert metrics["best_epoch"] == 1 and 0 <= metrics["best_val_dice"] <= 1
    assert ModelCard.read(tmp_path / "unet").prepare.augment.mode == "online"
