"""Sliding-window inference of a torch segmenter over an arbitrarily large image.

Windows of ``tile`` pixels are stepped by ``round(tile * (1 - overlap))``, the last one in each
direction shifted back to end flush with the edge (as MONAI's ``sliding_window_inference`` and
segbench's own tiling do). Where windows overlap their probabilities (sigmoid of a single
logit; softmax over classes for a model with several outputs) are blended:

* ``mean``: a plain average;
* ``gaussian``: a weighted average, each window's pixels weighted by a Gaussian centred on the
  window (sigma = ``sigma_scale`` x tile, as in nnU-Net and MONAI), so that a pixel is decided
  mostly by the window that sees it with the most context around it.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from segbench.data.tiles import pad_to_tile, windows

BLENDS = ("gaussian", "mean")


def autocast(device: torch.device):
    """bf16 autocast on CUDA (where it is fast and safe), a no-op elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


@functools.lru_cache(maxsize=8)
def blend_weights(tile: int, blend: str, sigma_scale: float = 0.125) -> np.ndarray:
    """(tile, tile) float32 weights of one window's pixels, largest (1.0) at its centre.

    The Gaussian is floored at 1e-6 so that no pixel, not even a window's corner in a very large
    tile, gets a weight that underflows to zero (a pixel only a corner covers would be 0 / 0).
    """
    if blend == "mean":
        return np.ones((tile, tile), dtype=np.float32)
    if blend != "gaussian":
        raise ValueError(f"blend must be one of {', '.join(BLENDS)}; got {blend!r}")
    axis = np.arange(tile, dtype=np.float64) - (tile - 1) / 2.0
    g = np.exp(-(axis**2) / (2.0 * (sigma_scale * tile) ** 2))
    weights = np.outer(g, g)
    weights /= weights.max()
    return np.maximum(weights, 1e-6).astype(np.float32)


@torch.inference_mode()
def sliding_window_proba(
    model: nn.Module,
    image: torch.Tensor,
    *,
    tile: int,
    overlap: float,
    batch_size: int,
    device: torch.device,
    blend: str = "mean",
    sigma_scale: float = 0.125,
    guide: np.ndarray | None = None,
) -> np.ndarray:
    """Probabilities of a (C, H, W) normalised image (C = 1 grey, 3 RGB).

    Returns (H, W) float32 foreground probability for a model with one output (sigmoid), or
    (K, H, W) float32 class probabilities (softmax, summing to 1) for a model with K > 1.
    Windows of ``tile`` overlap by ``overlap`` (a fraction of the tile), ``batch_size`` of them
    per forward pass; overlapping probabilities are blended as ``blend`` says (module doc).
    Images smaller than a tile are reflect-padded. ``guide``, an (H, W) {0, 1} reference mask,
    is cut into the same windows and handed to the model as its second argument (a
    box-prompted SAM draws its oracle prompts from it).
    """
    height, width = image.shape[-2:]
    # (H', W', C): channels last for padding and cutting, as tiles are stored.
    arr = pad_to_tile(image.numpy().transpose(1, 2, 0), tile)
    ref = None
    if guide is not None:
        # Zero-padded, not reflected: a mirrored object would be a prompt for nothing real.
        ref = np.zeros(arr.shape[:2], dtype=np.float32)
        ref[:height, :width] = guide > 0
    weight = blend_weights(tile, blend, sigma_scale)
    stride = max(1, round(tile * (1.0 - overlap)))
    boxes = windows(arr.shape[0], arr.shape[1], tile, stride)
    total = norm = None
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start : start + batch_size]
        cuts = np.stack([arr[y : y + tile, x : x + tile] for y, x in chunk])
        inputs = [torch.from_numpy(cuts).permute(0, 3, 1, 2).contiguous().to(device)]
        if ref is not None:
            cut = np.stack([ref[y : y + tile, x : x + tile] for y, x in chunk])
            inputs.append(torch.from_numpy(cut)[:, None].to(device))
        with autocast(device):
            logits = model(*inputs).float()
        if logits.shape[1] == 1:
            probs = torch.sigmoid(logits).cpu().numpy()
        else:
            probs = torch.softmax(logits, dim=1).cpu().numpy()
        if total is None:
            total = np.zeros((probs.shape[1], *arr.shape[:2]), dtype=np.float32)
            norm = np.zeros(arr.shape[:2], dtype=np.float32)
        for (y, x), p in zip(chunk, probs, strict=True):
            total[:, y : y + tile, x : x + tile] += p * weight
            norm[y : y + tile, x : x + tile] += weight
    out = (total / norm)[:, :height, :width]
    return out[0] if out.shape[0] == 1 else out
