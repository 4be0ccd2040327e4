"""Sliding-window inference of a torch segmenter over an arbitrarily large image."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from segbench.data.tiles import pad_to_tile, windows


def autocast(device: torch.device):
    """bf16 autocast on CUDA (where it is fast and safe), a no-op elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.inference_mode()
def sliding_window_proba(
    model: nn.Module,
    image: torch.Tensor,
    *,
    tile: int,
    overlap: float,
    batch_size: int,
    device: torch.device,
    guide: np.ndarray | None = None,
) -> np.ndarray:
    """Foreground probability of a (1, H, W) normalised image -> (H, W) float32 in [0, 1].

    Windows of ``tile`` overlap by ``overlap`` (a fraction of the tile); where they overlap, the
    sigmoid probabilities are averaged. Images smaller than a tile are reflect-padded.
    ``guide``, an (H, W) {0, 1} reference mask, is cut into the same windows and handed to the
    model as its second argument (a box-prompted SAM draws its oracle prompts from it).
    """
    height, width = image.shape[-2:]
    arr = pad_to_tile(image[0].numpy(), tile)
    ref = None
    if guide is not None:
        # Zero-padded, not reflected: a mirrored object would be a prompt for nothing real.
        ref = np.zeros(arr.shape, dtype=np.float32)
        ref[:height, :width] = guide > 0
    stride = max(1, round(tile * (1.0 - overlap)))
    boxes = windows(arr.shape[0], arr.shape[1], tile, stride)
    total = np.zeros(arr.shape, dtype=np.float32)
    count = np.zeros(arr.shape, dtype=np.float32)
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start : start + batch_size]
        batch = torch.from_numpy(np.stack([arr[y : y + tile, x : x + tile] for y, x in chunk]))
        inputs = [batch[:, None].to(device)]
        if ref is not None:
            cut = np.stack([ref[y : y + tile, x : x + tile] for y, x in chunk])
            inputs.append(torch.from_numpy(cut)[:, None].to(device))
        with autocast(device):
            logits = model(*inputs)
        probs = torch.sigmoid(logits.float())[:, 0].cpu().numpy()
        for (y, x), p in zip(chunk, probs, strict=True):
            total[y : y + tile, x : x + tile] += p
            count[y : y + tile, x : x + tile] += 1
    return (total / count)[:height, :width]
