"""Supervised segmenters from segmentation_models_pytorch, and the encoder helpers they share.

Every builder returns an ``nn.Module`` mapping (N, C, H, W) float32 images (normalised by
:func:`segbench.data.normalize.standardize`; C = ``in_channels``: 1 grey, 3 RGB) to
(N, K, H, W) logits (K = ``outputs``: 1 sigmoid logit for two classes, else one softmax logit
per class); H and W multiples of 32.

An RGB model whose encoder loads ImageNet weights gets :func:`imagenet_input`: its input is
re-standardised per channel with ImageNet's mean and std, the statistics those weights were
trained on (the data pipeline's own standardisation is the same for every model).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path

import segmentation_models_pytorch as smp
import timm
import torch
from torch import nn

from segbench.errors import SegbenchError

# Shown when an encoder name is unknown; the full list has ~80 names plus every timm model.
_EXAMPLE_ENCODERS = ("resnet18", "resnet34", "efficientnet-b0", "mobilenet_v2", "mit_b0")

# ImageNet classifier heads in the checkpoints smp encoders load; each smp encoder drops its own
# in its load_state_dict, but we compare keys before calling it (see load_encoder_weights).
_CLASSIFIER_PREFIXES = ("fc.", "_fc.", "head.", "classifier.", "last_linear.", "linear.")


def build_unet(
    *,
    encoder_name: str,
    encoder_weights: str | None,
    encoder_depth: int,
    decoder_channels: tuple[int, ...],
    in_channels: int,
    outputs: int = 1,
    key: str = "models.unet",
) -> nn.Module:
    """U-Net with any smp encoder; ``encoder_weights`` is a local state-dict path or None.
    ``key`` (the params entry) is named in errors."""
    if len(decoder_channels) != encoder_depth:
        raise SegbenchError(
            f"{key}.decoder_channels: needs {encoder_depth} entries (encoder_depth), "
            f"got {len(decoder_channels)}"
        )
    check_encoder_name(encoder_name, key=f"{key}.encoder_name")
    model = smp.Unet(
        encoder_name=encoder_name,
        encoder_weights=None,  # never download; local weights are loaded below
        encoder_depth=encoder_depth,
        decoder_channels=list(decoder_channels),
        in_channels=in_channels,
        classes=outputs,
    )
    if encoder_weights:
        load_encoder_weights(model.encoder, encoder_weights, key=f"{key}.encoder_weights")
        imagenet_input(model, in_channels)
    return model


def build_segformer(
    *,
    encoder_name: str,
    encoder_weights: str | None,
    decoder_segmentation_channels: int,
    in_channels: int,
    outputs: int = 1,
    key: str = "models.segformer",
) -> nn.Module:
    """SegFormer (Xie et al. 2021): MiT encoder, all-MLP decoder, logits upsampled x4 to (H, W).
    ``key`` (the params entry) is named in errors."""
    check_encoder_name(encoder_name, key=f"{key}.encoder_name")
    model = smp.Segformer(
        encoder_name=encoder_name,
        encoder_weights=None,  # never download; local weights are loaded below
        decoder_segmentation_channels=decoder_segmentation_channels,
        in_channels=in_channels,
        classes=outputs,
    )
    if encoder_weights:
        load_encoder_weights(model.encoder, encoder_weights, key=f"{key}.encoder_weights")
        imagenet_input(model, in_channels)
    return model


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_input(model: nn.Module, in_channels: int) -> None:
    """Make an RGB ``model`` re-standardise its input per channel with ImageNet's statistics.

    segbench's input is ``(unit - 0.5) / 0.25`` (:mod:`segbench.data.normalize`); an encoder
    pretrained on ImageNet expects ``(unit - mean_c) / std_c``. The affine map between the two
    is kept as buffers (saved with the weights) and applied by a forward pre-hook, so the
    model's state-dict keys stay smp's. Grey models (one channel) are left as they are: their
    first convolution was folded from the RGB kernel already.
    """
    from segbench.data.normalize import IMAGE_MEAN, IMAGE_STD

    if in_channels != 3:
        return
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    # x_ours = (u - m) / s  ->  u = x_ours * s + m  ->  x_imagenet = (u - mean) / std
    model.register_buffer("input_scale", IMAGE_STD / std)
    model.register_buffer("input_shift", (IMAGE_MEAN - mean) / std)

    def restandardise(module, args):
        x, *rest = args
        return (x * module.input_scale + module.input_shift, *rest)

    model.register_forward_pre_hook(restandardise)


def check_encoder_name(name: str, *, key: str) -> None:
    """Raise :class:`SegbenchError` naming ``key`` unless smp can build encoder ``name``.

    Valid: an smp encoder name, or ``tu-<model>`` for any timm model (smp's deprecated
    ``timm-regnet*``-style aliases are refused: write them ``tu-``). Checked up front because smp
    raises a bare KeyError with an 80-name list, and timm a RuntimeError.
    """
    known = smp.encoders.get_encoder_names()
    if name in known or (name.startswith("tu-") and timm.is_model(name[3:])):
        return
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
    raise SegbenchError(
        f"{key}: unknown encoder {name!r}{hint}; valid names include "
        f"{', '.join(_EXAMPLE_ENCODERS)} and 'tu-<any timm model>'; list them all with "
        "segmentation_models_pytorch.encoders.get_encoder_names()"
    )


def load_encoder_weights(encoder: nn.Module, path: str | Path, *, key: str) -> None:
    """Load a local encoder state dict (e.g. torchvision ImageNet weights) into ``encoder``.

    The checkpoint is read with ``weights_only=True``. RGB first-layer weights are fitted to the
    encoder's input channels as smp does for pretrained weights (summed for 1 channel, cycled and
    scaled by 3/C otherwise); classifier keys are ignored; a timm checkpoint gets the ``model.``
    prefix of smp's ``tu-`` encoders. Every problem raises :class:`SegbenchError` naming ``key``
    and ``path``.
    """
    path = Path(path)
    if not path.is_file():
        raise SegbenchError(f"{key}: {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise SegbenchError(f"{key}: {path}: cannot load encoder weights ({exc})") from None
    if isinstance(state, Mapping):
        state = state.get("state_dict", state)
    if not isinstance(state, Mapping):
        raise SegbenchError(f"{key}: {path}: cannot load encoder weights (not a state dict)")
    own = encoder.state_dict()
    state = _match_encoder_keys(dict(state), own)
    # Compare keys ourselves: smp encoders override load_state_dict and return nothing.
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise SegbenchError(
            f"{key}: {path} does not fit the {type(encoder).__name__} "
            f"(missing {len(missing)} keys, e.g. {missing[:2]}; "
            f"unexpected {len(unexpected)} keys, e.g. {unexpected[:2]})"
        )
    try:
        encoder.load_state_dict(state)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).strip().splitlines()[-1].strip()
        raise SegbenchError(
            f"{key}: {path} does not fit the {type(encoder).__name__} ({first})"
        ) from None


def _match_encoder_keys(state: dict, own: Mapping[str, torch.Tensor]) -> dict:
    """Rename, drop and reshape checkpoint entries the way smp does for its pretrained weights."""
    if all(k.startswith("model.") for k in own) and not any(k.startswith("model.") for k in state):
        state = {f"model.{k}": v for k, v in state.items()}
    out = {}
    for name, value in state.items():
        bare = name.removeprefix("model.")
        if name not in own and bare.startswith(_CLASSIFIER_PREFIXES):
            continue
        target = own.get(name)
        if target is not None and value.ndim == 4 and value.shape[1] == 3 != target.shape[1]:
            value = _fit_rgb_kernel(value, target.shape[1])
        out[name] = value
    return out


def _fit_rgb_kernel(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """(O, 3, k, k) RGB kernel -> (O, in_channels, k, k), as smp's ``patch_first_conv`` does."""
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    cycled = weight[:, [i % 3 for i in range(in_channels)]]
    return cycled * (3 / in_channels)
