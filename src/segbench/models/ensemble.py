"""The ensemble: a weighted average of already-trained members' foreground probabilities.

The reference study's "UFormer" averages a U-Net and a SegFormer. Nothing is retrained: the
members keep their weights, and only the mixing weights are chosen, on the validation split, by
:func:`choose_weights` (an exhaustive search over a grid on the probability simplex). The grid
contains every single member on its own (weight 1), so the chosen mix is never worse on the
validation split than the best member.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from segbench.classes import IGNORE
from segbench.metrics import confusion_matrix, pooled_foreground_dice

# Probabilities are clipped this far from 0 and 1 before the logit, so the ensemble returns finite
# logits like every other model (logit(1 - 1e-6) = 13.8: far past any threshold anyone uses).
_EPS = 1e-6


class Ensemble(nn.Module):
    """(N, C, H, W) images -> (N, 1, H, W) logits of sum_i w_i * sigmoid(member_i(x)).

    ``members`` maps names to modules with the same input convention; ``weights`` are
    non-negative and are normalised to sum to 1. The weights are a buffer, not a parameter:
    they are chosen on the validation split, never by gradient descent.
    """

    def __init__(self, members: Mapping[str, nn.Module], weights: Sequence[float]):
        super().__init__()
        if len(weights) != len(members):
            raise ValueError(f"{len(members)} members but {len(weights)} weights")
        w = torch.tensor([float(v) for v in weights], dtype=torch.float32)
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be non-negative and not all zero, got {list(weights)}")
        self.members = nn.ModuleDict(dict(members))
        self.register_buffer("weights", w / w.sum())

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """The weighted mean probability: (N, 1, H, W) foreground (members with one sigmoid
        output) or (N, C, H, W) class probabilities (softmax members), float32."""
        total = None
        for w, member in zip(self.weights, self.members.values(), strict=True):
            logits = member(x).float()  # float: members may run under bf16
            p = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
            total = p * w if total is None else total + p * w
        return total

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.probabilities(x)
        if p.shape[1] == 1:
            return torch.logit(p.clamp(_EPS, 1 - _EPS))
        return torch.log(p.clamp_min(_EPS))  # softmax(log p) = p: the mix comes back out


def simplex_grid(n_members: int, step: float) -> np.ndarray:
    """Every weight vector of ``n_members`` non-negative multiples of ``step`` summing to 1.

    Returns a (G, n_members) float array; G = C(n + k - 1, k - 1) with n = 1/step, k members
    (2 members at step 0.1: 11 vectors; 3: 66; 4: 286). The single-member vertices are included.
    """
    n = round(1 / step)
    rows = [
        (*parts, n - sum(parts))
        for parts in itertools.product(range(n + 1), repeat=n_members - 1)
        if sum(parts) <= n
    ]
    return np.array(rows, dtype=np.float64) / n


def choose_weights(
    probs: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    grid: np.ndarray,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Score every weight vector of ``grid`` by pooled Dice over all validation pixels.

    ``probs[i]`` is image i's (K, H, W) stack of the K members' probabilities, ``masks[i]`` its
    (H, W) reference. Returns ``(best, scores)``: the (K,) weights with the highest pooled Dice
    (2 TP / (2 TP + FP + FN) summed over images, so empty references count through their false
    positives) and the (G,) Dice of every grid row. Ties go to the weights nearest the uniform
    mix: among equally good mixes, the most even one depends least on any single member.

    Several classes: ``probs[i]`` is (K, C, H, W), ``masks[i]`` class indices (255 ignored);
    the mix's argmax is scored by the pooled Dice per foreground class, averaged
    (:func:`segbench.metrics.pooled_foreground_dice`); ``threshold`` is not used.
    """
    if probs and probs[0].ndim == 4:
        return _pick(_multiclass_scores(probs, masks, grid), grid)
    tp = np.zeros(len(grid))
    fp_fn = np.zeros(len(grid))
    for stack, mask in zip(probs, masks, strict=True):
        ref = mask.astype(bool).ravel()
        flat = stack.reshape(stack.shape[0], -1).astype(np.float32)
        n_ref = int(ref.sum())
        for g, w in enumerate(grid.astype(np.float32)):
            pred = (w @ flat) >= threshold
            hit = int(np.count_nonzero(pred & ref))
            tp[g] += hit
            fp_fn[g] += int(pred.sum()) - hit + (n_ref - hit)
    denom = 2 * tp + fp_fn
    scores = np.divide(2 * tp, denom, out=np.full(len(grid), np.nan), where=denom > 0)
    return _pick(scores, grid)


def _multiclass_scores(probs, masks, grid: np.ndarray) -> np.ndarray:
    n_classes = probs[0].shape[1]
    confusion = np.zeros((len(grid), n_classes, n_classes), dtype=np.int64)
    for stack, mask in zip(probs, masks, strict=True):
        flat = stack.reshape(stack.shape[0], n_classes, -1).astype(np.float32)
        ref = mask.ravel()
        for g, w in enumerate(grid.astype(np.float32)):
            pred = np.tensordot(w, flat, axes=1).argmax(axis=0)
            confusion[g] += confusion_matrix(pred, ref, n_classes, ignore_index=IGNORE)
    return np.array([pooled_foreground_dice(c) for c in confusion])


def _pick(scores: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if np.isnan(scores).all():  # nothing predicted and nothing to find: any mix is as good
        scores = np.ones(len(grid))
    best = np.nanmax(scores)
    tied = np.flatnonzero(scores >= best - 1e-12)
    uniform = np.full(grid.shape[1], 1.0 / grid.shape[1])
    pick = tied[np.argmin(np.abs(grid[tied] - uniform).sum(axis=1))]
    return grid[pick], scores
