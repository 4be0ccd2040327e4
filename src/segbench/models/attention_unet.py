"""Attention U-Net (Oktay et al. 2018, "Attention U-Net: Learning Where to Look for the Pancreas").

A U-Net on any segmentation_models_pytorch encoder whose skip connections pass through additive
attention gates: the decoder's coarser features decide, per skip pixel, how much of the skip
reaches the decoder.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from segbench.models.smp_models import check_encoder_name, imagenet_input, load_encoder_weights

DEPTH = 5  # encoder stages; with stride-32 encoders every stage halves H and W


def build_attention_unet(
    *,
    encoder_name: str,
    encoder_weights: str | None,
    decoder_channels: tuple[int, ...],
    in_channels: int,
    outputs: int = 1,
    key: str = "models.attention_unet",
) -> AttentionUnet:
    """Attention U-Net with any smp encoder; ``encoder_weights`` is a local state-dict path or None.

    ``decoder_channels`` (coarsest first) needs one entry per encoder stage, 5 (checked by
    :class:`~segbench.config.models.AttentionUnetEntry`). ``key`` is named in errors.
    """
    check_encoder_name(encoder_name, key=f"{key}.encoder_name")
    model = AttentionUnet(
        encoder_name=encoder_name,
        in_channels=in_channels,
        decoder_channels=decoder_channels,
        outputs=outputs,
    )
    if encoder_weights:
        load_encoder_weights(model.encoder, encoder_weights, key=f"{key}.encoder_weights")
        imagenet_input(model, in_channels)
    return model


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018, Fig. 2) on one skip connection.

    ``alpha = sigmoid(BN(psi(relu(BN(W_g g) + W_x x))))`` with 1x1 convolutions, and the gate
    returns ``x * alpha``. ``W_g g`` is computed on g's coarser grid and bilinearly resampled to
    x's size (the paper strides ``W_x`` down to g's grid and upsamples alpha instead); this keeps
    alpha at the skip's full resolution.
    """

    def __init__(self, *, x_channels: int, g_channels: int, inter_channels: int):
        super().__init__()
        # Biases would be cancelled by the BatchNorms (and W_x's by W_g's BN shift).
        self.w_g = nn.Sequential(
            nn.Conv2d(g_channels, inter_channels, 1, bias=False), nn.BatchNorm2d(inter_channels)
        )
        self.w_x = nn.Conv2d(x_channels, inter_channels, 1, bias=False)
        self.psi = nn.Sequential(nn.Conv2d(inter_channels, 1, 1, bias=False), nn.BatchNorm2d(1))

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, C_x, H, W) skip features, g (N, C_g, h, w) gating features, any (h, w).

        Returns the gated skip ``x * alpha`` (N, C_x, H, W) and alpha (N, 1, H, W) in [0, 1].
        """
        g = F.interpolate(self.w_g(g), size=x.shape[-2:], mode="bilinear", align_corners=False)
        alpha = torch.sigmoid(self.psi(F.relu(g + self.w_x(x))))
        return x * alpha, alpha


class AttentionUnet(nn.Module):
    """U-Net whose skips are gated by :class:`AttentionGate`; a logit head of ``outputs``
    channels (1: binary, sigmoid; else one per class, softmax).

    ``forward``: (N, in_channels, H, W) float, H and W multiples of 32 -> (N, outputs, H, W) logits.
    After each forward, ``last_attention`` holds one detached alpha (N, 1, h, w) in [0, 1] per
    gated skip, coarsest first, each the size of its skip.
    """

    def __init__(
        self,
        *,
        encoder_name: str = "resnet18",
        in_channels: int = 1,
        outputs: int = 1,
        decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
    ):
        super().__init__()
        self.encoder = smp.encoders.get_encoder(
            encoder_name, in_channels=in_channels, depth=DEPTH, weights=None
        )
        # Like smp's Unet: the input itself (stride 1) is no skip; a 0-channel stage (MiT's
        # stride 2) or the last stage, at input resolution, is upsampled without a skip.
        encoder_channels = list(self.encoder.out_channels[1:])[::-1]
        skip_channels = [*encoder_channels[1:], 0]
        stage_in = [encoder_channels[0], *decoder_channels[:-1]]
        self.stages = nn.ModuleList(
            DecoderStage(in_channels=i, skip_channels=s, out_channels=o)
            for i, s, o in zip(stage_in, skip_channels, decoder_channels, strict=True)
        )
        self.head = nn.Conv2d(decoder_channels[-1], outputs, kernel_size=3, padding=1)
        self.last_attention: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)  # input, then strides 2, 4, ..., 32
        sizes = [f.shape[-2:] for f in features[:-1]][::-1]
        skips = [*features[1:-1][::-1], None]
        y, attention = features[-1], []
        for stage, skip, size in zip(self.stages, skips, sizes, strict=True):
            y, alpha = stage(y, skip, size)
            if alpha is not None:
                attention.append(alpha.detach())
        self.last_attention = attention
        return self.head(y)


class DecoderStage(nn.Module):
    """Gate the skip with the coarser features, upsample those to the skip's size, concatenate,
    then (conv3x3-BN-ReLU) x 2."""

    def __init__(self, *, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.gate = None
        if skip_channels:
            self.gate = AttentionGate(
                x_channels=skip_channels,
                g_channels=in_channels,
                inter_channels=max(skip_channels // 2, 1),
            )
        self.convs = nn.Sequential(
            _conv_bn_relu(in_channels + skip_channels, out_channels),
            _conv_bn_relu(out_channels, out_channels),
        )

    def forward(
        self, y: torch.Tensor, skip: torch.Tensor | None, size: torch.Size
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """y (N, C_in, h, w), skip (N, C_skip, H, W) or None -> (N, C_out, H, W), alpha or None."""
        alpha = None
        parts = [F.interpolate(y, size=size, mode="nearest")]
        if self.gate is not None:
            gated, alpha = self.gate(skip, y)
            parts.append(gated)
        return self.convs(torch.cat(parts, dim=1)), alpha


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    # Written out rather than imported: smp's decoder blocks are internal, not a stable API.
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )
