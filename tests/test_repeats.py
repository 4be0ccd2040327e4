"""train.repeats: a network trained with several seeds, evaluated per seed, and reported with
its seed-to-seed spread; the paired tests use per-image scores averaged over the seeds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from segbench.config import parse_params
from segbench.errors import SegbenchError
from segbench.io import read_csv, read_json, write_json
from tests.conftest import deep_update, only_models


def _params(tiny_data, **train):
    _, _, params = tiny_data
    raw = deep_update(
        only_models(params.model_dump(mode="json"), ["otsu", "unet"]),
        {"train": {"epochs": 1, **train}},
    )
    return parse_params(raw)


@pytest.fixture(scope="module")
def two_seeds(tiny_data, tmp_path_factory):
    """unet trained with train.repeats: 2 (seeds 0 and 1) and Otsu, both evaluated."""
    from segbench.evaluate import evaluate
    from segbench.training.repeats import train_repeats

    raw, tiles, _ = tiny_data
    params = _params(tiny_data, repeats=2)
    root = tmp_path_factory.mktemp("repeats")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("DVC_ROOT", str(root))
        out = {m: train_repeats(m, params, tiles, root / "models" / m) for m in ("otsu", "unet")}
        evals = {
            m: evaluate(root / "models" / m, params, raw, root / "eval" / m)
            for m in ("otsu", "unet")
        }
    return root, params, out, evals


def test_each_seed_is_a_whole_model_and_the_first_is_the_model_itself(two_seeds):
    root, _, out, _ = two_seeds
    unet = root / "models" / "unet"
    assert out["unet"]["seeds"] == [0, 1] and out["unet"]["repeats"] == 2
    assert read_json(unet / "repeats.json")["seeds"] == [0, 1]
    assert read_json(unet / "card.json")["train"]["seed"] == 0
    assert read_json(unet / "repeats" / "1" / "card.json")["train"]["seed"] == 1
    a = torch.load(unet / "weights.pt", weights_only=True)
    b = torch.load(unet / "repeats" / "1" / "weights.pt", weights_only=True)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # another seed, another model
    assert not (root / "models" / ".unet.repeats").exists()  # staging cleaned up
    # Otsu is deterministic: fitted once whatever repeats says.
    assert not (root / "models" / "otsu" / "repeats").exists() and "seeds" not in out["otsu"]


def test_evaluate_scores_every_seed_and_averages_them_per_image(two_seeds):
    root, _, _, evals = two_seeds
    m = evals["unet"]
    assert m["seeds"] == [0, 1] and len(m["seed_scores"]) == 2 and len(m["seed_val_scores"]) == 2
    assert m["seed_std"] == pytest.approx(abs(m["seed_scores"][0] - m["seed_scores"][1]) / 2**0.5)
    assert m["val_score"] == pytest.approx(sum(m["seed_val_scores"]) / 2)
    per_image = read_csv(root / "eval" / "unet" / "per_image.csv")
    seeds = read_csv(root / "eval" / "unet" / "seeds.csv")
    assert list(seeds[0]) == ["id", "seed_0", "seed_1"]
    for row, s in zip(per_image, seeds, strict=True):
        assert row["id"] == s["id"]
        assert float(row["score"]) == pytest.approx((float(s["seed_0"]) + float(s["seed_1"])) / 2)
        assert float(s["seed_0"]) == pytest.approx(float(row["dice_all"]))  # the row's own seed
    assert m["score"] == pytest.approx(sum(float(r["score"]) for r in per_image) / len(per_image))
    assert "seeds" not in evals["otsu"] and evals["otsu"]["score"] is not None


def test_the_table_shows_the_seed_spread(two_seeds):
    from segbench.comparison import comparison_rows, fmt

    root, _, _, _ = two_seeds
    rows = {r["model"]: r for r in comparison_rows(["otsu", "unet"], root / "eval")}
    assert fmt("seeds", rows["unet"]) == f"±{rows['unet']['seed_std']:.3f} (2 seeds)"
    assert fmt("seeds", rows["otsu"]) == "—"  # deterministic: nothing to repeat


def test_a_finished_seed_is_kept_when_training_runs_again(tiny_data, tmp_path, monkeypatch):
    """A killed run left seed 0 finished in staging: the next run trains only seed 1. (The
    trainings are stand-ins that write a model directory: what is tested is the staging.)"""
    from segbench.training import repeats as rep

    _, tiles, _ = tiny_data
    params = _params(tiny_data, repeats=2)
    trained, kill = [], {"seed 1": True}

    def stand_in(name, p, tiles_dir, out_dir, **kw):
        seed = p.entry(name).train_config(p.train).seed
        trained.append(seed)
        if seed == 1 and kill["seed 1"]:
            raise KeyboardInterrupt  # killed while seed 1 trains
        Path(out_dir).mkdir(parents=True, exist_ok=True)  # train() replaces a directory
        training = {"seconds": 1.0 + seed, "best_val_score": 0.5}
        write_json(Path(out_dir) / "card.json", {"seed": seed, "training": training})
        return {"train_seconds": 1.0 + seed, "best_val_score": 0.5}

    monkeypatch.setattr(rep, "train", stand_in)
    out = tmp_path / "models" / "unet"
    with pytest.raises(KeyboardInterrupt):
        rep.train_repeats("unet", params, tiles, out)
    assert trained == [0, 1]
    assert not out.exists()  # no half set of seeds where evaluate would find it
    trained.clear()
    kill["seed 1"] = False
    got = rep.train_repeats("unet", params, tiles, out)
    assert trained == [1]  # seed 0 came from staging
    assert read_json(out / "card.json")["seed"] == 0
    assert read_json(out / "repeats" / "1" / "card.json")["seed"] == 1
    assert got["seed_train_seconds"] == [1.0, 2.0]  # the kept seed's figures, from its card
    assert not (tmp_path / "models" / ".unet.repeats").exists()
    # Other settings: the staged seed is not kept.
    trained.clear()
    kill["seed 1"] = True
    with pytest.raises(KeyboardInterrupt):
        rep.train_repeats("unet", _params(tiny_data, repeats=2, lr=0.01), tiles, out)
    kill["seed 1"] = False
    rep.train_repeats("unet", _params(tiny_data, repeats=2, lr=0.002), tiles, out)
    assert trained == [0, 1, 0, 1]  # lr changed between the runs: seed 0 trained again


def test_repeats_below_one_is_refused_naming_the_key(tiny_data):
    with pytest.raises(SegbenchError, match=r"train\.repeats"):
        _params(tiny_data, repeats=0)


def test_the_report_says_how_often_networks_were_trained():
    from segbench.reporttext import method_note

    def note(**kw):
        return method_note(multiclass=False, alpha=0.05, resamples=100, seed=0, **kw)

    assert "Each network was trained once (train.repeats: 1)" in note(repeats=1)
    assert "Networks were trained 3 times (seeds train.seed, +1, ...)" in note(repeats=3)
    folds = note(repeats=6, folds=3)
    assert "k-fold cross-validation: one model per fold of 3" in folds and "2 seed(s)" in folds
