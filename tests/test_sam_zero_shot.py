"""SAM zero-shot: oracle prompts from the reference, one embedding per image, binary masks."""

import numpy as np
import pytest
import torch
from segment_anything import automatic_mask_generator as amg
from segment_anything.utils.amg import remove_small_regions

from segbench.config import AutoMaskConfig, parse_params
from segbench.errors import SegbenchError
from segbench.sam import build_sam
from segbench.sam.prompts import box, components, interior_points
from segbench.sam.zero_shot import PROMPT_MODES, ZeroShot, to_sam_rgb
from tests.conftest import real_params_raw, shipped_entry


def auto_settings(**changes) -> AutoMaskConfig:
    """The shipped sam_auto entry's automatic-mask settings with ``changes``."""
    return shipped_entry("sam_auto").auto.model_copy(update=changes)


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
    tiny_auto = auto_settings(
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


def _tiny_sam(seed: int):
    torch.manual_seed(seed)
    return build_sam("tiny", image_size=64).eval()


def _non_square_scene():
    """A 96 x 160 float image in [0, 1] (neither square nor the encoder's 64 px) and its mask."""
    rng = np.random.default_rng(1)
    reference = np.zeros((96, 160), dtype=bool)
    reference[10:40, 20:70] = True
    reference[55:90, 110:150] = True
    unit = np.clip(0.3 * rng.random((96, 160)) + 0.5 * reference, 0.0, 1.0)
    return to_sam_rgb(unit), reference


def _count_encoder_calls(sam):
    calls = []
    return calls, sam.image_encoder.register_forward_hook(lambda *a: calls.append(1))


def test_a_second_stage_reads_the_first_stages_embedding_and_predicts_the_same(tmp_path):
    """Two ZeroShot instances on one cache directory stand for two DVC stages (processes)."""
    sam = _tiny_sam(0)
    rgb, reference = _non_square_scene()
    masks = []
    for stage in range(2):
        zs = ZeroShot(sam, embedding_cache=tmp_path)
        calls, hook = _count_encoder_calls(sam)
        try:
            zs.set_image(rgb, image_id="img")
            masks.append({m: zs.predict(m, reference) for m in ("point", "points", "box")})
        finally:
            hook.remove()
        assert (zs.cache.hits, zs.cache.misses) == ((0, 1) if stage == 0 else (1, 0))
        assert len(calls) == 1 - stage  # the second stage never runs the encoder
    for mode, first in masks[0].items():
        np.testing.assert_array_equal(masks[1][mode], first, err_msg=mode)
    assert len(list(tmp_path.glob("*/*.pt"))) == 1


def test_auto_reuses_the_whole_image_embedding(tmp_path):
    sam = _tiny_sam(0)
    rgb, _ = _non_square_scene()
    auto = auto_settings(points_per_side=4, crop_n_layers=0, min_mask_region_area=0)
    zs = ZeroShot(sam, embedding_cache=tmp_path, auto=auto)
    zs.set_image(rgb)
    calls, hook = _count_encoder_calls(sam)
    try:
        zs.predict("auto")
    finally:
        hook.remove()
    assert (zs.cache.hits, zs.cache.misses, len(calls)) == (1, 1, 0)


def test_another_sam_does_not_read_the_first_ones_embeddings(tmp_path):
    rgb, _ = _non_square_scene()
    first = ZeroShot(_tiny_sam(0), embedding_cache=tmp_path)
    first.set_image(rgb)
    other = ZeroShot(_tiny_sam(1), embedding_cache=tmp_path)
    other.set_image(rgb)
    assert (other.cache.hits, other.cache.misses) == (0, 1)
    assert first.cache.dir != other.cache.dir
    assert not torch.equal(first.predictor.features, other.predictor.features)


def test_without_a_cache_there_is_none():
    assert ZeroShot(_tiny_sam(0)).cache is None


def test_every_mode_keeps_a_non_square_images_size(monkeypatch):
    """96 x 160 through a 64 px encoder, with small-region removal (OpenCV) in ``auto``."""
    removals = []

    def counted(mask, area, mode):
        removals.append(mode)
        return remove_small_regions(mask, area, mode)

    monkeypatch.setattr(amg, "remove_small_regions", counted)
    auto = auto_settings(
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        crop_n_layers=1,
        min_mask_region_area=10,
    )
    zs = ZeroShot(_tiny_sam(0), auto=auto)
    rgb, reference = _non_square_scene()
    zs.set_image(rgb, image_id="wide")
    for mode in PROMPT_MODES:
        mask = zs.predict(mode, reference if PROMPT_MODES[mode] else None)
        assert mask.dtype == bool and mask.shape == (96, 160), mode
    assert {"holes", "islands"} <= set(removals)  # min_mask_region_area > 0 really ran
    tall, tall_ref = rgb.transpose(1, 0, 2).copy(), reference.T.copy()
    zs.set_image(tall, image_id="tall")
    assert zs.predict("box", tall_ref).shape == (160, 96)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("points_per_side", 0),
        ("pred_iou_thresh", 1.5),
        ("stability_score_thresh", -0.1),
        ("crop_n_layers", -1),
        ("crop_n_points_downscale_factor", 0),
        ("min_mask_region_area", -1),
        ("points_per_batch", 0),
        ("points_per_side", "many"),
    ],
)
def test_impossible_auto_settings_name_the_field(field, value):
    raw = real_params_raw()
    raw["models"]["sam_auto"]["auto"][field] = value
    with pytest.raises(SegbenchError, match=rf"models\.sam_auto\.auto\.{field}: "):
        parse_params(raw)


def test_a_float_or_grey_image_is_refused_with_the_fix():
    zs = ZeroShot(_tiny_sam(0))
    with pytest.raises(SegbenchError, match=r"img_1.*uint8 RGB.*to_sam_rgb"):
        zs.set_image(np.zeros((32, 48)), image_id="img_1")


def test_auto_with_no_surviving_mask_in_any_crop_predicts_nothing():
    # Thresholds no mask can pass: segment_anything alone fails on the empty crops (IndexError).
    auto = auto_settings(
        points_per_side=4, pred_iou_thresh=1.0, stability_score_thresh=1.0, min_mask_region_area=0
    )
    zs = ZeroShot(_tiny_sam(0), auto=auto)
    image, _ = _non_square_scene()
    zs.set_image(image)
    out = zs.predict("auto")
    assert out.shape == image.shape[:2] and out.dtype == bool and not out.any()
