"""Tests for the synthetic SEM particle generator (segbench.data.synthetic)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from segbench.data.synthetic import generate_sample, sample_seed

H, W = 768, 1024
N_IMAGES = 4


@pytest.fixture(scope="module")
def samples() -> list[tuple[np.ndarray, np.ndarray]]:
    return [generate_sample(sample_seed(123, i)) for i in range(N_IMAGES)]


def _otsu_threshold(image: np.ndarray) -> int:
    """Global Otsu threshold of a uint8 image: pixels > t are foreground."""
    hist = np.bincount(image.ravel(), minlength=256).astype(np.float64)
    weight0 = np.cumsum(hist)
    weight1 = weight0[-1] - weight0
    sum0 = np.cumsum(hist * np.arange(256))
    mean0 = sum0 / np.maximum(weight0, 1)
    mean1 = (sum0[-1] - sum0) / np.maximum(weight1, 1)
    return int(np.argmax(weight0 * weight1 * (mean0 - mean1) ** 2))


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    pred, truth = pred.astype(bool), truth.astype(bool)
    return 2.0 * float((pred & truth).sum()) / float(pred.sum() + truth.sum())


def _local_contrast(image: np.ndarray, mask: np.ndarray, min_area: int = 40) -> np.ndarray:
    """Per particle cluster: mean inside minus mean of a 4-px ring just outside it."""
    labels, _ = ndi.label(mask)
    image = image.astype(np.float64)
    diffs = []
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        pad = tuple(slice(max(s.start - 5, 0), s.stop + 5) for s in box)
        comp = labels[pad] == i
        if comp.sum() < min_area:
            continue
        ring = ndi.binary_dilation(comp, iterations=4) & ~mask[pad].astype(bool)
        if ring.sum() < 10:
            continue
        diffs.append(image[pad][comp].mean() - image[pad][ring].mean())
    return np.array(diffs)


SMALL = {"height": 128, "width": 160, "n_particles": (4, 8), "radius": (4.0, 16.0)}


def test_deterministic_for_seed() -> None:
    a_img, a_mask = generate_sample(7, **SMALL)
    b_img, b_mask = generate_sample(7, **SMALL)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    c_img, c_mask = generate_sample(8, **SMALL)
    assert not np.array_equal(a_img, c_img)
    assert not np.array_equal(a_mask, c_mask)


def test_seed_sequence_input_matches_repeat() -> None:
    first = generate_sample(sample_seed(5, 3), **SMALL)
    again = generate_sample(sample_seed(5, 3), **SMALL)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])


def test_sample_seed_independent_of_dataset_size() -> None:
    spawned = np.random.SeedSequence(11).spawn(6)
    for i in (0, 2, 5):
        ours = np.random.default_rng(sample_seed(11, i)).integers(0, 2**32, 8)
        ref = np.random.default_rng(spawned[i]).integers(0, 2**32, 8)
        np.testing.assert_array_equal(ours, ref)
    img_a, _ = generate_sample(sample_seed(11, 2), **SMALL)
    img_b, _ = generate_sample(sample_seed(11, 3), **SMALL)
    assert not np.array_equal(img_a, img_b)
    with pytest.raises(ValueError):
        sample_seed(11, -1)


def test_shapes_dtypes_values(samples) -> None:
    for image, mask in samples:
        assert image.shape == (H, W) and mask.shape == (H, W)
        assert image.dtype == np.uint8 and mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) <= {0, 1}
        assert 0.05 <= mask.mean() <= 0.6
        # Uses the grey range rather than collapsing to a few levels.
        assert np.unique(image).size > 64


def test_custom_size() -> None:
    image, mask = generate_sample(3, height=64, width=200, n_particles=(3, 5), radius=(4.0, 8.0))
    assert image.shape == mask.shape == (64, 200)
    assert 0 < mask.sum() < mask.size


def test_many_connected_particles(samples) -> None:
    for _, mask in samples:
        assert ndi.label(mask)[1] >= 15


def test_mask_aligned_with_drawn_particles(samples) -> None:
    for image, mask in samples:
        diffs = _local_contrast(image, mask)
        assert diffs.size >= 10
        assert np.mean(diffs > 0) >= 0.9
        assert np.median(diffs) > 10.0
        # A displaced mask no longer matches what was drawn.
        shifted = np.roll(mask, (25, 31), axis=(0, 1))
        assert np.median(_local_contrast(image, shifted)) < 0.5 * np.median(diffs)


def test_global_otsu_does_not_solve_it(samples) -> None:
    dices = [_dice(image > _otsu_threshold(image), mask) for image, mask in samples]
    assert np.mean(dices) < 0.8
    # ... while the particles are still there to be found.
    assert np.mean(dices) > 0.3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"height": 63},
        {"width": 10},
        {"n_particles": (10, 5)},
        {"n_particles": (0, 5)},
        {"radius": (10.0, 5.0)},
        {"radius": (-1.0, 5.0)},
        {"radius": (0.0, 0.0)},
    ],
)
def test_invalid_arguments(kwargs) -> None:
    with pytest.raises(ValueError):
        generate_sample(0, **kwargs)


def test_noise_knob_scales_acquisition_noise() -> None:
    default_img, default_mask = generate_sample(7, **SMALL)
    nominal_img, nominal_mask = generate_sample(7, noise=1.0, **SMALL)
    np.testing.assert_array_equal(default_img, nominal_img)
    np.testing.assert_array_equal(default_mask, nominal_mask)
    # The noise level changes no random draw: same scene, only the residual noise grows.
    clean, clean_mask = generate_sample(7, noise=0.0, **SMALL)
    noisy, noisy_mask = generate_sample(7, noise=3.0, **SMALL)
    np.testing.assert_array_equal(clean_mask, noisy_mask)
    var_nominal = np.var(nominal_img.astype(float) - clean.astype(float))
    var_noisy = np.var(noisy.astype(float) - clean.astype(float))
    assert var_noisy > 4.0 * var_nominal > 0.0
    for bad in (-0.5, float("nan")):
        with pytest.raises(ValueError):
            generate_sample(7, noise=bad, **SMALL)


def test_instance_labels_name_each_visible_particle() -> None:
    image, mask = generate_sample(7, **SMALL)
    again, ids = generate_sample(7, instances=True, **SMALL)
    np.testing.assert_array_equal(again, image)  # the same draw, the same picture
    assert ids.dtype == np.uint16 and ids.shape == mask.shape
    np.testing.assert_array_equal(ids > 0, mask)  # their union is the binary mask
    n_objects = np.unique(ids[ids > 0]).size
    assert n_objects >= ndi.label(mask)[1] and n_objects <= SMALL["n_particles"][1]


def test_later_particles_hide_earlier_ones() -> None:
    from segbench.data.synthetic import _make_particle, _paint, footprint

    rng = np.random.default_rng(0)
    first, second = _make_particle(rng, 30, 30, 12.0), _make_particle(rng, 30, 40, 12.0)
    shape = (64, 80)
    layer, ids, shadow = np.zeros(shape, np.float32), np.zeros(shape, np.uint16), np.ones(shape)
    for pid, p in enumerate((first, second), start=1):
        _paint(p, 0.0, layer, ids, pid, shadow)
    inside = []
    for p in (first, second):
        f = footprint(p, 0.0, shape)
        full = np.zeros(shape, bool)
        full[f.box] = f.inside
        inside.append(full)
    assert (inside[0] & inside[1]).any()
    assert (ids[inside[1]] == 2).all()  # drawn last: visible wherever it lies
    np.testing.assert_array_equal(ids == 1, inside[0] & ~inside[1])
