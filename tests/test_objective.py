"""One objective: the classical baselines choose on the per-image criterion models are ranked on
(mean over tiles of Dice over all images; of mIoU with several classes), not on pooled pixels.

Thresholds, checkpoints and ensemble weights are tested beside their code (test_threshold,
test_training_loop, test_ensemble).
"""

from __future__ import annotations

import numpy as np
import pytest

from segbench.metrics import binary_metrics, multiclass_metrics
from segbench.models import build_model
from segbench.models.otsu import OtsuThreshold
from tests.conftest import shipped_entry
from tests.datasets import particle_pair


def _two_kinds_of_tile():
    """Tile 0: a large bright object (the left half). Tiles 1 and 2: a small dark object on a
    bright background. Pooled over the pixels, the large object outweighs both small ones and
    "bright" wins (1/3 against 0.09); per tile, "dark" finds two objects of three (2/3)."""
    images = np.full((3, 32, 32), 200, dtype=np.uint8)
    masks = np.zeros((3, 32, 32), dtype=np.uint8)
    images[0, :, 16:] = 50
    masks[0, :, :16] = 1
    for k in (1, 2):
        images[k, 10:15, 10:15] = 50
        masks[k, 10:15, 10:15] = 1
    return images, masks


def test_otsu_chooses_its_polarity_on_the_mean_per_tile_criterion():
    images, masks = _two_kinds_of_tile()
    model = OtsuThreshold(smooth_sigma=0.0)
    scores = model.fit(images, masks)
    assert model.polarity == "dark"
    assert scores == pytest.approx({"bright": 1 / 3, "dark": 2 / 3})
    pooled = {}  # what the choice used to be made on
    for p in ("bright", "dark"):
        preds = [model._foreground(x, p) for x in images]
        inter = sum(float((q * m).sum()) for q, m in zip(preds, masks, strict=True))
        pooled[p] = (
            2 * inter / sum(float(q.sum() + m.sum()) for q, m in zip(preds, masks, strict=True))
        )
    assert pooled["bright"] > pooled["dark"]


def test_otsu_leaves_unannotated_pixels_and_tiles_out_of_its_choice():
    images, masks = _two_kinds_of_tile()
    masks[1][masks[1] == 0] = 255  # only the object is annotated: "bright" paints nothing there
    masks = np.concatenate([masks, np.full((1, 32, 32), 255, np.uint8)])
    images = np.concatenate([images, images[:1]])
    scores = OtsuThreshold(smooth_sigma=0.0).fit(images, masks)
    assert scores == pytest.approx({"bright": 1 / 3, "dark": 2 / 3})  # the last tile: left out


def test_multi_otsu_scores_each_tile_by_its_miou():
    rng = np.random.default_rng(0)
    images, masks = [], []
    for width in (8, 20):  # tiles of different class shares: pooled and per tile differ
        mask = np.zeros((24, 24), dtype=np.uint8)
        mask[:, width:] = 1
        mask[:8, -4:] = 2
        levels = np.array([40, 120, 220])[mask]
        images.append((levels + rng.normal(0, 3, mask.shape)).clip(0, 255).astype(np.uint8))
        masks.append(mask)
    masks[1][:4] = 255
    model = OtsuThreshold(smooth_sigma=0.0, num_classes=3)
    scores = model.fit(np.stack(images), np.stack(masks))
    per_tile = [
        multiclass_metrics(model.predict(x), m, 3, ignore_index=255)["miou"]
        for x, m in zip(images, masks, strict=True)
    ]
    assert scores["permutation"] == pytest.approx(np.mean(per_tile))
    assert model.mapping == [0, 1, 2]


def test_an_edge_baseline_scores_each_tile_including_one_with_nothing_to_find():
    images, masks = [], []
    for seed in range(3):
        image, mask = particle_pair(seed)
        images.append(image.astype(np.float32) / 255)
        masks.append(mask)
    rng = np.random.default_rng(0)
    images.append((0.3 + 0.05 * rng.random((96, 128))).astype(np.float32))  # textured, empty
    masks.append(np.zeros((96, 128), dtype=np.uint8))
    model = build_model(shipped_entry("sobel"))
    scores = model.fit(np.stack(images), np.stack(masks))
    assert scores[f"{model.region}_{model.threshold:g}"] == max(scores.values())
    per_tile = [
        binary_metrics(model.predict(x) > 0, m)["dice_all"]
        for x, m in zip(images, masks, strict=True)
    ]
    assert scores[f"{model.region}_{model.threshold:g}"] == pytest.approx(np.mean(per_tile))
    assert per_tile[3] == 1.0  # the chosen threshold leaves the empty tile empty
