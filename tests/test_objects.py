"""Objects of a binary task (segbench.objects): labelling, measuring, matching, storing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tifffile

from segbench.errors import SegbenchError
from segbench.objects import (
    OBJECT_METRIC_FIELDS,
    OBJECT_TABLE_FIELDS,
    label_objects,
    match_objects,
    object_table,
    read_instances,
    relabel,
    write_instances,
)


def disc(shape, cy, cx, r) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def rect(shape, y0, x0, y1, x1) -> np.ndarray:
    out = np.zeros(shape, bool)
    out[y0:y1, x0:x1] = True
    return out


def labels_of(*masks) -> np.ndarray:
    """(H, W) int32 labels: the i-th mask (later ones on top) as object i + 1."""
    out = np.zeros(masks[0].shape, np.int32)
    for i, m in enumerate(masks, start=1):
        out[m] = i
    return out


# --- labelling -----------------------------------------------------------------------------


def test_watershed_splits_touching_discs_that_components_join():
    mask = disc((64, 96), 32, 30, 15) | disc((64, 96), 32, 58, 15)  # overlap by 2 px
    components = label_objects(mask)
    split = label_objects(mask, split="watershed")
    assert components.dtype == np.int32 and split.dtype == np.int32
    assert components.max() == 1 and split.max() == 2
    np.testing.assert_array_equal(split > 0, mask)  # nothing lost, nothing added
    # each disc is one object: its centre's label covers most of it
    for cx in (30, 58):
        core = disc(mask.shape, 32, cx, 10)
        assert (split[core] == split[32, cx]).all()


def test_components_are_eight_connected_and_watershed_keeps_every_component():
    mask = np.zeros((40, 40), bool)
    mask[5, 5] = mask[6, 6] = True  # diagonal neighbours: one object
    mask[20:36, 20:36] = True
    mask[20, 37] = True  # a lone pixel 2 px from the square: its peak is suppressed
    labels = label_objects(mask)
    assert labels.max() == 3 and labels[5, 5] == labels[6, 6]
    split = label_objects(mask, split="watershed", min_distance=5)
    np.testing.assert_array_equal(split > 0, mask)
    assert split[20, 37] > 0 and split[5, 5] == split[6, 6] > 0
    for obj in range(1, split.max() + 1):  # an object never spans two components
        assert len(np.unique(labels[split == obj])) == 1


def test_label_objects_empty_and_bad_arguments():
    assert label_objects(np.zeros((8, 8), np.uint8), split="watershed").max() == 0
    with pytest.raises(ValueError, match="split must be one of"):
        label_objects(np.zeros((8, 8)), split="voronoi")
    with pytest.raises(ValueError, match="min_distance"):
        label_objects(np.ones((8, 8)), split="watershed", min_distance=0)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        label_objects(np.zeros((2, 8, 8)))


def test_relabel_makes_labels_consecutive():
    labels = np.array([[0, 7, 7], [300, 0, 70000]], np.uint32)
    np.testing.assert_array_equal(relabel(labels), [[0, 1, 1], [2, 0, 3]])
    huge = np.array([[0, 4_000_000_000], [12, 12]], np.uint64)
    np.testing.assert_array_equal(relabel(huge), [[0, 2], [1, 1]])
    assert relabel(np.ones((2, 2), bool)).dtype == np.int32


# --- measuring -----------------------------------------------------------------------------


def test_object_table_on_a_disc_and_a_rectangle():
    shape = (60, 80)
    d = disc(shape, 20, 20, 10)
    labels = labels_of(d, rect(shape, 40, 50, 50, 75))
    rows = object_table(labels)
    assert [list(r) for r in rows] == [OBJECT_TABLE_FIELDS] * 2
    first, second = rows
    assert first["id"] == 1 and first["area"] == int(d.sum())
    assert first["diameter"] == pytest.approx(math.sqrt(4 * d.sum() / math.pi))
    assert first["diameter"] == pytest.approx(20, rel=0.03)
    assert (first["centroid_y"], first["centroid_x"]) == pytest.approx((20, 20))
    assert [first[k] for k in ("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1")] == [10, 10, 31, 31]
    assert second == {
        "id": 2,
        "area": 250,
        "diameter": pytest.approx(math.sqrt(1000 / math.pi)),
        "centroid_y": pytest.approx(44.5),
        "centroid_x": pytest.approx(62.0),
        "bbox_y0": 40,
        "bbox_x0": 50,
        "bbox_y1": 50,
        "bbox_x1": 75,
    }
    assert object_table(np.zeros(shape, np.int32)) == []


# --- matching ------------------------------------------------------------------------------

SHAPE = (64, 64)
A, B, C = rect(SHAPE, 2, 2, 12, 12), rect(SHAPE, 20, 20, 30, 32), rect(SHAPE, 40, 5, 50, 15)


def test_perfect_match():
    ref = labels_of(A, B, C)
    m = match_objects(ref * 5, ref)  # other label values, the same objects
    assert list(m) == OBJECT_METRIC_FIELDS
    assert (m["obj_tp"], m["obj_fp"], m["obj_fn"], m["count_diff"]) == (3, 0, 0, 0)
    for key in ("obj_precision", "obj_recall", "obj_f1", "pq", "sq", "rq"):
        assert m[key] == 1.0


def test_one_missed_object():
    m = match_objects(labels_of(A, B), labels_of(A, B, C))
    assert (m["n_pred_objects"], m["n_ref_objects"]) == (2, 3)
    assert (m["obj_tp"], m["obj_fp"], m["obj_fn"]) == (2, 0, 1)
    assert m["obj_precision"] == 1.0 and m["obj_recall"] == pytest.approx(2 / 3)
    assert m["obj_f1"] == pytest.approx(0.8) and m["rq"] == pytest.approx(2 / 2.5)
    assert m["sq"] == 1.0 and m["pq"] == pytest.approx(m["sq"] * m["rq"])
    assert m["count_diff"] == -1


def test_one_false_positive_and_a_shrunk_match():
    shrunk = rect(SHAPE, 2, 2, 12, 10)  # IoU 0.8 with A
    m = match_objects(labels_of(shrunk, B, C), labels_of(A, B))
    assert (m["obj_tp"], m["obj_fp"], m["obj_fn"], m["count_diff"]) == (2, 1, 0, 1)
    assert m["obj_precision"] == pytest.approx(2 / 3) and m["obj_recall"] == 1.0
    assert m["sq"] == pytest.approx(0.9)  # mean of 0.8 and 1
    assert m["rq"] == pytest.approx(2 / 2.5) and m["pq"] == pytest.approx(1.8 / 2.5)


@pytest.mark.parametrize(
    ("drop", "matched"),
    [(False, False), (True, True)],  # IoU exactly 0.5 is no match; 200/399 is one
)
def test_iou_just_below_and_above_one_half(drop, matched):
    ref = rect(SHAPE, 0, 0, 30, 10)  # area 300
    pred = rect(SHAPE, 10, 0, 40, 10)  # overlap 200, union 400
    if drop:
        pred[39, 9] = False  # outside the reference: union 399
    m = match_objects(pred.astype(np.int32), ref.astype(np.int32))
    assert m["obj_tp"] == int(matched) and m["obj_fp"] == m["obj_fn"] == 1 - int(matched)
    assert m["pq"] == pytest.approx(200 / 399 if matched else 0.0)


def test_a_prediction_over_two_references_matches_neither():
    merged = rect(SHAPE, 0, 0, 20, 40)
    m = match_objects(merged.astype(np.int32), labels_of(A, B))
    assert (m["obj_tp"], m["obj_fp"], m["obj_fn"], m["count_diff"]) == (0, 1, 2, -1)
    assert m["pq"] == m["rq"] == m["obj_f1"] == 0.0 and math.isnan(m["sq"])


def test_empty_sides():
    empty = np.zeros(SHAPE, np.int32)
    both = match_objects(empty, empty)
    assert both["n_ref_objects"] == both["n_pred_objects"] == both["count_diff"] == 0
    for key in ("obj_precision", "obj_recall", "obj_f1", "pq", "sq", "rq"):
        assert math.isnan(both[key]), key
    missed = match_objects(empty, labels_of(A, B))
    invented = match_objects(labels_of(A, B), empty)
    for m in (missed, invented):
        assert m["obj_f1"] == m["pq"] == m["rq"] == 0.0 and math.isnan(m["sq"])
    assert missed["obj_recall"] == 0.0 and math.isnan(missed["obj_precision"])
    assert invented["obj_precision"] == 0.0 and math.isnan(invented["obj_recall"])
    assert (missed["count_diff"], invented["count_diff"]) == (-2, 2)
    assert all(type(missed[k]) is int for k in ("n_ref_objects", "obj_tp", "count_diff"))


def test_match_objects_refuses_bad_input():
    with pytest.raises(ValueError, match="iou must be in"):
        match_objects(np.zeros(SHAPE, int), np.zeros(SHAPE, int), iou=0.3)
    with pytest.raises(ValueError, match="one shape"):
        match_objects(np.zeros((4, 4), int), np.zeros((4, 5), int))
    with pytest.raises(ValueError, match="non-negative"):
        match_objects(-np.ones((4, 4), int), np.zeros((4, 4), int))


# --- instance label images -----------------------------------------------------------------


@pytest.mark.parametrize(("top", "stored"), [(65535, np.uint16), (65536, np.uint32)])
def test_instances_round_trip(tmp_path, top, stored):
    labels = np.zeros((20, 30), np.int64)
    labels[2:5, 3:9] = 1
    labels[10:15, 10:20] = top
    path = tmp_path / "i.tif"
    write_instances(path, labels)
    assert tifffile.imread(path).dtype == stored
    back = read_instances(path)
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, labels)


def test_read_instances_names_a_missing_or_bad_file(tmp_path):
    with pytest.raises(SegbenchError, match=r"missing\.tif: instance labels not found"):
        read_instances(tmp_path / "missing.tif")
    (tmp_path / "bad.tif").write_bytes(b"not a tiff")
    with pytest.raises(SegbenchError, match=r"bad\.tif: not a readable instance label TIFF"):
        read_instances(tmp_path / "bad.tif")
    with pytest.raises(ValueError, match="non-negative"):
        write_instances(tmp_path / "neg.tif", -np.ones((3, 3), np.int32))
