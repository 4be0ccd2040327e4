"""SAM zero-shot: oracle prompts from the reference, one embedding per image, binary masks."""

import numpy as np
import pytest
import torch

from segbench.errors import SegbenchError
from segbench.sam import build_sam
from segbench.sam.prompts import box, components, interior_points
from segbench.sam.zero_shot import PROMPT_MODES, AutoMaskSettings, ZeroShot, to_sam_rgb


def test_components_are_eight_connected_and_largest_first():
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[1, 1] = mask[2, 2] = 1  # diagonal neighbours: one object
    mask[5:9, 5:9] = 1
    parts = components(mask)
    assert [int(p.sum()) for p in parts] == [16, 2]
    assert components(np.zeros((4, 4))) == []


def test_the_first_point_is_the_one_farthest_from_the_boundary():
    mask = np.zeros((21, 31), dtype=bool)
    mask[5:16, 5:26] = True  # 11 x 21 rectangle centred at (x 15, y 10)
    np.testing.assert_array_equal(interior_points(mask, 1), [[15, 10]])


def test_the_image_edge_counts_as_boundary():
    mask = np.zeros((9, 20), dtype=bool)
    mask[:, :9] = True  # touches the top, bottom and left edges
    ((x, y),) = interior_points(mask, 1)
    assert (x, y) == (4, 4)


def test_k_points_are_distinct_inside_and_spread():
    mask = np.zeros((40, 80), dtype=bool)
    mask[10:30, 5:75] = True
    pts = interior_points(mask, 3)
    assert len({tuple(p) for p in pts}) == 3
    assert all(mask[int(y), int(x)] for x, y in pts)
    assert np.ptp(pts[:, 0]) > 30  # spread along the long side, not clustered at the centre
    assert len(interior_points(np.eye(3, dtype=bool) & (np.arange(3) == 0), 5)) == 1


def test_boxes_are_exact_and_jitter_stays_in_bounds():
    mask = np.zeros((50, 60), dtype=bool)
    mask[10:20, 30:45] = True
    np.testing.assert_array_equal(box(mask), [30, 10, 44, 19])
    rng = np.random.default_rng(0)
    for _ in range(50):
        x0, y0, x1, y1 = box(mask, jitter=5, rng=rng)
        assert 25 <= x0 <= 35 and 5 <= y0 <= 15 and 39 <= x1 <= 49 and 14 <= y1 <= 24
    edge = np.zeros((8, 8), dtype=bool)
    edge[0:3, 0:3] = True
    for _ in range(20):
        x0, y0, x1, y1 = box(edge, jitter=4, rng=rng)
        assert 0 <= x0 <= x1 <= 7 and 0 <= y0 <= y1 <= 7


@pytest.fixture(scope="module")
def zero_shot():
    torch.manual_seed(0)
    sam = build_sam("tiny", image_size=256)
    tiny_auto = AutoMaskSettings(
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        crop_n_layers=0,
        crop_n_points_downscale_factor=1,
        min_mask_region_area=0,
    )
    return ZeroShot(sam, k_points=3, box_jitter=2, auto=tiny_auto)


def _scene():
    rng = np.random.default_rng(0)
    image = rng.random((96, 128))
    reference = np.zeros((96, 128), dtype=bool)
    reference[10:30, 10:40] = True
    reference[60:80, 90:120] = True
    return to_sam_rgb(image), reference


def test_every_mode_gives_a_binary_mask_of_the_image_size_from_one_embedding(zero_shot):
    """A random-weight SAM: the masks mean nothing, but their type, size and the number of
    encoder passes are what the pipeline relies on."""
    rgb, reference = _scene()
    calls = []
    hook = zero_shot.sam.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        zero_shot.set_image(rgb, image_id="scene")
        for mode in ("point", "points", "box"):
            mask = zero_shot.predict(mode, reference)
            assert mask.dtype == bool and mask.shape == reference.shape
        assert len(calls) == 1  # one embedding, reused by every prompted mode
    finally:
        hook.remove()
    auto = zero_shot.predict("auto")
    assert auto.dtype == bool and auto.shape == reference.shape
    assert set(PROMPT_MODES) == {"point", "points", "box", "auto"}


def test_jittered_boxes_are_reproducible(zero_shot):
    rgb, reference = _scene()
    zero_shot.set_image(rgb, image_id="scene")
    first = zero_shot.predict("box", reference)
    zero_shot.set_image(rgb, image_id="scene")
    np.testing.assert_array_equal(zero_shot.predict("box", reference), first)


def test_oracle_modes_need_a_reference_and_an_empty_one_predicts_nothing(zero_shot):
    rgb, reference = _scene()
    zero_shot.set_image(rgb, image_id="img_007")
    with pytest.raises(SegbenchError, match=r"'box' takes its prompts.*img_007.*'auto'"):
        zero_shot.predict("box")
    with pytest.raises(SegbenchError, match="unknown SAM prompt mode 'polygon'"):
        zero_shot.predict("polygon", reference)
    with pytest.raises(SegbenchError, match="differ in size"):
        zero_shot.predict("point", reference[:50])
    assert not zero_shot.predict("points", np.zeros_like(reference)).any()
    with pytest.raises(SegbenchError, match="k_points"):
        ZeroShot(zero_shot.sam, k_points=0)
