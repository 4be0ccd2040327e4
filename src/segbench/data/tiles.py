"""Sliding-window geometry and tile extraction.

Windows are square, ``tile`` pixels a side, stepped by ``stride``; the last window in each
direction is moved back to end flush with the edge, so every pixel is covered. Images smaller
than a tile are reflect-padded first (:func:`pad_to_tile`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def window_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of windows of size ``tile`` covering ``[0, length)``; needs ``length >= tile``."""
    if length < tile:
        raise ValueError(f"length {length} is smaller than the tile {tile}; pad first")
    if not 0 < stride <= tile:
        raise ValueError(f"stride must be in (0, tile], got {stride}")
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def windows(height: int, width: int, tile: int, stride: int) -> list[tuple[int, int]]:
    """Top-left ``(y, x)`` of every window over an (H, W) image, row-major."""
    return [
        (y, x)
        for y in window_starts(height, tile, stride)
        for x in window_starts(width, tile, stride)
    ]


def pad_to_tile(array: np.ndarray, tile: int) -> np.ndarray:
    """Reflect-pad the bottom/right of an (H, W[, C]) array so both sides are at least ``tile``."""
    pad_h, pad_w = max(0, tile - array.shape[0]), max(0, tile - array.shape[1])
    if not pad_h and not pad_w:
        return array
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (array.ndim - 2)
    # "symmetric" (edge-repeating) reflection also works when the pad exceeds the side length.
    return np.pad(array, widths, mode="symmetric")


def iter_tiles(
    image: np.ndarray, mask: np.ndarray, tile: int, stride: int
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """Yield ``(y, x, image_tile, mask_tile)`` for every sliding window (after padding)."""
    image, mask = pad_to_tile(image, tile), pad_to_tile(mask, tile)
    for y, x in windows(image.shape[0], image.shape[1], tile, stride):
        yield y, x, image[y : y + tile, x : x + tile], mask[y : y + tile, x : x + tile]
