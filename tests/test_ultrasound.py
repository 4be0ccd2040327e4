"""The synthetic breast-ultrasound domain: exact lesion masks, empty frames, speckle, seeds."""

import numpy as np
import pytest
from scipy import ndimage

from segbench.data.synthetic import generate_sample
from segbench.data.ultrasound import generate_ultrasound


def test_shapes_dtypes_and_determinism():
    image, mask = generate_ultrasound(3, height=192, width=256)
    assert image.shape == mask.shape == (192, 256)
    assert image.dtype == np.uint8 and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1}
    again = generate_ultrasound(3, height=192, width=256)
    assert np.array_equal(image, again[0]) and np.array_equal(mask, again[1])
    assert not np.array_equal(image, generate_ultrasound(4, height=192, width=256)[0])


def test_lesion_probability_controls_empty_references():
    empty = [generate_ultrasound(s, lesion_probability=0.5)[1].sum() == 0 for s in range(40)]
    assert 0.25 < np.mean(empty) < 0.75
    assert all(generate_ultrasound(s, lesion_probability=0.0)[1].sum() == 0 for s in range(5))
    assert all(generate_ultrasound(s, lesion_probability=1.0)[1].sum() > 0 for s in range(5))


def test_one_dark_lesion_inside_the_frame():
    for seed in range(8):
        image, mask = generate_ultrasound(seed, lesion_probability=1.0)
        _, n = ndimage.label(mask)
        assert n == 1
        assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
        ring = ndimage.binary_dilation(mask, iterations=12) & ~ndimage.binary_dilation(
            mask, iterations=4
        )
        assert image[mask > 0].mean() < image[ring].mean()  # hypoechoic


def test_speckle_strength_roughens_the_texture():
    def roughness(img):
        x = img.astype(float)
        return np.abs(np.diff(x, axis=1)).mean()

    smooth = np.mean([roughness(generate_ultrasound(s, speckle=0.0)[0]) for s in range(3)])
    rough = np.mean([roughness(generate_ultrasound(s, speckle=1.0)[0]) for s in range(3)])
    assert rough > 1.5 * smooth


@pytest.mark.parametrize(
    "kwargs",
    [
        {"height": 32},
        {"lesion_probability": 1.5},
        {"lesion_radius": (30.0, 10.0)},
        {"speckle": -1.0},
    ],
)
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        generate_ultrasound(0, **kwargs)


def test_particle_noise_knob():
    kw = {"height": 128, "width": 128, "n_particles": (3, 6), "radius": (5.0, 15.0)}
    base, mask = generate_sample(1, **kw)
    same, _ = generate_sample(1, noise=1.0, **kw)
    assert np.array_equal(base, same)
    noisy, mask2 = generate_sample(1, noise=4.0, **kw)
    assert np.array_equal(mask, mask2)
    resid = lambda img: img.astype(float) - ndimage.median_filter(img.astype(float), 5)  # noqa: E731
    assert resid(noisy).std() > resid(base).std()
