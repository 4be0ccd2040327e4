"""The model registry: every registered model builds, runs forward and backward, and fits."""

import numpy as np
import pytest
import torch

from segbench.errors import SegbenchError
from segbench.models import MODELS, build_model, get_spec

TORCH_MODELS = [name for name, spec in MODELS.items() if spec.kind == "torch"]


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(SegbenchError, match=r"unknown model 'segnet'; valid models: otsu, unet"):
        get_spec("segnet")


def test_bad_model_params_name_the_key():
    with pytest.raises(SegbenchError, match=r"models\.unet\.encoder_depth"):
        build_model("unet", encoder_depth=1)
    with pytest.raises(SegbenchError, match=r"models\.unet\.encoder_name"):
        build_model("unet", encoder_name="no-such-encoder")


@pytest.mark.parametrize("name", TORCH_MODELS)
def test_forward_backward_on_a_tiny_input(name):
    torch.manual_seed(0)
    model = build_model(name)
    x = torch.randn(2, 1, 64, 64)
    logits = model(x)
    assert logits.shape == (2, 1, 64, 64)
    logits.mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)


def test_unet_loads_local_encoder_weights_safely(tmp_path):
    """A torchvision-style RGB ResNet state dict loads (first conv summed to one channel)."""
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = build_model("unet", encoder_weights=str(path))
    expected = reference.state_dict()["conv1.weight"].sum(dim=1, keepdim=True)
    torch.testing.assert_close(model.encoder.conv1.weight.detach(), expected)
    torch.testing.assert_close(
        model.encoder.layer1[0].conv1.weight.detach(), reference.layer1[0].conv1.weight
    )


def test_unet_rejects_unusable_weights(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SegbenchError, match="cannot load encoder weights"):
        build_model("unet", encoder_weights=str(bad))
    with pytest.raises(SegbenchError, match="does not exist"):
        build_model("unet", encoder_weights=str(tmp_path / "missing.pth"))


def test_otsu_chooses_polarity_on_training_data():
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 64, 64), dtype=np.uint8)
    masks[:, 16:40, 20:44] = 1
    bright = (masks * 150 + 50 + rng.normal(0, 5, masks.shape)).clip(0, 255).astype(np.uint8)
    dark = 255 - bright
    model = build_model("otsu")
    scores = model.fit(dark, masks)
    assert model.polarity == "dark" and scores["dark"] > 0.95 > scores["bright"]
    pred = model.predict(dark[0])
    assert pred.dtype == np.float32 and set(np.unique(pred)) <= {0.0, 1.0}
    assert (pred == masks[0]).mean() > 0.98
    assert model.fit(bright, masks)["bright"] > 0.95 and model.polarity == "bright"
    clone = build_model("otsu")
    clone.load_state_dict(model.state_dict())
    assert clone.polarity == "bright"
