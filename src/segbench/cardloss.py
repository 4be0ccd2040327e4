"""A model card's training loss: built once here for training and for the test loss.

The U-Net/SegFormer reference study reports each model's *test loss*: its training loss on the
test images. ``evaluate`` computes it from the blended full-size probabilities (turned back into
logits, which gives the probabilities exactly again under the sigmoid or softmax), so it is the
loss of the prediction that is scored, not of one tile.
"""

from __future__ import annotations

import numpy as np
import torch

from segbench.classes import IGNORE
from segbench.losses import build_loss
from segbench.modelcard import ModelCard

_EPS = 1e-6  # probabilities are clipped to [eps, 1 - eps]: a saturated pixel has a finite loss


def loss_for(card: ModelCard):
    """The training loss of ``card`` (its entry's own, or ``train``'s), for its classes: one
    sigmoid output for two classes, softmax over several (ignored pixels skipped)."""
    cfg = card.train
    several = card.num_classes > 2
    return build_loss(
        cfg.loss,
        num_classes=card.num_classes,
        class_weights=cfg.class_weights,
        ignore_index=IGNORE if several else None,
        **cfg.tversky.model_dump(),
    )


@torch.no_grad()
def image_loss(loss_fn, proba: np.ndarray, mask: np.ndarray) -> float:
    """``loss_fn`` of one image: (H, W) foreground probability and (H, W) {0, 1} mask, or
    (C, H, W) class probabilities and (H, W) class indices (255 = ignored)."""
    p = torch.from_numpy(np.clip(proba, _EPS, 1 - _EPS).astype(np.float32))
    if p.ndim == 2:
        logits = torch.log(p / (1 - p))[None, None]
        target = torch.from_numpy(mask.astype(np.float32))[None, None]
    else:
        logits = torch.log(p)[None]  # softmax(log p) = p, as p sums to 1
        target = torch.from_numpy(mask.astype(np.int64))[None]
    return float(loss_fn(logits, target))
