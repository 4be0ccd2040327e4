"""The ensemble: a weighted average of already-trained members' foreground probabilities.

The reference study's "UFormer" averages a U-Net and a SegFormer. Nothing is retrained: the
members keep their weights, and only the mixing weights and the threshold are chosen, together,
on the validation split, by :func:`search_weights` (an exhaustive search over a grid on the
probability simplex times the threshold grid, scored on the criterion models are ranked on). The
grid contains every single member on its own (weight 1) at every threshold, so the chosen mix is
never worse on the validation split than the best member at its own best threshold; where no mix
is better, the search gives that member all the weight and the ensemble *is* that member.
A member with weight 0 is not run (:meth:`Ensemble.probabilities`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from segbench.classes import IGNORE
from segbench.metrics import multiclass_metrics, pooled_foreground_dice
from segbench.threshold import GRID, counts_by_threshold, dice_all_of, pooled_dice_of

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
            if float(w) == 0:
                continue  # chosen out: running it would cost time and change nothing
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


@dataclass(frozen=True)
class WeightSearch:
    """Every weight vector of ``grid`` (G, K) scored at every threshold of ``thresholds`` (T of
    them; None with several classes, where the argmax decides and T is 1).

    ``scores`` (G, T): the criterion models are ranked on (:mod:`segbench.metrics`), the mean over
    the validation images of Dice over all images (two classes) or of mIoU (several classes,
    ignored pixels left out; NaN where no image is defined). ``pooled`` (G, T): Dice with the
    pixels of all images pooled (several classes: per foreground class, averaged), kept beside
    it for comparison with cards written before the criterion.
    """

    grid: np.ndarray
    thresholds: tuple[float, ...] | None
    scores: np.ndarray
    pooled: np.ndarray

    def best(self, rows: Sequence[int] | None = None) -> tuple[int, int]:
        """``(row, column)`` of the best score among ``rows`` (default: every row).

        Ties go to the mix with the fewest members (a member that adds nothing on validation
        must not be run, nor paid for), then to the most even one (among equally good mixes of
        as many members, it depends least on any one), then to the threshold nearest 0.5.
        """
        rows = range(len(self.grid)) if rows is None else rows
        uniform = np.full(self.grid.shape[1], 1.0 / self.grid.shape[1])
        scores = np.nan_to_num(self.scores, nan=-np.inf)
        top = max(scores[r].max() for r in rows)
        tied = [(r, c) for r in rows for c in range(scores.shape[1]) if scores[r, c] >= top - 1e-12]
        return min(tied, key=lambda rc: self._plainness(rc, uniform))

    def _plainness(self, rc: tuple[int, int], uniform: np.ndarray) -> tuple:
        w = self.grid[rc[0]]
        t = 0.5 if self.thresholds is None else self.thresholds[rc[1]]
        return (int(np.count_nonzero(w > 1e-12)), float(np.abs(w - uniform).sum()), abs(t - 0.5))

    def threshold(self, column: int) -> float | None:
        return None if self.thresholds is None else float(self.thresholds[column])


def search_weights(
    probs: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    grid: np.ndarray,
    thresholds: tuple[float, ...] = GRID,
) -> WeightSearch:
    """Score every weight vector of ``grid`` (G, K) together with every threshold.

    Two classes: ``probs[i]`` is validation image i's (K, H, W) stack of the K members'
    foreground probabilities and ``masks[i]`` its (H, W) {0, 1} reference; the mix ``w @ probs``
    is thresholded at each of ``thresholds`` (ascending), counted in one pass per image and mix
    (:func:`segbench.threshold.counts_by_threshold`). Several classes: ``probs[i]`` is
    (K, C, H, W), ``masks[i]`` class indices (255 ignored), the mix's argmax is scored and
    ``thresholds`` is not used. The choice itself is :meth:`WeightSearch.best`.
    """
    if probs and probs[0].ndim == 4:
        return _multiclass_search(probs, masks, grid)
    weights = grid.astype(np.float32)
    counts = np.zeros((len(grid), len(probs), 3, len(thresholds)), dtype=np.int64)
    for i, (stack, mask) in enumerate(zip(probs, masks, strict=True)):
        flat = stack.reshape(stack.shape[0], -1).astype(np.float32)
        ref = np.asarray(mask).ravel()
        for g, w in enumerate(weights):
            counts[g, i] = counts_by_threshold(w @ flat, ref, thresholds)
    scores = dice_all_of(np.moveaxis(counts, 2, 0)).mean(axis=1)  # (G, T)
    pooled = pooled_dice_of(np.moveaxis(counts.sum(axis=1), 1, 0))  # (G, T)
    return WeightSearch(grid, tuple(thresholds), scores, pooled)


def _multiclass_search(probs, masks, grid: np.ndarray) -> WeightSearch:
    n_classes = probs[0].shape[1]
    confusion = np.zeros((len(grid), n_classes, n_classes), dtype=np.int64)
    mious = np.full((len(grid), len(probs)), np.nan)
    for i, (stack, mask) in enumerate(zip(probs, masks, strict=True)):
        flat = stack.reshape(stack.shape[0], n_classes, -1).astype(np.float32)
        ref = np.asarray(mask).ravel()
        for g, w in enumerate(grid.astype(np.float32)):
            pred = np.tensordot(w, flat, axes=1).argmax(axis=0)
            m = multiclass_metrics(pred, ref, n_classes, ignore_index=IGNORE)
            mious[g, i] = m["miou"]
            confusion[g] += m["confusion"]
    defined = ~np.isnan(mious)
    scores = np.divide(
        np.nansum(mious, axis=1),
        defined.sum(axis=1),
        out=np.full(len(grid), np.nan),
        where=defined.any(axis=1),
    )
    pooled = np.array([pooled_foreground_dice(c) for c in confusion])
    return WeightSearch(grid, None, scores[:, None], pooled[:, None])
