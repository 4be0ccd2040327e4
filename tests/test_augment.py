"""Augmentation keeps masks aligned with images, is seeded, and handles 16-bit tiles."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from segbench.config import AugmentConfig
from segbench.data.augment import augment, build_augmenter
from segbench.data.dataset import TileDataset
from tests.conftest import shipped_section


def augment_cfg(**changes) -> AugmentConfig:
    return shipped_section("prepare.augment", **changes)


def l_shape(size=96, *, dtype=np.uint8, high=200, low=20):
    """An asymmetric L: every flip and rotation of it is distinguishable."""
    mask = np.zeros((size, size), np.uint8)
    mask[16:80, 20:40] = 1
    mask[60:80, 20:72] = 1
    image = (mask.astype(np.int64) * (high - low) + low).astype(dtype)
    return image, mask


def boundary(mask, width=2):
    return ndimage.binary_dilation(mask, iterations=width) & ~ndimage.binary_erosion(
        mask, iterations=width
    )


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_rotated_flipped_cropped_masks_stay_on_their_shape(dtype):
    high = 200 if dtype == np.uint8 else 50000
    image, mask = l_shape(dtype=dtype, high=high)
    cfg = shipped_section(
        "prepare.augment",
        hflip=0.5,
        vflip=0.5,
        rotate={"p": 1.0, "limit": 30},
        center_crop={"p": 0.5},
    )
    aug = build_augmenter(cfg, 96)
    changed = 0
    for seed in range(12):
        img_a, msk_a = augment(aug, image, mask, seed)
        assert img_a.dtype == dtype and img_a.shape == (96, 96)
        assert set(np.unique(msk_a)) <= {0, 1}
        from_image = img_a > (high + 20) / 2  # where the image says the shape is
        disagree = from_image != msk_a.astype(bool)
        # Only interpolated rim pixels of the image may disagree with the nearest-neighbour mask.
        assert not (disagree & ~boundary(msk_a.astype(bool))).any(), seed
        assert disagree.mean() < 0.02
        changed += not np.array_equal(msk_a, mask)
    assert changed >= 10  # the transforms really moved the shape


def test_flips_are_exact_and_seeded():
    image, mask = l_shape()
    aug = build_augmenter(augment_cfg(hflip=1.0, vflip=0.0), 96)
    img_a, msk_a = augment(aug, image, mask, 0)
    np.testing.assert_array_equal(img_a, image[:, ::-1])
    np.testing.assert_array_equal(msk_a, mask[:, ::-1])
    aug = build_augmenter(augment_cfg(rotate={"p": 1.0}), 96)
    a, b, c = (augment(aug, image, mask, s)[0] for s in (5, 5, 6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_intensity_transforms_leave_the_mask_alone():
    image, mask = l_shape()
    cfg = shipped_section(
        "prepare.augment",
        hflip=0,
        vflip=0,
        brightness_contrast={"p": 1.0},
        gamma={"p": 1.0, "limit": [70, 130]},
    )
    aug = build_augmenter(cfg, 96)
    img_a, msk_a = augment(aug, image, mask, 1)
    np.testing.assert_array_equal(msk_a, mask)
    assert not np.array_equal(img_a, image)


def test_nothing_to_do_builds_nothing():
    assert build_augmenter(augment_cfg(mode="none"), 64) is None
    assert build_augmenter(augment_cfg(hflip=0, vflip=0), 64) is None


def test_online_augmentation_in_the_dataset_is_per_epoch_and_reproducible():
    image, mask = l_shape(64)
    images, masks = np.stack([image] * 4), np.stack([mask] * 4)
    ranges = np.array([[0.0, 255.0]] * 4)
    aug = build_augmenter(augment_cfg(rotate={"p": 1.0}), 64)
    ds = TileDataset(images, masks, ranges, augmenter=aug, seed=0)
    ds.set_epoch(1)
    first = ds[0]
    again = TileDataset(images, masks, ranges, augmenter=aug, seed=0)
    again.set_epoch(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again[0], strict=True))
    ds.set_epoch(2)
    assert not torch.equal(first[1], ds[0][1])
    plain = TileDataset(images, masks, ranges)
    assert torch.equal(plain[0][1][0], torch.from_numpy(mask.astype(np.float32)))
