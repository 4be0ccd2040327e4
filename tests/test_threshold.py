"""Threshold tuning: chosen on the mean per-image criterion (Dice over all images), the histogram
shortcut equal to thresholding image by image."""

import numpy as np
import pytest

from segbench.metrics import binary_metrics, dataset_dice, dice_all
from segbench.threshold import (
    GRID,
    counts_by_threshold,
    dice_all_of,
    dice_by_threshold,
    score_by_threshold,
    tune_threshold,
)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    masks = [rng.random((30, 40)) < f for f in (0.2, 0.4, 0.05)]
    masks.append(np.zeros((30, 40), dtype=bool))  # nothing to find
    # Probabilities leaning towards the truth, with noise: the best threshold is not 0.5.
    probas = [np.clip(0.35 * m + rng.random(m.shape) * 0.6, 0, 1) for m in masks]
    return probas, masks


def test_pooled_dice_at_every_threshold_matches_direct_thresholding():
    probas, masks = _data()
    got = dice_by_threshold(probas, masks)
    for t, d in zip(GRID, got, strict=True):
        direct = dataset_dice(
            np.concatenate([(p >= t).ravel() for p in probas]),
            np.concatenate([m.ravel() for m in masks]),
        )
        assert d == pytest.approx(direct), t


def test_the_criterion_at_every_threshold_is_the_mean_per_image_dice_over_all_images():
    probas, masks = _data()
    probas[3] = np.minimum(probas[3], 0.62)  # the empty image: left empty from 0.65 on
    got = score_by_threshold(probas, masks)
    for t, s in zip(GRID, got, strict=True):
        direct = np.mean(
            [binary_metrics(p >= t, m)["dice_all"] for p, m in zip(probas, masks, strict=True)]
        )
        assert s == pytest.approx(direct), t


def test_counts_compare_in_the_probabilities_own_float_type():
    proba = np.array([[np.float32(0.55), np.nextafter(np.float32(0.55), np.float32(0))]])
    mask = np.array([[1, 0]])
    tp, fp, fn = counts_by_threshold(proba, mask, (0.55,))[:, 0]
    assert (tp, fp, fn) == (int((proba >= 0.55)[0, 0]), int((proba >= 0.55)[0, 1]), 0)


def test_the_vectorised_dice_all_is_the_metric():
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 3, size=(3, 200))
    expected = [dice_all(int(a), int(b), int(c)) for a, b, c in counts.T]
    np.testing.assert_allclose(dice_all_of(counts), expected)


def test_the_best_threshold_is_chosen_and_its_curve_returned():
    probas, masks = _data(1)
    best, curve = tune_threshold(probas, masks)
    assert [c["threshold"] for c in curve] == list(GRID)
    assert set(curve[0]) == {"threshold", "val_score", "val_dice"}
    assert max(c["val_score"] for c in curve) == next(
        c["val_score"] for c in curve if c["threshold"] == best
    )
    assert [c["val_dice"] for c in curve] == pytest.approx(dice_by_threshold(probas, masks))
    assert best != 0.5  # the data were made so that 0.5 is not the best


def test_false_positives_on_an_empty_image_raise_the_threshold_pooled_dice_would_choose():
    """Image 1: 100 sure foreground pixels at 0.7, 100 hard ones at 0.3, background at 0.1.
    Image 2 has nothing to find but lights up 10 pixels at 0.3. Pooled Dice barely notices the
    10 false positives (0.976 at 0.3 against 0.667 above it); per image they cost image 2 its
    whole score (mean 0.5 at 0.3 against 0.833 above it)."""
    sure, hard = np.zeros((20, 20), bool), np.zeros((20, 20), bool)
    sure[:5], hard[5:10] = True, True
    proba = np.where(sure, 0.7, np.where(hard, 0.3, 0.1))
    empty_proba = np.zeros((20, 20))
    empty_proba[15, :10] = 0.3
    probas, masks = [proba, empty_proba], [sure | hard, np.zeros((20, 20), bool)]
    pooled = dice_by_threshold(probas, masks)
    pooled_best = max(zip(pooled, GRID, strict=True), key=lambda p: (p[0], -abs(p[1] - 0.5)))[1]
    best, curve = tune_threshold(probas, masks)
    assert pooled_best == 0.3 and best == 0.5
    at = {c["threshold"]: c for c in curve}
    assert at[0.5]["val_score"] == pytest.approx((2 / 3 + 1) / 2)
    assert at[0.3]["val_score"] == pytest.approx(0.5)


def test_ties_go_to_the_threshold_nearest_a_half_and_an_empty_validation_is_still_tuned():
    mask = np.zeros((4, 4), dtype=bool)
    mask[:2] = True
    proba = mask.astype(np.float32)  # perfectly separated: every threshold scores 1.0
    assert tune_threshold([proba], [mask])[0] == 0.5
    # Nothing to find anywhere: the thresholds above the model's 0.6 leave it empty (1.0).
    best, curve = tune_threshold([np.full((4, 4), 0.6)], [np.zeros((4, 4), bool)])
    assert best == 0.65 and all(c["val_score"] == (c["threshold"] > 0.6) for c in curve)
    assert tune_threshold([], []) == (0.5, [])  # no validation images: nothing to tune on
