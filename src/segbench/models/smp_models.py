"""Supervised segmenters from segmentation_models_pytorch, for 1-channel input and 1 logit map.

Every builder returns an ``nn.Module`` mapping (N, 1, H, W) float32 images (normalised by
:func:`segbench.data.normalize.standardize`) to (N, 1, H, W) logits; H and W multiples of 32.
"""

from __future__ import annotations

from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from segbench.errors import SegbenchError


def build_unet(
    *,
    encoder_name: str,
    encoder_weights: str | None,
    encoder_depth: int,
    decoder_channels: tuple[int, ...],
) -> nn.Module:
    """U-Net with any smp encoder; ``encoder_weights`` is a local state-dict path or None."""
    if len(decoder_channels) != encoder_depth:
        raise SegbenchError(
            f"models.unet.decoder_channels: needs {encoder_depth} entries (encoder_depth), "
            f"got {len(decoder_channels)}"
        )
    try:
        model = smp.Unet(
            encoder_name=encoder_name,
            encoder_weights=None,  # never download; local weights are loaded below
            encoder_depth=encoder_depth,
            decoder_channels=list(decoder_channels),
            in_channels=1,
            classes=1,
        )
    except KeyError:
        raise SegbenchError(
            f"models.unet.encoder_name: unknown encoder {encoder_name!r}; "
            "see segmentation_models_pytorch.encoders.get_encoder_names()"
        ) from None
    if encoder_weights:
        load_encoder_weights(model.encoder, encoder_weights)
    return model


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load a local encoder state dict (e.g. torchvision ImageNet weights) into ``encoder``.

    The checkpoint is read with ``weights_only=True``. RGB first-layer weights are summed over
    the colour axis to fit 1-channel input (what smp does for ``in_channels=1``); classifier
    keys (``fc.*``) are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise SegbenchError(f"models.unet.encoder_weights: {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise SegbenchError(f"{path}: cannot load encoder weights ({exc})") from None
    state = state.get("state_dict", state)
    own = encoder.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    for key, value in state.items():
        target = own.get(key)
        if target is not None and value.ndim == 4 and value.shape[1] == 3 and target.shape[1] == 1:
            state[key] = value.sum(dim=1, keepdim=True)
    # Compare keys ourselves: smp encoders override load_state_dict and return nothing.
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise SegbenchError(
            f"{path}: does not fit the encoder (missing {len(missing)} keys, e.g. "
            f"{missing[:2]}; unexpected {len(unexpected)}, e.g. {unexpected[:2]})"
        )
    try:
        encoder.load_state_dict(state)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).strip().splitlines()[-1].strip()
        raise SegbenchError(f"{path}: does not fit the encoder ({first})") from None
