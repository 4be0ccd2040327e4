"""Loss registry over segmentation_models_pytorch losses; all take (N, 1, H, W) logits."""

from __future__ import annotations

from collections.abc import Callable

import segmentation_models_pytorch as smp
import torch
from torch import nn

from segbench.errors import SegbenchError


class _Sum(nn.Module):
    def __init__(self, *losses: nn.Module):
        super().__init__()
        self.losses = nn.ModuleList(losses)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(loss(logits, target) for loss in self.losses)


LOSSES: dict[str, Callable[[], nn.Module]] = {
    "dice": lambda: smp.losses.DiceLoss(mode="binary", from_logits=True),
    "bce": lambda: smp.losses.SoftBCEWithLogitsLoss(),
    "dice_bce": lambda: _Sum(
        smp.losses.DiceLoss(mode="binary", from_logits=True), smp.losses.SoftBCEWithLogitsLoss()
    ),
}


def build_loss(name: str) -> nn.Module:
    """A loss module ``(logits, target) -> scalar``; target is (N, 1, H, W) float in {0, 1}."""
    try:
        return LOSSES[name]()
    except KeyError:
        valid = ", ".join(sorted(LOSSES))
        raise SegbenchError(f"train.loss: unknown loss {name!r}; valid: {valid}") from None
