"""Metrics on hand-made masks."""

import math

import numpy as np
import pytest

from segbench.metrics import (
    METRICS,
    MetricInputError,
    binary_metrics,
    confusion,
    dataset_dice,
    summarize,
)


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
    with pytest.raises(MetricInputError, match=r"\(2, 2\) and reference \(3, 3\)"):
        binary_metrics(np.zeros((2, 2)), np.zeros((3, 3)))


@pytest.mark.parametrize(
    ("values", "dtype"), [([0, 255], np.uint8), ([0.0, 0.7], np.float32), ([0, 2], np.int64)]
)
def test_non_binary_values_are_refused_with_what_was_found(values, dtype):
    mask = np.array([values, values], dtype=dtype)
    with pytest.raises(MetricInputError, match="prediction mask is not binary") as err:
        binary_metrics(mask, np.zeros((2, 2), dtype=np.uint8))
    assert str(values[1]) in str(err.value)
    with pytest.raises(ValueError, match="reference mask is not binary"):
        binary_metrics(np.zeros((2, 2), dtype=bool), mask)


def test_bool_and_zero_one_of_any_dtype_agree():
    pred, ref = _masks()
    expected = binary_metrics(pred, ref)
    for p, r in ((pred.astype(bool), ref.astype(bool)), (pred.astype(np.float32), ref * 1.0)):
        assert binary_metrics(p, r) == expected


# Hand-computed edge cases on 4x4 masks (16 pixels). nan marks "undefined".
NAN = math.nan
EMPTY = np.zeros((4, 4), dtype=np.uint8)
FULL = np.ones((4, 4), dtype=np.uint8)
QUARTER = np.zeros((4, 4), dtype=np.uint8)
QUARTER[:2, :2] = 1  # 4 foreground pixels, 12 background
EDGE_CASES = {
    # Nothing predicted on an object: TP 0, FP 0, FN 4, TN 12.
    "empty prediction": (
        EMPTY,
        QUARTER,
        dict(
            dice=0.0,
            iou=0.0,
            pixel_accuracy=12 / 16,
            precision=NAN,
            recall=0.0,
            fpr=0.0,
            mpa=(12 / 12 + 0 / 4) / 2,
            miou=(12 / 16 + 0 / 4) / 2,
        ),
    ),
    # Something predicted on an empty image: TP 0, FP 4, FN 0, TN 12.
    "empty reference": (
        QUARTER,
        EMPTY,
        dict(
            dice=NAN,
            iou=NAN,
            pixel_accuracy=12 / 16,
            precision=0.0,
            recall=NAN,
            fpr=4 / 16,
            mpa=12 / 16,
            miou=(12 / 16 + 0 / 4) / 2,
        ),
    ),
    # Both empty: only the background exists, and it is right.
    "both empty": (
        EMPTY,
        EMPTY,
        dict(
            dice=NAN,
            iou=NAN,
            pixel_accuracy=1.0,
            precision=NAN,
            recall=NAN,
            fpr=0.0,
            mpa=1.0,
            miou=1.0,
        ),
    ),
    # Everything foreground, everywhere: only the foreground exists, and it is right.
    "both full": (
        FULL,
        FULL,
        dict(
            dice=1.0,
            iou=1.0,
            pixel_accuracy=1.0,
            precision=1.0,
            recall=1.0,
            fpr=NAN,
            mpa=1.0,
            miou=1.0,
        ),
    ),
    # Everything predicted on a quarter object: TP 4, FP 12, FN 0, TN 0.
    "full prediction": (
        FULL,
        QUARTER,
        dict(
            dice=8 / 20,
            iou=4 / 16,
            pixel_accuracy=4 / 16,
            precision=4 / 16,
            recall=1.0,
            fpr=1.0,
            mpa=(0 / 12 + 4 / 4) / 2,
            miou=(0 / 12 + 4 / 16) / 2,
        ),
    ),
}


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_edge_cases_match_hand_computed_values(case):
    pred, ref, expected = EDGE_CASES[case]
    got = binary_metrics(pred, ref)
    assert set(METRICS) <= set(got)
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(got[key]), f"{case}: {key} should be undefined, got {got[key]}"
        else:
            assert got[key] == pytest.approx(value), f"{case}: {key}"


def test_false_positives_on_empty_images_are_reported_on_their_own():
    rows = [
        binary_metrics(QUARTER, QUARTER),  # perfect on an object
        binary_metrics(QUARTER, EMPTY),  # 4 of 16 pixels wrong on an empty image
        binary_metrics(EMPTY, EMPTY),  # clean on an empty image
    ]
    s = summarize(rows)
    assert s["n_empty_reference"] == 2 and s["empty_with_fp"] == 1
    assert s["empty_fpr"] == pytest.approx((4 / 16 + 0) / 2)
    assert s["dice"] == 1.0 and s["dice_n"] == 1  # the empty images are not in the Dice mean
    assert s["n_empty_prediction"] == 1
    assert s["miou"] == pytest.approx((1.0 + (12 / 16 + 0) / 2 + 1.0) / 3)


def test_multiclass_metrics_by_hand():
    from segbench.metrics import multiclass_metrics

    target = np.array([[0, 0, 1, 1], [0, 2, 2, 1]])
    pred = np.array([[0, 1, 1, 1], [0, 2, 0, 3]])
    m = multiclass_metrics(pred, target, 4)
    # Reference rows, predicted columns.
    assert m["confusion"].tolist() == [[2, 1, 0, 0], [0, 2, 0, 1], [1, 0, 1, 0], [0, 0, 0, 0]]
    assert m["iou"][:3] == pytest.approx([2 / 4, 2 / 4, 1 / 2])
    assert m["iou"][3] == 0.0  # predicted, never in the reference: a mistake, IoU 0
    assert m["dice"][:3] == pytest.approx([4 / 6, 4 / 6, 2 / 3])
    assert m["precision"] == pytest.approx([2 / 3, 2 / 3, 1.0, 0.0])
    assert m["recall"][:3] == pytest.approx([2 / 3, 2 / 3, 1 / 2]) and np.isnan(m["recall"][3])
    assert m["pixel_accuracy"] == pytest.approx(5 / 8)
    assert m["miou"] == pytest.approx((0.5 + 0.5 + 0.5 + 0.0) / 4)
    assert m["mpa"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 2) / 3)  # classes in the reference


def test_a_class_absent_from_both_masks_is_left_out_of_the_means():
    from segbench.metrics import multiclass_metrics

    target = pred = np.array([[0, 1], [1, 0]])
    m = multiclass_metrics(pred, target, 3)
    assert np.isnan(m["iou"][2]) and np.isnan(m["dice"][2])
    assert m["miou"] == 1.0 and m["mpa"] == 1.0


@pytest.mark.parametrize("seed", range(6))
def test_with_two_classes_multiclass_metrics_are_the_binary_ones(seed):
    from segbench.metrics import multiclass_metrics

    rng = np.random.default_rng(seed)
    target = (rng.random((16, 16)) < [0.0, 0.3, 0.9, 1.0, 0.5, 0.05][seed]).astype(np.uint8)
    pred = (rng.random((16, 16)) < 0.4).astype(np.uint8)
    b, m = binary_metrics(pred, target), multiclass_metrics(pred, target, 2)
    for key in ("miou", "mpa", "pixel_accuracy"):
        assert m[key] == pytest.approx(b[key], nan_ok=True)
    if not np.isnan(b["iou"]):
        assert m["iou"][1] == pytest.approx(b["iou"]) and m["dice"][1] == pytest.approx(b["dice"])


def test_ignored_pixels_and_values_that_are_not_classes():
    from segbench.metrics import MetricInputError, multiclass_metrics

    target = np.array([[0, 255], [1, 1]])
    pred = np.array([[0, 0], [1, 0]])
    m = multiclass_metrics(pred, target, 2, ignore_index=255)
    assert m["confusion"].tolist() == [[1, 0], [1, 1]]
    with pytest.raises(MetricInputError, match=r"reference mask holds \[255\], not class indices"):
        multiclass_metrics(pred, target, 2)
    with pytest.raises(MetricInputError, match="differ in shape"):
        multiclass_metrics(pred[:1], target, 2)
    with pytest.raises(MetricInputError, match="float64, not class indices"):
        multiclass_metrics(pred * 0.5, target, 2, ignore_index=255)
