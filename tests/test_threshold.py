"""Threshold tuning: the histogram shortcut equals thresholding image by image."""

import numpy as np
import pytest

from segbench.metrics import dataset_dice
from segbench.threshold import GRID, dice_by_threshold, tune_threshold


def _data(seed=0):
    rng = np.random.default_rng(seed)
    masks = [rng.random((30, 40)) < f for f in (0.2, 0.4, 0.05)]
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


def test_the_best_threshold_is_chosen_and_its_curve_returned():
    probas, masks = _data(1)
    best, curve = tune_threshold(probas, masks)
    assert [c["threshold"] for c in curve] == list(GRID)
    assert max(c["val_dice"] for c in curve) == next(
        c["val_dice"] for c in curve if c["threshold"] == best
    )
    assert best != 0.5  # the data were made so that 0.5 is not the best


def test_ties_go_to_the_threshold_nearest_a_half_and_empty_validation_keeps_it():
    mask = np.zeros((4, 4), dtype=bool)
    mask[:2] = True
    proba = mask.astype(np.float32)  # perfectly separated: every threshold scores 1.0
    assert tune_threshold([proba], [mask])[0] == 0.5
    best, curve = tune_threshold([np.full((4, 4), 0.3)], [np.zeros((4, 4), bool)])
    assert best == 0.5 and all(np.isnan(c["val_dice"]) or c["val_dice"] == 0 for c in curve)
