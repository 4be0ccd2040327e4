"""Sliding-window inference: overlapping windows are averaged and the whole image is covered."""

import numpy as np
import pytest
import torch
from torch import nn

from segbench.inference import blend_weights, sliding_window_proba


class Identity(nn.Module):
    """Logits = input, so the averaged probability must equal sigmoid(image) exactly."""

    def forward(self, x):
        return x.clone()


class PositionSensitive(nn.Module):
    """Logit depends on where a pixel sits inside its window, so averaging is visible."""

    def forward(self, x):
        ramp = torch.linspace(-2, 2, x.shape[-1])
        return torch.zeros_like(x) + ramp


@pytest.mark.parametrize("shape", [(100, 150), (64, 64), (40, 70), (130, 64)])
@pytest.mark.parametrize("overlap", [0.0, 0.5, 0.75])
def test_identity_model_gives_sigmoid_of_the_image(shape, overlap):
    image = torch.from_numpy(np.random.default_rng(0).normal(size=shape).astype(np.float32))
    proba = sliding_window_proba(
        Identity(),
        image[None],
        tile=64,
        overlap=overlap,
        batch_size=3,
        device=torch.device("cpu"),
    )
    assert proba.shape == shape and proba.dtype == np.float32
    np.testing.assert_allclose(proba, torch.sigmoid(image).numpy(), rtol=1e-5, atol=1e-6)


def test_overlapping_windows_are_averaged():
    image = torch.zeros(1, 64, 96)
    proba = sliding_window_proba(
        PositionSensitive(),
        image,
        tile=64,
        overlap=0.5,
        batch_size=8,
        device=torch.device("cpu"),
    )
    ramp = torch.sigmoid(torch.linspace(-2, 2, 64)).numpy()
    # Column 40 is covered by the windows starting at x=0 (position 40) and x=32 (position 8).
    assert proba[0, 40] == pytest.approx((ramp[40] + ramp[8]) / 2, rel=1e-5)
    assert proba[0, 0] == pytest.approx(ramp[0], rel=1e-5)  # only the first window


def test_gaussian_blending_favours_the_window_that_centres_a_pixel():
    image = torch.zeros(1, 64, 96)
    proba = sliding_window_proba(
        PositionSensitive(),
        image,
        tile=64,
        overlap=0.5,
        batch_size=8,
        device=torch.device("cpu"),
        blend="gaussian",
    )
    ramp = torch.sigmoid(torch.linspace(-2, 2, 64)).numpy()
    w = blend_weights(64, "gaussian")[32]  # the weights along the window's middle row
    # Column 40: position 40 of the first window, position 8 of the second.
    expected = (w[40] * ramp[40] + w[8] * ramp[8]) / (w[40] + w[8])
    assert proba[32, 40] == pytest.approx(expected, rel=1e-5)
    assert abs(proba[32, 40] - ramp[40]) < abs(proba[32, 40] - ramp[8])  # the nearer centre wins


@pytest.mark.parametrize("blend", ["gaussian", "mean"])
def test_any_blend_of_a_window_invariant_model_is_exact(blend):
    image = torch.from_numpy(np.random.default_rng(1).normal(size=(90, 130)).astype(np.float32))
    proba = sliding_window_proba(
        Identity(),
        image[None],
        tile=64,
        overlap=0.6,
        batch_size=2,
        device=torch.device("cpu"),
        blend=blend,
    )
    np.testing.assert_allclose(proba, torch.sigmoid(image).numpy(), rtol=1e-5, atol=1e-6)


def test_gaussian_weights_peak_at_the_centre_and_never_vanish():
    w = blend_weights(64, "gaussian")
    assert w.shape == (64, 64) and w.max() == pytest.approx(1.0, abs=1e-3)
    assert w.min() >= 1e-6 and w[0, 0] < w[16, 16] < w[31, 31]
    np.testing.assert_array_equal(w, w.T)
    with pytest.raises(ValueError, match="gaussian, mean"):
        blend_weights(64, "median")
