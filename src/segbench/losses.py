"""Loss registry over ``segmentation_models_pytorch.losses``, for two classes or several.

Two classes (binary): logits (N, 1, H, W), targets (N, 1, H, W) float in {0, 1}; the modules are
exactly those segbench always used. Several classes (C > 2): logits (N, C, H, W), targets
(N, H, W) int64 class indices; smp's ``multiclass`` mode.

| name         | binary (sigmoid)                      | C > 2 (softmax)                          |
| ------------ | ------------------------------------- | ---------------------------------------- |
| `dice`       | soft Dice of the foreground           | soft Dice per class, averaged            |
| `bce`        | binary cross-entropy                  | cross-entropy (``F.cross_entropy``)      |
| `dice_bce`   | Dice + BCE (the reference LoRA study) | Dice + cross-entropy                     |
| `focal`      | focal loss (gamma 2)                  | focal per class, one-vs-rest (smp's)     |
| `focal_dice` | 20 x focal + Dice (the SAM paper)     | 20 x focal + Dice                        |
| `tversky`    | Tversky, ``alpha`` (false positives), | Tversky per class, averaged              |
|              | ``beta`` (false negatives)            |                                          |

``class_weights`` (one per class, background first; scale does not matter):

* C > 2: cross-entropy weights each pixel by its target class (the weighted mean of
  ``F.cross_entropy``); Dice, Tversky and focal weight each class's term in the average
  (smp's ``class_weights``: ``sum(w_c * loss_c) / sum(w_c)``).
* binary, ``[w0, w1]``: the pixel-wise terms (BCE, focal) weight each pixel by its target class,
  with the weights scaled to mean 1 (``[1, 1]`` is the unweighted loss; BCE as a per-pixel
  ``weight``, focal through its ``alpha``). The overlap terms (Dice, Tversky) have one
  foreground term and nothing to weight: ``dice`` or ``tversky`` alone with weights is an error
  (Tversky's ``alpha``/``beta`` are the knob there); in ``dice_bce``/``focal_dice`` only the
  pixel-wise term is weighted.

``ignore_index`` (segbench uses :data:`segbench.classes.IGNORE`, 255): pixels whose target is that
value contribute nothing to any term (no gradient; C > 2 means run over the other pixels only;
binary BCE, as smp's ``SoftBCEWithLogitsLoss``, counts them as zeros in its mean). A batch with no
pixel left gives 0, not NaN. Several classes need it set whenever targets may hold 255: smp's
one-hot of the Dice terms would otherwise index out of range. ``None`` in the binary case builds
exactly the modules of old, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
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


class SkipIfAllIgnored(nn.Module):
    """``loss`` unless every target pixel is ``ignore_index``: then 0 (smp's focal would
    average over no pixels and give NaN, which stops training)."""

    def __init__(self, loss: nn.Module, ignore_index: int):
        super().__init__()
        self.loss, self.ignore_index = loss, ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not bool((target != self.ignore_index).any()):
            return logits.sum() * 0.0
        return self.loss(logits, target)


class CrossEntropy(nn.Module):
    """(N, C, H, W) logits, (N, H, W) int64 targets -> ``sum(w_t * ce) / sum(w_t)`` over the
    pixels not ignored (``F.cross_entropy``'s weighted mean), 0 where no weight is left."""

    def __init__(self, class_weights: list[float] | None, ignore_index: int | None):
        super().__init__()
        # A plain tensor, moved at each call (as smp does), so the module needs no .to(device).
        self.weight = None if class_weights is None else torch.tensor(class_weights)
        self.ignore_index = -100 if ignore_index is None else ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != self.ignore_index
        weight = None if self.weight is None else self.weight.to(logits.device)
        total = F.cross_entropy(
            logits, target, weight=weight, ignore_index=self.ignore_index, reduction="sum"
        )
        if weight is None:
            count = valid.sum().to(total.dtype)
        else:
            count = (weight[torch.where(valid, target, 0)] * valid).sum().to(total.dtype)
        return total / count.clamp_min(1e-12)


class BinaryWeightedBCE(nn.Module):
    """BCE on (N, 1, H, W) logits and {0, 1} targets, each pixel weighted by its target class
    (``w0`` background, ``w1`` foreground); ignored pixels count as zeros in the mean."""

    def __init__(self, w0: float, w1: float, ignore_index: int | None):
        super().__init__()
        self.w0, self.w1, self.ignore_index = w0, w1, ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(logits.dtype)
        if self.ignore_index is None:
            keep = torch.ones_like(target, dtype=torch.bool)
        else:
            keep = target != self.ignore_index
        target = torch.where(keep, target, 0.0)
        weight = (self.w0 + (self.w1 - self.w0) * target) * keep
        return F.binary_cross_entropy_with_logits(logits, target, weight=weight)


@dataclass(frozen=True)
class _Mode:
    num_classes: int
    class_weights: list[float] | None
    ignore_index: int | None

    @property
    def multiclass(self) -> bool:
        return self.num_classes > 2

    @property
    def ignore(self) -> dict:
        return {} if self.ignore_index is None else {"ignore_index": self.ignore_index}

    def binary_weights(self) -> tuple[float, float] | None:
        """``[w0, w1]`` scaled to mean 1, or None."""
        if self.class_weights is None:
            return None
        w0, w1 = self.class_weights
        return 2 * w0 / (w0 + w1), 2 * w1 / (w0 + w1)


def _smp_losses():
    # Imported when a loss is built, not with this module: smp pulls in timm and torchvision
    # (~3 s), which stages that never train a network (otsu, evaluate) should not pay for.
    from segmentation_models_pytorch import losses

    return losses


def _dice(m: _Mode) -> nn.Module:
    if m.multiclass:
        return _smp_losses().DiceLoss(
            mode="multiclass", from_logits=True, class_weights=m.class_weights, **m.ignore
        )
    return _smp_losses().DiceLoss(mode="binary", from_logits=True, **m.ignore)


def _bce(m: _Mode) -> nn.Module:
    if m.multiclass:
        return CrossEntropy(m.class_weights, m.ignore_index)
    weights = m.binary_weights()
    if weights is not None:
        return BinaryWeightedBCE(*weights, m.ignore_index)
    return _smp_losses().SoftBCEWithLogitsLoss(**m.ignore)


def _focal(m: _Mode) -> nn.Module:
    focal = _smp_losses().FocalLoss
    if m.multiclass:
        loss = focal(mode="multiclass", gamma=2.0, class_weights=m.class_weights, **m.ignore)
    elif (weights := m.binary_weights()) is not None:
        # smp scales each pixel by alpha (foreground) or 1 - alpha: times 2 gives w1 or w0.
        alpha = weights[1] / 2
        loss = WeightedSum((2.0, focal(mode="binary", gamma=2.0, alpha=alpha, **m.ignore)))
    else:
        loss = focal(mode="binary", gamma=2.0, **m.ignore)
    return loss if m.ignore_index is None else SkipIfAllIgnored(loss, m.ignore_index)


def _tversky(m: _Mode, alpha: float, beta: float) -> nn.Module:
    if m.multiclass:
        return _smp_losses().TverskyLoss(
            mode="multiclass",
            from_logits=True,
            alpha=alpha,
            beta=beta,
            class_weights=m.class_weights,
            **m.ignore,
        )
    return _smp_losses().TverskyLoss(
        mode="binary", from_logits=True, alpha=alpha, beta=beta, **m.ignore
    )


LOSSES: dict[str, Callable[..., nn.Module]] = {
    "dice": lambda m, **_: _dice(m),
    "bce": lambda m, **_: _bce(m),
    "dice_bce": lambda m, **_: WeightedSum((1.0, _dice(m)), (1.0, _bce(m))),
    "focal": lambda m, **_: _focal(m),
    "focal_dice": lambda m, **_: WeightedSum((20.0, _focal(m)), (1.0, _dice(m))),
    "tversky": lambda m, alpha=0.5, beta=0.5, **_: _tversky(m, alpha, beta),
}
_OVERLAP_ONLY = ("dice", "tversky")  # no pixel-wise term a binary class weight could scale


def build_loss(
    name: str,
    *,
    num_classes: int = 2,
    class_weights: list[float] | None = None,
    ignore_index: int | None = None,
    **kwargs,
) -> nn.Module:
    """A loss module ``(logits, target) -> scalar`` (the module docstring has the shapes).

    ``num_classes`` 2 is the binary (sigmoid) loss, more the multiclass (softmax) one;
    ``class_weights``: one per class or None; ``ignore_index``: the target value to skip
    (255) or None. ``kwargs`` reach the losses that take them (``tversky``: ``alpha``,
    ``beta``).
    """
    try:
        factory = LOSSES[name]
    except KeyError:
        valid = ", ".join(sorted(LOSSES))
        raise SegbenchError(f"train.loss: unknown loss {name!r}; valid: {valid}") from None
    if num_classes < 2:
        raise SegbenchError(f"train.loss: {num_classes} classes; a loss needs at least 2")
    if class_weights is not None:
        class_weights = [float(w) for w in class_weights]
        if len(class_weights) != num_classes:
            raise SegbenchError(
                f"train.class_weights: {len(class_weights)} weight(s) for {num_classes} "
                "classes; give one per class, or null"
            )
        if num_classes == 2 and name in _OVERLAP_ONLY:
            raise SegbenchError(
                f"train.class_weights: the binary {name} loss has one foreground term and "
                "nothing to weight; use bce, dice_bce, focal or focal_dice (or tversky's "
                "alpha/beta), or set class_weights to null"
            )
    return factory(_Mode(num_classes, class_weights, ignore_index), **kwargs)
