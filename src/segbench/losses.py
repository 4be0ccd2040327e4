"""Loss registry over ``segmentation_models_pytorch.losses``; all take (N, 1, H, W) logits.

| name         | what                                                              |
| ------------ | ----------------------------------------------------------------- |
| `dice`       | soft Dice                                                         |
| `bce`        | binary cross-entropy                                              |
| `dice_bce`   | Dice + cross-entropy (the reference LoRA study)                   |
| `focal`      | focal loss (gamma 2)                                              |
| `focal_dice` | 20 x focal + Dice: the 20:1 weighting of the SAM paper            |
| `tversky`    | Tversky with ``alpha`` (false positives) and ``beta`` (negatives) |
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from segbench.errors import SegbenchError


class WeightedSum(nn.Module):
    """``sum(w * loss(logits, target))`` over (weight, loss) pairs."""

    def __init__(self, *terms: tuple[float, nn.Module]):
        super().__init__()
        self.weights = [w for w, _ in terms]
        self.losses = nn.ModuleList(loss for _, loss in terms)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(
            w * loss(logits, target) for w, loss in zip(self.weights, self.losses, strict=True)
        )


def _smp_losses():
    # Imported when a loss is built, not with this module: smp pulls in timm and torchvision
    # (~3 s), which stages that never train a network (otsu, evaluate) should not pay for.
    from segmentation_models_pytorch import losses

    return losses


def _dice() -> nn.Module:
    return _smp_losses().DiceLoss(mode="binary", from_logits=True)


def _bce() -> nn.Module:
    return _smp_losses().SoftBCEWithLogitsLoss()


def _focal() -> nn.Module:
    return _smp_losses().FocalLoss(mode="binary", gamma=2.0)


LOSSES: dict[str, Callable[..., nn.Module]] = {
    "dice": lambda **_: _dice(),
    "bce": lambda **_: _bce(),
    "dice_bce": lambda **_: WeightedSum((1.0, _dice()), (1.0, _bce())),
    "focal": lambda **_: _focal(),
    "focal_dice": lambda **_: WeightedSum((20.0, _focal()), (1.0, _dice())),
    "tversky": lambda alpha=0.5, beta=0.5, **_: _smp_losses().TverskyLoss(
        mode="binary", from_logits=True, alpha=alpha, beta=beta
    ),
}


def build_loss(name: str, **kwargs) -> nn.Module:
    """A loss module ``(logits, target) -> scalar``; target is (N, 1, H, W) float in {0, 1}.

    ``kwargs`` reach the losses that take them (``tversky``: ``alpha``, ``beta``).
    """
    try:
        factory = LOSSES[name]
    except KeyError:
        valid = ", ".join(sorted(LOSSES))
        raise SegbenchError(f"train.loss: unknown loss {name!r}; valid: {valid}") from None
    return factory(**kwargs)
