"""The ensemble: weights and threshold chosen together on validation, on the per-image
criterion; never worse there than its best member, and that member itself where no mix helps."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from segbench.config import parse_params
from segbench.cost import count_parameters
from segbench.ensemble import _cost, _fit_record, _search
from segbench.errors import SegbenchError
from segbench.io import read_csv, read_image
from segbench.metrics import multiclass_metrics
from segbench.modelcard import ModelCard, TrainingSummary
from segbench.models.ensemble import Ensemble, search_weights, simplex_grid
from segbench.threshold import GRID
from tests.conftest import SHRINK, deep_update, only_models, real_params_raw, seeded_store


def test_simplex_grid_holds_every_vertex_and_sums_to_one():
    grid = simplex_grid(2, 0.1)
    assert grid.shape == (11, 2)
    assert len(simplex_grid(3, 0.1)) == 66 and len(simplex_grid(4, 0.25)) == 35
    np.testing.assert_allclose(simplex_grid(3, 0.1).sum(axis=1), 1.0)
    rows = {tuple(r) for r in simplex_grid(3, 0.5)}
    assert {(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (0.5, 0.5, 0.0)} <= rows


def _complementary_members(scale: float = 1.0):
    """Reference: left half foreground. Member A is confident and right on the top rows and
    unsure and wrong on the bottom rows; member B the other way round. Each alone gets some
    of the image wrong at every threshold; their even mix is right everywhere."""
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:, :4] = 1
    right = np.where(mask, 0.95, 0.05)
    wrong = np.where(mask, 0.40, 0.60)  # on the wrong side of 0.5, but only just
    a = np.vstack([right[:4], wrong[4:]])
    b = np.vstack([wrong[:4], right[4:]])
    return np.stack([a, b]) * scale, mask


def _dominant_and_noise(seed: int = 0):
    """Member A separates foreground (0.31) from background (0.29) perfectly, but only at
    threshold 0.3; member B is noise. Any weight on B blurs A's thin margin: A alone is
    strictly the best, and only at a threshold the search must find (0.5 finds nothing)."""
    rng = np.random.default_rng(seed)
    mask = (rng.random((16, 16)) < 0.4).astype(np.uint8)
    return np.stack([np.where(mask, 0.31, 0.29), rng.random((16, 16))]), mask


def _member(seconds: float, model: nn.Module):
    """A loaded member as :func:`segbench.ensemble._cost` reads it: its card and its model."""
    training = TrainingSummary(
        params_total=count_parameters(model)["params_total"],
        params_trainable=count_parameters(model)["params_trainable"],
        seconds=seconds,
        device="cpu",
        device_count=1,
        peak_memory_mb=1.0,
    )
    return SimpleNamespace(card=SimpleNamespace(training=training), model=model)


def test_an_even_mix_of_complementary_members_beats_both_and_does_not_collapse():
    stack, mask = _complementary_members()
    grid = simplex_grid(2, 0.1)
    search = search_weights([stack], [mask], grid)
    assert search.scores.shape == (11, len(GRID))
    row, column = search.best()
    np.testing.assert_allclose(grid[row], [0.5, 0.5])
    assert search.scores[row, column] == pytest.approx(1.0) and search.threshold(column) == 0.5
    alone = [search.scores[10].max(), search.scores[0].max()]  # rows (1, 0) and (0, 1)
    assert max(alone) < 0.9
    fit = _fit_record(["a", "b"], search, row, column, 1, 0.0)
    assert fit.collapsed_to is None and fit.weights == {"a": 0.5, "b": 0.5}


def test_a_strictly_better_member_takes_all_the_weight_at_its_own_threshold():
    stack, mask = _dominant_and_noise()
    grid = simplex_grid(2, 0.1)
    search = search_weights([stack], [mask], grid)
    row, column = search.best()
    assert search.scores[row, column] == 1.0
    assert search.scores[grid[:, 1] > 0].max() < 1.0  # any weight on the noise costs something
    fit = _fit_record(["unet", "segformer"], search, row, column, 1, 2.0)
    assert fit.weights == {"unet": 1.0, "segformer": 0.0} and fit.collapsed_to == "unet"
    assert fit.threshold == 0.3  # searched with the weights: at 0.5 nothing is found
    assert search.scores[row, GRID.index(0.5)] == 0.0
    assert fit.val_score == fit.member_val_score["unet"] == 1.0
    assert fit.member_val_score["segformer"] < 1.0
    assert fit.val_dice == fit.member_val_dice["unet"] == 1.0
    # The cost is the member that runs (the other, ten times dearer, never does) and the fit.
    members = {
        "unet": _member(10.0, nn.Conv2d(1, 1, 3)),
        "segformer": _member(100.0, nn.Conv2d(1, 8, 5)),
    }
    cost = _cost(fit, members, torch.device("cpu"))
    assert cost.seconds == pytest.approx(12.0) and cost.params_total == 10
    assert cost.params_trainable == 0


def test_ties_go_to_fewer_members_then_the_most_even_mix_then_the_threshold_nearest_a_half():
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[:2] = 1
    perfect = np.where(mask, 0.9, 0.1)
    useless = np.zeros((4, 4))  # predicts nothing
    grid = simplex_grid(2, 0.1)
    search = search_weights([np.stack([perfect, useless])], [mask], grid)
    # Every mix with weight >= 0.1 on the perfect member is perfect at some threshold: the
    # useless member adds nothing, so it is left out.
    assert (search.scores[grid[:, 0] >= 0.1].max(axis=1) == 1.0).all()
    row, column = search.best()
    np.testing.assert_allclose(grid[row], [1.0, 0.0])
    assert search.threshold(column) == 0.5
    # Among the mixes of both members, the most even perfect one, at the threshold nearest 0.5
    # that is perfect for it (0.5 x 0.9 = 0.45 on the foreground, 0.05 on the background).
    mixes = [g for g in range(len(grid)) if (grid[g] > 0).all()]
    row, column = search.best(mixes)
    np.testing.assert_allclose(grid[row], [0.5, 0.5])
    assert search.threshold(column) == 0.45


def test_empty_references_count_through_the_per_image_criterion():
    """An image with nothing to find scores 0 for the member that paints it, whatever the
    threshold it is painted at, and 1 for the member that leaves it empty."""
    empty = np.zeros((4, 4), dtype=np.uint8)
    full = np.ones((4, 4), dtype=np.uint8)
    painter = np.full((4, 4), 0.9)
    careful = np.where(full, 0.9, 0.1)
    stacks = [np.stack([painter, np.full((4, 4), 0.1)]), np.stack([painter, careful])]
    search = search_weights(stacks, [empty, full], simplex_grid(2, 0.5))
    row, column = search.best()
    np.testing.assert_allclose(search.grid[row], [0.0, 1.0])
    assert search.scores[row, column] == 1.0
    assert search.scores[2].max() == 0.5  # the painter alone: 0 on the empty image, 1 on the full


def test_several_classes_are_scored_by_the_mean_per_image_miou_of_the_argmax():
    rng = np.random.default_rng(1)
    masks = [rng.integers(0, 3, size=(8, 8)).astype(np.uint8) for _ in range(2)]
    masks[1][:2] = 255  # not annotated: counts for nothing
    wrong = [np.where(m == 255, 0, (m + 1) % 3).astype(np.uint8) for m in masks]

    def one_hot(labels):
        return np.eye(3)[labels].transpose(2, 0, 1) * 0.7 + 0.1  # the class 0.8, others 0.1

    stacks = [
        np.stack([one_hot(np.where(m == 255, 0, m)), one_hot(w)])
        for m, w in zip(masks, wrong, strict=True)
    ]
    grid = simplex_grid(2, 0.1)
    search = search_weights(stacks, masks, grid)
    assert search.thresholds is None and search.scores.shape == (11, 1)
    row, column = search.best()
    np.testing.assert_allclose(grid[row], [1.0, 0.0])  # right where the other is wrong: alone
    assert search.threshold(column) is None and search.scores[row, 0] == 1.0
    expected = np.mean(
        [
            multiclass_metrics(w, m, 3, ignore_index=255)["miou"]
            for w, m in zip(wrong, masks, strict=True)
        ]
    )
    assert search.scores[0, 0] == pytest.approx(expected)  # row (0, 1): the wrong member


@pytest.mark.parametrize(
    ("weights", "tune", "expected"),
    [
        (None, "tune", ([0.5, 0.5], 0.4, 11)),
        ([1, 1], "tune", ([0.5, 0.5], 0.4, 3)),
        ([3, 1], 0.5, ([0.75, 0.25], 0.5, 3)),
    ],
    ids=["searched", "fixed-weights", "fixed-threshold"],
)
def test_fixed_weights_or_a_fixed_threshold_narrow_the_search(weights, tune, expected):
    """Complementary members at 0.6 of their confidence: their even mix is perfect only below
    0.5 (foreground 0.405, background 0.195), so the searched threshold is 0.4."""
    stack, mask = _complementary_members(scale=0.6)
    entry = SimpleNamespace(members=["a", "b"], weight_step=0.1, weights=weights)
    params = SimpleNamespace(evaluate=SimpleNamespace(threshold=tune))
    search, row, column = _search(entry, params, [stack], [mask])
    mix, threshold, tried = expected
    np.testing.assert_allclose(search.grid[row], mix)
    assert search.threshold(column) == threshold and len(search.grid) == tried
    assert search.thresholds == (GRID if tune == "tune" else (0.5,))


def test_a_member_at_weight_zero_is_not_run():
    class Refuses(nn.Module):
        def forward(self, x):
            raise AssertionError("a member at weight 0 ran")

    conv = nn.Conv2d(1, 1, 3, padding=1)
    ens = Ensemble({"a": conv, "b": Refuses()}, [1.0, 0.0])
    x = torch.randn(1, 1, 8, 8)
    torch.testing.assert_close(torch.sigmoid(ens(x)), torch.sigmoid(conv(x)), atol=1e-6, rtol=0)


def test_the_module_returns_logits_of_the_weighted_mean_probability():
    torch.manual_seed(0)
    a, b = nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1)
    ens = Ensemble({"a": a, "b": b}, [3.0, 1.0])  # normalised to 0.75 / 0.25
    x = torch.randn(2, 1, 16, 16)
    expected = 0.75 * torch.sigmoid(a(x)) + 0.25 * torch.sigmoid(b(x))
    torch.testing.assert_close(torch.sigmoid(ens(x)), expected, atol=1e-6, rtol=1e-5)
    assert [n for n, _ in ens.named_buffers()] == ["weights"]  # chosen, not learned
    with pytest.raises(ValueError, match="2 members but 1 weights"):
        Ensemble({"a": a, "b": b}, [1.0])


def _ens(**block) -> dict:
    return {"members": ["unet", "segformer"], "weights": None, "weight_step": 0.1, **block}


@pytest.mark.parametrize(
    ("ensembles", "message"),
    [
        ({"uformer": _ens(members=["unet"])}, r"ensembles\.uformer\.members.*at least 2"),
        ({"uformer": {"members": ["unet", "segformer"]}}, r"ensembles\.uformer: missing keys"),
        ({"uformer": _ens(members=["unet", "otsu"])}, r"otsu is a classical model"),
        ({"uformer": _ens(members=["unet", "segnet"])}, r"members: segnet not under models"),
        ({"uformer": _ens(weights=[1.0])}, r"ensembles\.uformer.*1 given for 2 members"),
        ({"uformer": _ens(weight_step=0.3)}, r"weight_step.*divide 1"),
        ({"unet": _ens()}, r"ensembles\.unet: the name is also"),
        (
            {"uformer": _ens(members=["unet", "attention_unet"])},
            r"ensembles\.uformer\.members: attention_unet not under models",
        ),
    ],
)
def test_bad_ensemble_params_name_the_key(ensembles, message):
    raw = only_models(real_params_raw(), ["otsu", "unet", "segformer"])
    raw["ensembles"] = ensembles
    with pytest.raises(SegbenchError, match=message):
        parse_params(raw)


def test_an_ensemble_under_models_is_pointed_to_ensembles():
    raw = real_params_raw()
    raw["models"]["ensemble"] = {"members": ["unet", "segformer"], "weights": None}
    with pytest.raises(SegbenchError, match=r"models\.ensemble: ensembles are not trained"):
        parse_params(raw)


@pytest.fixture(scope="module")
def fitted(tiny_data, tmp_path_factory):
    """U-Net and SegFormer trained briefly on the tiny data, then their ensemble fitted."""
    from segbench.ensemble import fit_ensemble
    from segbench.training import train

    raw, tiles, _ = tiny_data
    uformer = {"members": ["unet", "segformer"], "weights": None, "weight_step": 0.1}
    params = parse_params(
        deep_update(
            deep_update(real_params_raw(), SHRINK),
            {"train": {"epochs": 1}, "ensembles": {"uformer": uformer}},
        )
    )
    root = tmp_path_factory.mktemp("ens")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", seeded_store(root / "mlflow.db"))
        for member in ("unet", "segformer"):
            train(member, params, tiles, root / "models" / member)
        metrics = fit_ensemble("uformer", params, raw, root / "models", root / "ens" / "uformer")
    return raw, root, params, metrics


@pytest.mark.slow
def test_fitted_ensemble_is_at_least_its_best_member_on_validation(fitted):
    _, root, _, metrics = fitted
    best_member = max(metrics["val_score_unet"], metrics["val_score_segformer"])
    assert metrics["val_score"] >= best_member
    assert metrics["weight_unet"] + metrics["weight_segformer"] == pytest.approx(1.0)
    assert metrics["threshold"] in GRID
    used = [m for m in ("unet", "segformer") if metrics[f"weight_{m}"] > 0]
    assert metrics["collapsed_to"] == (used[0] if len(used) == 1 else None)
    assert metrics["params_trainable"] == 0
    members = [ModelCard.read(root / "models" / m).training for m in used]
    assert metrics["params_total"] == sum(m.params_total for m in members)  # only those run
    assert metrics["train_seconds"] > sum(m.seconds for m in members)
    card = ModelCard.read(root / "ens" / "uformer")
    assert card.ensemble.threshold == metrics["threshold"]
    assert card.ensemble.val_score == metrics["val_score"]
    search = read_csv(root / "ens" / "uformer" / "search.csv")
    assert len(search) == 11 * len(GRID)  # every mix at every threshold
    assert max(float(r["val_score"]) for r in search) == pytest.approx(metrics["val_score"])


@pytest.mark.slow
def test_fitted_ensemble_predicts_the_weighted_mean_of_its_members(fitted):
    """The saved model directory is self-contained: it loads like any trained model and its
    probabilities are the members' own, mixed with the chosen weights."""
    from segbench.predict import load_predictor

    raw, root, _, metrics = fitted
    rec = next(r for r in read_csv(raw / "manifest.csv") if r["split"] == "test")
    image = read_image(raw / rec["image"])
    ens = load_predictor(root / "ens" / "uformer").predict_proba(image)
    mix = sum(
        metrics[f"weight_{m}"] * load_predictor(root / "models" / m).predict_proba(image)
        for m in ("unet", "segformer")
    )
    np.testing.assert_allclose(ens, mix, atol=1e-5)
    card = ModelCard.read(root / "ens" / "uformer")
    assert card.name == "uformer" and card.kind == "ensemble"
    assert set(card.members) == set(card.entry.members) == {"unet", "segformer"}
    assert card.members["unet"] == ModelCard.read(root / "models" / "unet")
    assert card.ensemble.weights == {m: metrics[f"weight_{m}"] for m in ("unet", "segformer")}


@pytest.mark.slow
def test_fixed_weights_are_scored_not_searched(fitted, tmp_path):
    from segbench.ensemble import fit_ensemble

    raw, root, params, _ = fitted
    fixed = params.with_overrides({"ensembles.uformer.weights": [3, 1]})
    metrics = fit_ensemble("uformer", fixed, raw, root / "models", tmp_path / "e")
    assert metrics["weight_unet"] == pytest.approx(0.75) and metrics["collapsed_to"] is None
    assert metrics["weights_tried"] == 3  # each member alone, and the given mix
    assert metrics["threshold"] in GRID  # only the threshold is searched


def test_missing_member_is_a_clear_error(tiny_data, tmp_path):
    from segbench.ensemble import fit_ensemble

    raw, _, _ = tiny_data
    raw_params = deep_update(real_params_raw(), SHRINK)
    params = parse_params(raw_params)
    with pytest.raises(SegbenchError, match=r"models/unet: no trained model.*train@unet"):
        fit_ensemble("ensemble", params, raw, tmp_path / "models", tmp_path / "out")
    assert not (tmp_path / "out").exists()
