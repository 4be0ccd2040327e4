"""The model registry: every registered model builds, runs forward and backward, and fits."""

import re

import numpy as np
import pytest
import torch

from segbench.config import ENTRY_CLASSES
from segbench.errors import SegbenchError
from segbench.models import MODELS, build_ensemble, build_model
from tests.conftest import shipped_entry

TORCH_MODELS = [name for name, cls in ENTRY_CLASSES.items() if cls.kind == "torch"]
# The networks built around a segmentation_models_pytorch / timm encoder (SAM has its own).
ENCODER_MODELS = [n for n in TORCH_MODELS if "encoder_name" in ENTRY_CLASSES[n].model_fields]
# The shipped entry of each registered model.
ENTRIES = {"sam_zero_shot": "sam_box"}


def entry(name: str, **changes):
    """The shipped params.yaml's entry of registered model ``name``, with ``changes``."""
    if name == "sam_decoder":  # nothing written to the repository
        changes.setdefault("embedding_cache", None)
    return shipped_entry(ENTRIES.get(name, name), **changes)


def network(name: str, *, in_channels: int = 3):
    """Every registered network, built for ``in_channels`` (an ensemble builds its members)."""
    if name == "ensemble":
        members = {m: (entry(m), in_channels) for m in ("unet", "segformer")}
        return build_ensemble(members)
    return build_model(entry(name), in_channels=in_channels)


NETWORKS = [*TORCH_MODELS, "ensemble"]


def test_every_entry_class_has_a_builder_and_no_more():
    assert set(MODELS) == set(ENTRY_CLASSES)


def test_bad_model_params_name_the_entry():
    with pytest.raises(SegbenchError, match=r"models\.unet\.encoder_name"):
        build_model(entry("unet", encoder_name="no-such-encoder"))
    with pytest.raises(SegbenchError, match=r"models\.my_unet\.encoder_name"):
        build_model(entry("unet", encoder_name="no-such-encoder"), name="my_unet")


def test_every_registered_model_but_classical_and_zero_shot_sam_is_a_network():
    assert set(NETWORKS) == set(MODELS) - {"otsu", "sobel", "canny", "sam_zero_shot"} | {"ensemble"}


@pytest.mark.parametrize("name", NETWORKS)
def test_forward_backward_on_a_tiny_input(name):
    """Every torch model: (1, 3, 64, 64) -> (1, 1, 64, 64) logits, and a finite gradient for every
    trainable parameter. Batch 1 is enough: the coarsest feature map is 2x2, so each BatchNorm
    channel in train mode still sees 4 values (it fails only on 1)."""
    torch.manual_seed(0)
    model = network(name).train()
    x = torch.randn(1, 3, 64, 64)
    if getattr(model, "guided", False):  # SAM: the reference drives its IoU-prediction term
        guide = torch.zeros(1, 1, 64, 64)
        guide[..., 8:40, 16:48] = 1
        logits = model(x, guide)
        loss = logits.mean() + model.aux_loss
    else:
        logits = model(x)
        loss = logits.mean()
    assert logits.shape == (1, 1, 64, 64)
    loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    no_grad = [n for n, p in trainable.items() if p.grad is None]
    assert not no_grad, f"parameters without a gradient: {no_grad[:5]}"
    bad = [n for n, p in trainable.items() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad[:5]}"


def test_attention_gates_scale_each_skip_by_a_map_in_0_1():
    from segbench.models.attention_unet import AttentionGate

    torch.manual_seed(0)
    model = build_model(entry("attention_unet"))
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 1, 64, 64)
    # resnet18 skips at strides 16, 8, 4, 2 (the stride-32 map is the gating start, no skip)
    assert [tuple(a.shape) for a in model.last_attention] == [
        (2, 1, 4, 4),
        (2, 1, 8, 8),
        (2, 1, 16, 16),
        (2, 1, 32, 32),
    ]
    for alpha in model.last_attention:
        assert alpha.min() >= 0.0 and alpha.max() <= 1.0 and alpha.std() > 0

    gate = AttentionGate(x_channels=8, g_channels=16, inter_channels=4)
    x, g = torch.randn(2, 8, 32, 32), torch.randn(2, 16, 16, 16)
    gated, alpha = gate(x, g)
    assert gated.shape == x.shape and alpha.shape == (2, 1, 32, 32)
    assert alpha.min() >= 0.0 and alpha.max() <= 1.0
    torch.testing.assert_close(gated, x * alpha)


@pytest.mark.parametrize("name", ENCODER_MODELS)
@pytest.mark.parametrize("encoder", ["resnet19", "tu-no_such_timm_model"])
def test_unknown_encoder_is_a_user_error(name, encoder):
    with pytest.raises(SegbenchError, match=rf"models\.{name}\.encoder_name: unknown encoder") as e:
        build_model(entry(name, encoder_name=encoder))
    assert "resnet18" in str(e.value) and "get_encoder_names()" in str(e.value)
    if encoder == "resnet19":
        assert "did you mean 'resnet18'" in str(e.value)


@pytest.mark.parametrize("name", ENCODER_MODELS)
def test_weights_of_another_encoder_are_a_user_error(tmp_path, name):
    import segmentation_models_pytorch as smp

    path = tmp_path / "mobilenet_v2.pth"
    torch.save(smp.encoders.get_encoder("mobilenet_v2", weights=None).state_dict(), path)
    with pytest.raises(SegbenchError) as e:
        build_model(entry(name, encoder_weights=str(path)))
    message = str(e.value)
    assert message.startswith(f"models.{name}.encoder_weights: {path} does not fit")
    assert re.search(r"missing [1-9]\d* keys.*unexpected [1-9]\d* keys", message), message


@pytest.mark.parametrize(
    ("name", "encoder_name", "in_channels"),
    [
        ("unet", "resnet18", 1),
        ("attention_unet", "resnet18", 3),
        ("attention_unet", "tu-resnet18", 2),
    ],
)
def test_local_encoder_weights_load_for_any_in_channels(tmp_path, name, encoder_name, in_channels):
    """A torchvision RGB ResNet state dict loads; the first conv is fitted as smp does it
    (summed for 1 channel, cycled and scaled by 3/C otherwise); timm encoders get ``model.``."""
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = build_model(
        entry(name, encoder_name=encoder_name, encoder_weights=str(path)), in_channels=in_channels
    )
    own = model.encoder.state_dict()
    prefix = "model." if encoder_name.startswith("tu-") else ""
    rgb = reference.conv1.weight.detach()
    expected = {1: rgb.sum(dim=1, keepdim=True), 2: rgb[:, :2] * 1.5, 3: rgb}[in_channels]
    torch.testing.assert_close(own[f"{prefix}conv1.weight"], expected)
    torch.testing.assert_close(
        own[f"{prefix}layer1.0.conv1.weight"], reference.layer1[0].conv1.weight.detach()
    )


def test_segformer_loads_mit_weights_and_skips_the_classifier(tmp_path):
    import segmentation_models_pytorch as smp

    state = smp.encoders.get_encoder("mit_b0", in_channels=3, weights=None).state_dict()
    state |= {"head.weight": torch.zeros(1000, 256), "head.bias": torch.zeros(1000)}
    path = tmp_path / "mit_b0.pth"
    torch.save(state, path)
    model = build_model(entry("segformer", encoder_weights=str(path)))
    torch.testing.assert_close(
        model.encoder.state_dict()["patch_embed1.proj.weight"],
        state["patch_embed1.proj.weight"].sum(dim=1, keepdim=True),
    )


def test_unet_rejects_unusable_weights(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SegbenchError, match="cannot load encoder weights"):
        build_model(entry("unet", encoder_weights=str(bad)))
    with pytest.raises(SegbenchError, match="does not exist"):
        build_model(entry("unet", encoder_weights=str(tmp_path / "missing.pth")))


def test_otsu_chooses_polarity_on_training_data():
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 64, 64), dtype=np.uint8)
    masks[:, 16:40, 20:44] = 1
    bright = (masks * 150 + 50 + rng.normal(0, 5, masks.shape)).clip(0, 255).astype(np.uint8)
    dark = 255 - bright
    model = build_model(entry("otsu"))
    scores = model.fit(dark, masks)
    assert model.polarity == "dark" and scores["dark"] > 0.95 > scores["bright"]
    pred = model.predict(dark[0])
    assert pred.dtype == np.float32 and set(np.unique(pred)) <= {0.0, 1.0}
    assert (pred == masks[0]).mean() > 0.98
    assert model.fit(bright, masks)["bright"] > 0.95 and model.polarity == "bright"
    clone = build_model(entry("otsu"))
    clone.load_state_dict(model.state_dict())
    assert clone.polarity == "bright"


@pytest.mark.parametrize("name", ["unet", "attention_unet"])
def test_an_rgb_model_with_imagenet_weights_takes_imagenet_statistics(tmp_path, name):
    """segbench standardises every image as (unit - 0.5) / 0.25; an RGB encoder loaded with
    ImageNet weights sees (unit - mean_c) / std_c instead, per channel, as it was trained."""
    import torchvision

    from segbench.models.smp_models import IMAGENET_MEAN, IMAGENET_STD

    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    model = build_model(entry(name, encoder_weights=str(path)), in_channels=3).eval()
    assert "input_scale" in model.state_dict()  # saved with the weights
    unit = torch.rand(1, 3, 64, 64)
    ours = (unit - 0.5) / 0.25
    imagenet = (unit - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET_STD
    ).view(1, 3, 1, 1)
    bare = build_model(entry(name, encoder_weights=str(path)), in_channels=3).eval()
    bare.load_state_dict(model.state_dict())
    bare._forward_pre_hooks.clear()  # the same network without the re-standardisation
    with torch.no_grad():
        torch.testing.assert_close(model(ours), bare(imagenet), rtol=1e-4, atol=1e-4)
    grey = build_model(entry(name, encoder_weights=str(path)), in_channels=1)
    assert "input_scale" not in grey.state_dict()  # one channel: no ImageNet statistics
