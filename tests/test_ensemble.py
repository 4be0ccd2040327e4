"""The ensemble: weights chosen on validation, never worse there than its best member."""

import numpy as np
import pytest
import torch
from torch import nn

from segbench.config import parse_params
from segbench.errors import SegbenchError
from segbench.io import read_csv, read_image
from segbench.modelcard import ModelCard
from segbench.models.ensemble import Ensemble, choose_weights, simplex_grid
from tests.conftest import SHRINK, deep_update, only_models, real_params_raw, seeded_store


def test_simplex_grid_holds_every_vertex_and_sums_to_one():
    grid = simplex_grid(2, 0.1)
    assert grid.shape == (11, 2)
    assert len(simplex_grid(3, 0.1)) == 66 and len(simplex_grid(4, 0.25)) == 35
    np.testing.assert_allclose(simplex_grid(3, 0.1).sum(axis=1), 1.0)
    rows = {tuple(r) for r in simplex_grid(3, 0.5)}
    assert {(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (0.5, 0.5, 0.0)} <= rows


def _complementary_members():
    """Reference: left half foreground. Member A is confident and right on the top rows and
    unsure and wrong on the bottom rows; member B the other way round. Each alone gets half the
    image wrong; their even mix is right everywhere."""
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:, :4] = 1
    right = np.where(mask, 0.95, 0.05)
    wrong = np.where(mask, 0.40, 0.60)  # on the wrong side of 0.5, but only just
    a = np.vstack([right[:4], wrong[4:]])
    b = np.vstack([wrong[:4], right[4:]])
    return np.stack([a, b]), mask


def test_an_even_mix_of_complementary_members_beats_both():
    stack, mask = _complementary_members()
    grid = simplex_grid(2, 0.1)
    best, scores = choose_weights([stack], [mask], grid, threshold=0.5)
    np.testing.assert_allclose(best, [0.5, 0.5])
    assert scores.max() == pytest.approx(1.0)
    alone = [scores[10], scores[0]]  # grid rows (1, 0) and (0, 1)
    assert max(alone) == pytest.approx(0.5)


def test_ties_go_to_the_most_even_mix_and_a_dominant_member_wins_alone():
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[:2] = 1
    perfect = np.where(mask, 0.9, 0.1)
    useless = np.zeros((4, 4))  # predicts nothing
    grid = simplex_grid(2, 0.1)
    best, scores = choose_weights([np.stack([perfect, useless])], [mask], grid, 0.5)
    # Any weight >= 0.556 on the perfect member is perfect; 0.6 is the most even of those.
    np.testing.assert_allclose(best, [0.6, 0.4])
    assert scores[grid[:, 0] >= 0.6].min() == pytest.approx(1.0)
    assert scores[grid[:, 0] <= 0.5].max() < 1.0


def test_empty_references_count_through_their_false_positives():
    """An image with nothing to find adds no TP but every FP: pooled Dice penalises the member
    that paints it, where a mean of per-image Dice (NaN there) would not notice."""
    empty = np.zeros((4, 4), dtype=np.uint8)
    full = np.ones((4, 4), dtype=np.uint8)
    painter = np.full((4, 4), 0.9)
    careful = np.where(full, 0.9, 0.1)
    stacks = [np.stack([painter, np.full((4, 4), 0.1)]), np.stack([painter, careful])]
    best, _ = choose_weights(stacks, [empty, full], simplex_grid(2, 0.5), 0.5)
    np.testing.assert_allclose(best, [0.0, 1.0])


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
    best_member = max(metrics["val_dice_unet"], metrics["val_dice_segformer"])
    assert metrics["val_dice"] >= best_member
    assert metrics["weight_unet"] + metrics["weight_segformer"] == pytest.approx(1.0)
    assert metrics["params_trainable"] == 0
    members = [ModelCard.read(root / "models" / m).training for m in ("unet", "segformer")]
    assert metrics["params_total"] == sum(m.params_total for m in members)
    assert metrics["train_seconds"] > sum(m.seconds for m in members)
    search = read_csv(root / "ens" / "uformer" / "search.csv")
    assert len(search) == 11
    assert max(float(r["val_dice"]) for r in search) == pytest.approx(metrics["val_dice"])


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
    assert metrics["weight_unet"] == pytest.approx(0.75)
    assert metrics["weights_tried"] == 3  # each member alone, and the given mix


def test_missing_member_is_a_clear_error(tiny_data, tmp_path):
    from segbench.ensemble import fit_ensemble

    raw, _, _ = tiny_data
    raw_params = deep_update(real_params_raw(), SHRINK)
    params = parse_params(raw_params)
    with pytest.raises(SegbenchError, match=r"models/unet: no trained model.*train@unet"):
        fit_ensemble("ensemble", params, raw, tmp_path / "models", tmp_path / "out")
    assert not (tmp_path / "out").exists()
