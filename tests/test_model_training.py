"""Per-model training settings: any key of `train` under a trained entry (`models.<m>.train`),
validated with its dotted key, used by that model alone, recorded in its card, in MLflow and in
its evaluation, and reached by the sweep's values for the swept entry."""

from __future__ import annotations

import pytest

from segbench.config import parse_params
from segbench.errors import SegbenchError
from segbench.sweep.space import trial_params
from tests.conftest import deep_update, only_models, real_params_raw


def raw_with(**entries) -> dict:
    raw = real_params_raw()
    for name, train in entries.items():
        raw["models"][name]["train"] = train
    return raw


def test_an_entry_sets_its_own_training_keys_and_the_rest_comes_from_train():
    params = parse_params(
        raw_with(unet={"epochs": 50, "batch_size": 20, "devices": 1, "plateau": {"patience": 7}})
    )
    own = params.entry("unet").train_config(params.train)
    assert (own.epochs, own.batch_size, own.plateau.patience) == (50, 20, 7)
    assert own.plateau.factor == params.train.plateau.factor and own.lr == params.train.lr
    assert params.entry("segformer").train_config(params.train) == params.train


@pytest.mark.parametrize(
    ("train", "says"),
    [
        ({"epoch": 5}, r"models\.unet\.train\.epoch: not a key of train"),
        ({"lr": 5}, r"models\.unet\.train\.lr: Input should be less than or equal to 1"),
        ({"warmup_epochs": 9}, r"models\.unet\.train\.warmup_epochs: 9 leaves no epoch"),
        ({"plateau": {"factor": 3}}, r"models\.unet\.train\.plateau\.factor"),
    ],
)
def test_a_bad_key_or_value_names_the_entry(train, says):
    with pytest.raises(SegbenchError, match=says) as err:
        parse_params(raw_with(unet=train))
    assert "\n" not in str(err.value)


def test_a_sam_entry_sets_loss_in_one_place_only():
    raw = raw_with(sam_lora={"loss": "dice", "epochs": 10})
    with pytest.raises(SegbenchError, match=r"models\.sam_lora\.train\.loss: also set as loss"):
        parse_params(raw)
    raw["models"]["sam_lora"]["loss"] = None
    params = parse_params(raw)
    own = params.entry("sam_lora").train_config(params.train)
    assert own.loss == "dice" and own.epochs == 10 and own.optimizer == "adamw"


def test_the_sweep_reaches_the_swept_entry_over_its_own_keys():
    params = parse_params(raw_with(sam_lora={"lr": 0.01, "epochs": 9}))
    trial = trial_params(params, {"train.lr": 0.0003, "model.rank": 16}, epochs=2)
    own = trial.entry("sam_lora").train_config(trial.train)
    assert (own.lr, own.epochs, trial.entry("sam_lora").rank) == (0.0003, 2, 16)
    assert trial.train == params.train  # nobody else's training changes


def test_per_model_epochs_and_batch_reach_training_mlflow_and_evaluation(
    tiny_data, tmp_path, monkeypatch, mlflow_store
):
    import mlflow

    from segbench.evaluate import evaluate
    from segbench.io import read_csv, read_json
    from segbench.modelcard import ModelCard
    from segbench.training import train

    raw_dir, tiles, params = tiny_data
    raw = deep_update(only_models(params.model_dump(mode="json"), ["unet"]), {})
    raw["train"]["epochs"] = 2
    raw["models"]["unet"]["train"] = {"epochs": 1, "batch_size": 2}
    params = parse_params(raw)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    train("unet", params, tiles, tmp_path / "unet")
    assert len(read_csv(tmp_path / "unet" / "history.csv")) == 1
    card = ModelCard.read(tmp_path / "unet")
    assert (card.train.epochs, card.train.batch_size) == (1, 2)
    run = mlflow.get_run(card.mlflow_run_id)
    assert run.data.params["train.epochs"] == "1" and run.data.params["train.batch_size"] == "2"
    evaluate(tmp_path / "unet", params, raw_dir, tmp_path / "eval")
    metrics = read_json(tmp_path / "eval" / "metrics.json")
    assert (metrics["train_epochs"], metrics["train_batch_size"]) == (1, 2)
