"""Multi-Otsu: learns which class each intensity band stands for; binary Otsu is unchanged."""

import numpy as np
import pytest
from scipy import ndimage
from skimage.filters import threshold_otsu

from segbench.errors import SegbenchError
from segbench.models.otsu import OtsuThreshold

LEVELS = (40, 120, 200)  # intensity of bin 0, 1, 2 (darkest first)


def banded(n, order, *, seed=0, size=48, rgb=False):
    """Images of three intensity bands (blocks at random places) and their masks, where the
    band of intensity LEVELS[b] is class order[b]."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for _ in range(n):
        bins = np.zeros((size, size), dtype=np.int64)
        for b in (1, 2):
            for _ in range(2):
                r, c = rng.integers(0, size - 16, 2)
                bins[r : r + 16, c : c + 16] = b
        grey = np.asarray(LEVELS, dtype=np.float64)[bins] + rng.normal(0, 6, bins.shape)
        image = np.clip(grey, 0, 255).astype(np.uint8)
        if rgb:  # the same luminance from different colours
            image = np.stack([image, image, image], axis=-1)
        images.append(image)
        masks.append(np.asarray(order, dtype=np.uint8)[bins])
    return np.stack(images), np.stack(masks)


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 0, 1)], ids=["dark-first", "permuted"])
@pytest.mark.parametrize("rgb", [False, True], ids=["grey", "rgb"])
def test_multi_otsu_recovers_three_bands(order, rgb):
    images, masks = banded(4, order, rgb=rgb)
    # no smoothing: blurred dark-bright edges would pass through the middle band
    model = OtsuThreshold(smooth_sigma=0.0, num_classes=3)
    scores = model.fit(images, masks)
    assert model.mapping == list(order) and scores["permutation"] > 0.98
    test_images, test_masks = banded(2, order, seed=1, rgb=rgb)
    for image, mask in zip(test_images, test_masks, strict=True):
        pred = model.predict(image)
        assert pred.dtype == np.uint8 and pred.shape == mask.shape
        assert (pred == mask).mean() > 0.98
    proba = model.predict_proba(test_images[0])
    assert proba.shape == (3, *test_masks[0].shape) and proba.dtype == np.float32
    assert np.array_equal(proba.argmax(axis=0), model.predict(test_images[0]))
    assert np.all(proba.sum(axis=0) == 1)


def test_every_class_keeps_a_bin_even_where_many_to_one_would_score_higher():
    # The mid and bright bands are both class 1: each bin's most common class would score
    # higher on training, but it would give up class 2 entirely (the degenerate map that, on
    # data whose classes overlap in intensity, calls everything background). Multi-Otsu keeps
    # one bin per class; the other score is reported for comparison only.
    images, masks = banded(4, (0, 1, 1))
    model = OtsuThreshold(num_classes=3)
    scores = model.fit(images, masks)
    assert scores["many_to_one"] > scores["permutation"]
    assert sorted(model.mapping) == [0, 1, 2]


def test_ignored_pixels_do_not_vote():
    images, masks = banded(4, (1, 2, 0))
    masks[:, :, :24] = 255
    model = OtsuThreshold(num_classes=3)
    model.fit(images, masks)
    assert model.mapping == [1, 2, 0]


def test_state_round_trips_and_refuses_another_class_count():
    images, masks = banded(3, (2, 0, 1))
    model = OtsuThreshold(smooth_sigma=0.5, num_classes=3)
    model.fit(images, masks)
    again = OtsuThreshold(num_classes=3)
    again.load_state_dict(model.state_dict())
    assert again.mapping == [2, 0, 1] and again.smooth_sigma == 0.5
    assert np.array_equal(again.predict(images[0]), model.predict(images[0]))
    with pytest.raises(SegbenchError, match="fitted for 3 classes, asked for 2"):
        OtsuThreshold().load_state_dict(model.state_dict())
    with pytest.raises(SegbenchError, match="fitted for 2 classes, asked for 3"):
        OtsuThreshold(num_classes=3).load_state_dict(OtsuThreshold().state_dict())


def test_flat_image_is_background():
    flat = np.full((32, 32), 90, dtype=np.uint8)
    two_levels = np.where(np.arange(32)[None, :] < 16, 10, 200).astype(np.uint8).repeat(32, 0)
    model = OtsuThreshold(smooth_sigma=0.0, num_classes=3)
    model.mapping = [2, 1, 0]
    assert not model.predict(flat).any() and not model.predict(two_levels).any()
    images, masks = banded(2, (0, 1, 2), size=32)
    model.fit(np.concatenate([images, flat[None]]), np.concatenate([masks, masks[:1]]))
    assert model.mapping == [0, 1, 2]


def old_foreground(image, sigma, polarity):
    """Binary Otsu as segbench computed it before several classes existed."""
    x = image.astype(np.float32)
    if sigma > 0:
        x = ndimage.gaussian_filter(x, sigma)
    if x.min() == x.max():
        return np.zeros(x.shape, dtype=np.float32)
    bright = x > threshold_otsu(x)
    return (bright if polarity == "bright" else ~bright).astype(np.float32)


def test_binary_otsu_is_unchanged():
    images, masks = banded(3, (1, 0, 0))  # foreground: the dark band
    model = OtsuThreshold(smooth_sigma=1.0)
    scores = model.fit(images, masks)
    assert model.polarity == "dark" and set(scores) == {"bright", "dark"}
    assert model.state_dict() == {"smooth_sigma": 1.0, "polarity": "dark"}
    for image in images:
        pred = model.predict(image)
        assert pred.dtype == np.float32
        assert np.array_equal(pred, old_foreground(image, 1.0, "dark"))
