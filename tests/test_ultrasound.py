"""Tests for the synthetic breast-ultrasound generator (segbench.data.ultrasound)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from segbench.data.synthetic import sample_seed
from segbench.data.ultrasound import _render, generate_ultrasound

N_FRAMES = 40
# A smaller frame (and proportionally smaller lesions) keeps the 40-frame statistics fast.
SMALL = {"height": 192, "width": 256, "lesion_radius": (10.0, 45.0)}


@pytest.fixture(scope="module")
def frames() -> list:
    """40 frames at the default lesion probability 0.8, with the internal decoy map."""
    return [
        _render(sample_seed(2024, i), SMALL["height"], SMALL["width"], 0.8, (10.0, 45.0), 1.0)
        for i in range(N_FRAMES)
    ]


def _touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def _ring_contrast(image: np.ndarray, comp: np.ndarray, exclude: np.ndarray) -> float:
    """Mean grey level inside ``comp`` minus that of a ring 3-10 px outside it."""
    image = image.astype(np.float64)
    ring = ndi.binary_dilation(comp, iterations=10) & ~ndi.binary_dilation(comp, iterations=3)
    ring &= ~exclude
    return float(image[comp].mean() - image[ring].mean())


def _local_variance(image: np.ndarray, size: int = 7) -> float:
    """Median over the central rows of the grey-level variance in ``size``-px windows."""
    x = image.astype(np.float64)
    mean = ndi.uniform_filter(x, size)
    var = ndi.uniform_filter(x * x, size) - mean**2
    h = x.shape[0]
    return float(np.median(var[h // 4 : 3 * h // 4]))


def test_shapes_dtypes_values() -> None:
    for seed in range(3):
        image, mask = generate_ultrasound(seed)
        assert image.shape == mask.shape == (384, 512)
        assert image.dtype == np.uint8 and mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) <= {0, 1}
        assert np.unique(image).size > 100  # speckled grey levels, not a few flat tones
    image, mask = generate_ultrasound(1, height=64, width=200)
    assert image.shape == mask.shape == (64, 200)


def test_deterministic_and_seed_sensitive() -> None:
    a_img, a_mask = generate_ultrasound(7, **SMALL)
    b_img, b_mask = generate_ultrasound(7, **SMALL)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    c_img, _ = generate_ultrasound(8, **SMALL)
    assert not np.array_equal(a_img, c_img)
    # A SeedSequence object passed twice gives the same frame (it is not consumed) ...
    seq = sample_seed(3, 5)
    first = generate_ultrasound(seq, **SMALL)
    again = generate_ultrasound(seq, **SMALL)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    # ... and neighbouring per-image seeds differ.
    other = generate_ultrasound(sample_seed(3, 6), **SMALL)
    assert not np.array_equal(first[0], other[0])


def test_lesion_toggle_keeps_the_same_breast() -> None:
    without, empty = generate_ultrasound(5, lesion_probability=0.0)
    with_lesion, mask = generate_ultrasound(5, lesion_probability=1.0)
    assert empty.sum() == 0 and mask.sum() > 0
    far = ~ndi.binary_dilation(mask.astype(bool), iterations=40)
    corr = np.corrcoef(without[far].astype(float), with_lesion[far].astype(float))[0, 1]
    assert corr > 0.95


def test_empty_fraction_follows_probability(frames) -> None:
    empty = sum(not f.mask.any() for f in frames)
    # Expected 8 of 40 (sd ~2.5): a loose 3-sigma band.
    assert 2 <= empty <= 16
    half = [
        generate_ultrasound(s, lesion_probability=0.5, **SMALL)[1].sum() == 0 for s in range(40)
    ]
    assert 0.25 < np.mean(half) < 0.75
    for seed in range(10):
        assert generate_ultrasound(seed, lesion_probability=0.0, **SMALL)[1].sum() == 0
        assert generate_ultrasound(seed, lesion_probability=1.0, **SMALL)[1].sum() > 0


def test_lesion_is_one_component_inside_the_frame(frames) -> None:
    lesions = [f.mask for f in frames if f.mask.any()]
    assert len(lesions) >= 20
    for mask in lesions:
        assert ndi.label(mask)[1] == 1
        assert not _touches_border(mask)
    # Even a lesion far too large for the frame is shrunk to fit.
    for seed in range(5):
        _, mask = generate_ultrasound(
            seed, height=64, width=64, lesion_probability=1.0, lesion_radius=(200.0, 300.0)
        )
        assert ndi.label(mask)[1] == 1 and not _touches_border(mask)


def test_lesion_radius_sets_the_size() -> None:
    def equiv_radius(radius):
        kwargs = {"lesion_probability": 1.0, "lesion_radius": radius}
        areas = [generate_ultrasound(s, **kwargs)[1].sum() for s in range(4)]
        return np.sqrt(np.array(areas) / np.pi)

    small, large = equiv_radius((12.0, 12.0)), equiv_radius((60.0, 60.0))
    assert np.all((small > 8) & (small < 18))
    assert np.all((large > 40) & (large < 80))


def test_lesion_darker_than_surrounding_tissue(frames) -> None:
    diffs = [
        _ring_contrast(f.image, f.mask, f.mask | f.decoys) for f in frames if f.mask.sum() >= 30
    ]
    assert len(diffs) >= 20
    assert all(d < 0 for d in diffs)
    assert np.median(diffs) < -30


def test_decoys_present_and_less_dark_than_lesions(frames) -> None:
    lesion, decoy = [], []
    for f in frames:
        # Every frame, with or without a lesion, carries dark decoys.
        assert f.decoys.sum() > 0
        labels, n = ndi.label(f.decoys)
        exclude = f.mask | f.decoys
        for k in range(1, n + 1):
            comp = labels == k
            if comp.sum() >= 30:
                decoy.append(_ring_contrast(f.image, comp, exclude))
        if f.mask.sum() >= 30:
            lesion.append(_ring_contrast(f.image, f.mask, exclude))
    assert len(decoy) >= N_FRAMES
    # Decoys are dark (otherwise they would not be decoys) but lighter than lesions on average.
    assert np.median(decoy) < -5
    assert np.mean(decoy) > np.mean(lesion) + 10
    assert np.mean(np.array(decoy) < np.median(lesion)) < 0.25


def test_speckle_strength_raises_local_variance() -> None:
    for seed in range(3):
        variances = [
            _local_variance(generate_ultrasound(seed, speckle=sp, **SMALL)[0])
            for sp in (0.0, 1.0, 2.0)
        ]
        assert variances[0] < variances[1] < variances[2]
        assert variances[1] > 1.5 * variances[0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"height": 63},
        {"width": 10},
        {"lesion_probability": -0.1},
        {"lesion_probability": 1.5},
        {"lesion_probability": float("nan")},
        {"lesion_radius": (0.0, 10.0)},
        {"lesion_radius": (-5.0, 10.0)},
        {"lesion_radius": (30.0, 10.0)},
        {"speckle": -1.0},
        {"speckle": float("nan")},
    ],
)
def test_invalid_arguments(kwargs) -> None:
    with pytest.raises(ValueError):
        generate_ultrasound(0, **kwargs)
