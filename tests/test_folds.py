"""k-fold cross-validation (data.split.folds): folds dealt like splits, tiles both ways, one
model per fold validated on its own fold, and the report's spread over folds."""

from __future__ import annotations

import pytest

from segbench.config import parse_params
from segbench.data.dataset import load_tiles
from segbench.data.split import assign_folds
from segbench.errors import SegbenchError
from segbench.io import read_csv, read_json
from tests.conftest import SHRINK, deep_update, only_models, real_params_raw


def _raw(**split):
    raw = deep_update(real_params_raw(), SHRINK)
    raw["data"]["split"].update(split)
    return only_models(raw, ["otsu", "unet"])


def test_folds_are_grouped_balanced_and_stable():
    ids = [f"p{k // 2}_{k % 2}" for k in range(20)]  # ten patients, two images each
    groups = [i.split("_")[0] for i in ids]
    fg = [0.0 if k % 5 == 0 else k / 40 for k in range(20)]
    folds = assign_folds(ids, 3, seed=0, foreground=fg, groups=groups)
    for g in set(groups):  # a patient never crosses folds
        assert len({folds[i] for i, h in zip(ids, groups, strict=True) if h == g}) == 1
    sizes = sorted(sum(f == k for f in folds.values()) for k in range(3))
    assert sizes[-1] - sizes[0] <= 2  # at most one group apart
    again = assign_folds(ids[::-1], 3, seed=0, foreground=fg[::-1], groups=groups[::-1])
    assert again == folds  # the order of the records does not matter
    with pytest.raises(ValueError, match="3 folds need at least 3 groups"):
        assign_folds(ids[:4], 3, seed=0, groups=groups[:4])


def test_fewer_than_two_folds_is_refused_at_load():
    with pytest.raises(SegbenchError, match=r"data\.split\.folds"):
        parse_params(_raw(folds=1))


def test_more_folds_than_groups_stops_fetch_naming_the_key(tmp_path):
    from segbench.fetch import fetch

    params = parse_params(_raw(folds=12))  # 10 images, 9 of them train/val
    with pytest.raises(SegbenchError, match=r"^data\.split\.folds: 12 folds need at least 12"):
        fetch(params, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


@pytest.fixture(scope="module")
def two_folds(tmp_path_factory):
    """The shrunk data with data.split.folds: 2, fetched and tiled; unet (one epoch) trained
    per fold and evaluated, with Otsu beside it."""
    from segbench.evaluate import evaluate
    from segbench.fetch import fetch
    from segbench.prepare import prepare
    from segbench.training.repeats import train_repeats

    root = tmp_path_factory.mktemp("folds")
    raw = _raw(folds=2)
    raw["train"]["epochs"] = 1
    params = parse_params(raw)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("DVC_ROOT", str(root))
        fetch(params, root / "raw")
        prepare(params.prepare, root / "raw", root / "tiles")
        out = {
            m: train_repeats(m, params, root / "tiles", root / "models" / m)
            for m in ("otsu", "unet")
        }
        evals = {
            m: evaluate(root / "models" / m, params, root / "raw", root / "eval" / m)
            for m in ("otsu", "unet")
        }
    return root, out, evals


def test_fold_zero_is_the_validation_split_and_every_image_is_tiled_both_ways(two_folds):
    root, _, _ = two_folds
    manifest = read_csv(root / "raw" / "manifest.csv")
    pool = [r for r in manifest if r["split"] != "test"]
    assert {r["fold"] for r in pool} == {"0", "1"}
    assert all((r["fold"] == "0") is (r["split"] == "val") for r in pool)
    assert all(r["fold"] == "" for r in manifest if r["split"] == "test")
    tiles = read_csv(root / "tiles" / "manifest.csv")
    for split in ("train", "val"):  # every train/val image, tiled as training and as validation
        assert {r["source"] for r in tiles if r["split"] == split} == {r["id"] for r in pool}
    # Fold 1's validation tiles are its images; its training tiles are fold 0's.
    fold_of = {r["id"]: r["fold"] for r in pool}
    val1, _, _ = load_tiles(root / "tiles", "val", fold=1)
    train1, _, _ = load_tiles(root / "tiles", "train", fold=1)
    assert len(val1) == sum(r["split"] == "val" and fold_of[r["source"]] == "1" for r in tiles)
    assert len(train1) == sum(r["split"] == "train" and fold_of[r["source"]] == "0" for r in tiles)


def test_one_model_per_fold_each_validated_on_its_own_fold(two_folds):
    from segbench.comparison import comparison_rows, fmt
    from segbench.reporttext import headline

    root, out, evals = two_folds
    assert out["unet"]["folds"] == [0, 1] and out["unet"]["seeds"] == [0, 0]
    assert read_json(root / "models" / "unet" / "repeats" / "1" / "card.json")["fold"] == 1
    assert not (root / "models" / "otsu" / "repeats").exists()  # classical: fitted once
    m = evals["unet"]
    assert m["folds"] == [0, 1] and len(m["seed_val_scores"]) == 2
    seeds = read_csv(root / "eval" / "unet" / "seeds.csv")
    assert list(seeds[0]) == ["id", "fold_0_seed_0", "fold_1_seed_0"]
    rows = {r["model"]: r for r in comparison_rows(["otsu", "unet"], root / "eval")}
    assert fmt("seeds", rows["unet"]).endswith("(2 folds)")
    alone = {**rows["unet"], "reference": True}  # the headline of a table it leads
    assert "mean of its 2 cross-validation folds' models." in headline([alone])
