"""Metrics on hand-made masks."""

import math

import numpy as np
import pytest

from segbench.metrics import binary_metrics, confusion, dataset_dice, summarize


def _masks():
    ref = np.zeros((4, 4), dtype=np.uint8)
    ref[:2, :2] = 1  # 4 foreground pixels
    pred = np.zeros((4, 4), dtype=np.uint8)
    pred[:2, 1:3] = 1  # 2 overlap, 2 false positives, 2 false negatives
    return pred, ref


def test_confusion_and_metrics_by_hand():
    pred, ref = _masks()
    assert confusion(pred, ref) == {"tp": 2, "fp": 2, "fn": 2, "tn": 10}
    m = binary_metrics(pred, ref)
    assert m["dice"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 2))  # 0.5
    assert m["iou"] == pytest.approx(2 / 6)
    assert m["pixel_accuracy"] == pytest.approx(12 / 16)
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(0.5)


def test_perfect_and_disjoint():
    _, ref = _masks()
    assert binary_metrics(ref, ref)["dice"] == 1.0
    assert binary_metrics(1 - ref, ref)["dice"] == 0.0
    assert binary_metrics(1 - ref, ref)["pixel_accuracy"] == 0.0


def test_empty_reference_is_undefined_not_zero_or_one():
    ref = np.zeros((4, 4), dtype=np.uint8)
    m = binary_metrics(np.zeros_like(ref), ref)
    assert math.isnan(m["dice"]) and math.isnan(m["iou"])
    assert m["pixel_accuracy"] == 1.0


def test_summary_excludes_undefined_and_counts_them():
    pred, ref = _masks()
    empty = np.zeros_like(ref)
    rows = [binary_metrics(pred, ref), binary_metrics(ref, ref), binary_metrics(empty, empty)]
    s = summarize(rows)
    assert s["n_images"] == 3 and s["n_empty_reference"] == 1
    assert s["dice"] == pytest.approx(0.75)
    assert s["dice_std"] == pytest.approx(np.std([0.5, 1.0], ddof=1))


def test_dataset_dice_pools_pixels():
    pred, ref = _masks()
    assert dataset_dice(np.stack([pred, ref]), np.stack([ref, ref])) == pytest.approx(
        2 * 6 / (2 * 6 + 2 + 2)
    )


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        confusion(np.zeros((2, 2)), np.zeros((3, 3)))
