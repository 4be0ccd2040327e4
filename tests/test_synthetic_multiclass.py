"""Tests for the multi-class synthetic domains: SEM grains of two phases (grey) and aerial
parking lots (RGB), and their listing through the synthetic source."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.filters import threshold_multiotsu

from segbench.config import load_params
from segbench.config.data import DOMAIN_CLASSES
from segbench.data import parking
from segbench.data.parking import generate_parking
from segbench.data.phases import generate_phases
from segbench.data.sources import open_source
from segbench.data.synthetic import generate_sample, sample_seed

REPO = Path(__file__).resolve().parents[1]
PHASES_KW = {"height": 160, "width": 208, "n_particles": (6, 12), "radius": (5.0, 24.0)}
PARKING_KW = {"height": 144, "width": 192}
GENERATORS = {
    "phases": (generate_phases, PHASES_KW),
    "parking": (generate_parking, PARKING_KW),
}


@pytest.mark.parametrize("domain", GENERATORS)
def test_deterministic_per_seed(domain):
    generate, kw = GENERATORS[domain]
    seed = sample_seed(4, 2)
    a_img, a_mask = generate(seed, **kw)
    b_img, b_mask = generate(seed, **kw)  # the same SeedSequence object, used twice
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    c_img, c_mask = generate(sample_seed(4, 3), **kw)
    assert not np.array_equal(a_img, c_img)
    assert not np.array_equal(a_mask, c_mask)


@pytest.mark.parametrize("domain", GENERATORS)
def test_shapes_dtypes_and_values(domain):
    generate, kw = GENERATORS[domain]
    image, mask = generate(1, **kw)
    h, w = kw["height"], kw["width"]
    assert image.shape == ((h, w, 3) if domain == "parking" else (h, w))
    assert image.dtype == np.uint8 and mask.dtype == np.uint8
    assert mask.shape == (h, w)
    assert set(np.unique(mask).tolist()) <= {0, 1, 2}
    assert len(DOMAIN_CLASSES[domain]) == 3


@pytest.mark.parametrize("domain", GENERATORS)
def test_every_class_shows_up_with_a_sensible_share(domain):
    generate, kw = GENERATORS[domain]
    shares = np.array(
        [np.bincount(generate(sample_seed(7, i), **kw)[1].ravel(), minlength=3) for i in range(8)]
    ) / (kw["height"] * kw["width"])
    assert ((shares > 0).mean(axis=0) >= 0.75).all(), shares  # each class in most frames
    mean = shares.mean(axis=0)
    assert mean[0] > 0.5  # background dominates
    assert (mean[1:] > 0.005).all() and (mean[1:] < 0.4).all(), mean


@pytest.mark.parametrize("domain", GENERATORS)
def test_noise_changes_the_image_not_the_scene(domain):
    generate, kw = GENERATORS[domain]
    clean_img, clean_mask = generate(3, **kw, noise=0.0)
    noisy_img, noisy_mask = generate(3, **kw, noise=2.5)
    np.testing.assert_array_equal(clean_mask, noisy_mask)
    assert not np.array_equal(clean_img, noisy_img)


@pytest.mark.parametrize(
    ("domain", "bad", "message"),
    [
        ("phases", {"height": 32}, "at least 64"),
        ("phases", {"width": 100.5}, "integers"),
        ("phases", {"noise": -1.0}, "noise"),
        ("phases", {"noise": math.nan}, "noise"),
        ("phases", {"n_particles": (9, 3)}, "n_particles range is inverted"),
        ("phases", {"radius": (0.0, 4.0)}, "radius bounds must be positive"),
        ("parking", {"height": 63}, "at least 64"),
        ("parking", {"noise": math.inf}, "noise"),
        ("parking", {"noise": math.nan}, "noise"),
    ],
)
def test_bad_arguments_are_refused(domain, bad, message):
    generate, kw = GENERATORS[domain]
    with pytest.raises(ValueError, match=message):
        generate(0, **{**kw, **bad})


# --- phases ---------------------------------------------------------------------------------


def test_phase_grains_are_exactly_the_particle_shapes():
    """Same seed, same placement: the grains' union is the binary particle mask, pixel for
    pixel (the mask is the drawn shapes, only split into two phases)."""
    for i in range(3):
        _, phases = generate_phases(sample_seed(5, i), **PHASES_KW)
        _, particles = generate_sample(sample_seed(5, i), **PHASES_KW)
        np.testing.assert_array_equal(phases > 0, particles > 0)


def _filter_bank(image: np.ndarray) -> np.ndarray:
    """(H, W, 4) features: band energies relative to the finest band, local brightness."""
    f = image.astype(np.float32)
    g = [f] + [ndi.gaussian_filter(f, s) for s in (0.8, 1.6, 3.2, 6.4)]
    bands = [np.log(ndi.gaussian_filter((g[i] - g[i + 1]) ** 2, 3.0) + 1.0) for i in range(4)]
    brightness = np.log(g[2] + 1.0) - np.log(ndi.gaussian_filter(f, 20.0) + 1.0)
    return np.stack([b - bands[0] for b in bands[1:]] + [brightness], axis=-1)


def test_phases_need_texture_not_one_global_threshold():
    """A linear classifier on a small filter bank, fitted on three frames, tells the phases
    apart on three others; the best single grey level (chosen knowing the answer) does not,
    and multi-Otsu segments the three classes poorly."""
    kw = {"height": 192, "width": 256, "n_particles": (8, 14), "radius": (8.0, 28.0)}
    frames = [generate_phases(sample_seed(3, i), **kw) for i in range(6)]
    samples = []  # (features, grey level) of phase_a and phase_b interiors, away from edges
    for image, mask in frames:
        feats = _filter_bank(image)
        inner = [ndi.binary_erosion(mask == c, iterations=3) for c in (1, 2)]
        samples.append([(feats[m], image[m]) for m in inner])
    fit_a = np.concatenate([s[0][0] for s in samples[:3]])
    fit_b = np.concatenate([s[1][0] for s in samples[:3]])
    mu_a, mu_b = fit_a.mean(0), fit_b.mean(0)
    cov = np.cov(np.concatenate([fit_a - mu_a, fit_b - mu_b]).T)
    w = np.linalg.solve(cov, mu_b - mu_a)  # Fisher's linear discriminant
    cut = w @ (mu_a + mu_b) / 2
    for (fa, _), (fb, _) in samples[3:]:
        balanced = ((fa @ w < cut).mean() + (fb @ w > cut).mean()) / 2
        assert balanced > 0.85, balanced
    grey_a = np.concatenate([s[0][1] for s in samples])
    grey_b = np.concatenate([s[1][1] for s in samples])
    oracle = max(((grey_a < t).mean() + (grey_b >= t).mean()) / 2 for t in range(256))
    assert oracle < 0.75, oracle
    mious = []
    for image, mask in frames:
        pred = np.digitize(image, threshold_multiotsu(image, classes=3))
        hit = [
            ((pred == c) & (mask == c)).sum() / ((pred == c) | (mask == c)).sum() for c in range(3)
        ]
        mious.append(np.mean(hit))
    assert np.mean(mious) < 0.6, mious


# --- parking --------------------------------------------------------------------------------


def test_markings_under_a_car_belong_to_the_car(monkeypatch):
    """Every pixel of every drawn car footprint is class 1, and nothing else is."""
    drawn = np.zeros((PARKING_KW["height"], PARKING_KW["width"]), bool)
    paint_car = parking._paint_car

    def recording(car, image, mask):
        scratch = np.zeros_like(mask)
        paint_car(car, image.copy(), scratch)
        drawn[scratch == parking.CAR] = True
        paint_car(car, image, mask)

    monkeypatch.setattr(parking, "_paint_car", recording)
    covered = 0
    for i in range(3):
        drawn[:] = False
        _, mask = generate_parking(sample_seed(6, i), **PARKING_KW)
        np.testing.assert_array_equal(mask == 1, drawn)
        # Lines run under the cars: without the cars, marking pixels would be there.
        monkeypatch.setattr(parking, "_paint_car", lambda car, image, mask: None)
        _, bare = generate_parking(sample_seed(6, i), **PARKING_KW)
        monkeypatch.setattr(parking, "_paint_car", recording)
        np.testing.assert_array_equal(bare[~drawn], mask[~drawn])
        covered += int(((bare == 2) & drawn).sum())
    assert covered > 0


def test_parking_is_really_colour():
    """Yellow markings are as bright as many cars in grey, so only colour separates them."""
    frames = [generate_parking(sample_seed(2, i), **PARKING_KW) for i in range(8)]
    saw_yellow = saw_white = False
    for image, mask in frames:
        rgb = image.astype(np.float64)
        chroma = rgb.max(-1) - rgb.min(-1)
        assert chroma.max() > 60  # not three copies of one grey channel
        luma = rgb @ [0.2126, 0.7152, 0.0722]
        yellowness = (rgb[..., 0] + rgb[..., 1]) / 2 - rgb[..., 2]
        marks, cars = mask == 2, mask == 1
        if np.median(yellowness[marks]) > 40:
            saw_yellow = True
            lo, hi = np.percentile(luma[cars], [10, 90])
            assert lo < np.median(luma[marks]) < hi
            grey_cars = cars & (chroma < 20)
            assert np.median(yellowness[grey_cars]) < 15
        elif np.median(yellowness[marks]) < 20:
            saw_white = True
            assert np.median(luma[marks]) > np.median(luma[mask == 0]) + 25
    assert saw_yellow and saw_white


# --- the synthetic source -------------------------------------------------------------------


@pytest.mark.parametrize("domain", ["phases", "parking"])
def test_source_lists_the_domain(domain):
    params = load_params(REPO / "params.yaml").with_overrides(
        {
            "data.synthetic.domain": domain,
            "data.synthetic.n_images": 10,
            "data.synthetic.height": 96,
            "data.synthetic.width": 128,
        }
    )
    listing = open_source(params.data)
    assert listing.problems == []
    assert listing.where == f"synthetic ({domain})"
    assert [item.id for item in listing.items] == [f"{domain}_{i:04d}" for i in range(10)]
    assert params.data.class_spec().names == DOMAIN_CLASSES[domain]
    item = listing.items[3]
    image, mask = item.read_image(), item.read_mask()
    assert image.shape == ((96, 128, 3) if domain == "parking" else (96, 128))
    assert mask.shape == (96, 128) and set(np.unique(mask).tolist()) <= {0, 1, 2}
    seed = sample_seed(params.data.seed, 3)
    syn = params.data.synthetic
    if domain == "parking":
        expected = generate_parking(seed, height=96, width=128, noise=syn.noise)
    else:
        area = 96 * 128 / (1024 * 768)  # n_particles is per 1024x768 frame
        expected = generate_phases(
            seed,
            height=96,
            width=128,
            n_particles=tuple(max(1, round(n * area)) for n in syn.n_particles),
            radius=tuple(syn.radius),
            noise=syn.noise,
        )
    np.testing.assert_array_equal(image, expected[0])
    np.testing.assert_array_equal(mask, expected[1])
