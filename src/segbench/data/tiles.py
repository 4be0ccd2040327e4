"""Sliding-window geometry and tile extraction.

Windows are square, ``tile`` pixels a side, stepped by ``stride``. Two ways to treat the edges
(``prepare.edges``):

* ``shift`` (default): the last window in each direction is moved back to end flush with the
  edge, so every pixel is covered and no tile holds invented content;
* ``reflect``: the image is reflect-padded at the bottom and right until the windows step
  evenly past its end, so every window is exactly ``stride`` from the last.

Either way an image smaller than a tile is reflect-padded first (:func:`pad_to_tile`), and
window coordinates are those of the original image (padding only grows the bottom/right).
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


def _reflect(array: np.ndarray, pad_h: int, pad_w: int) -> np.ndarray:
    if not pad_h and not pad_w:
        return array
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (array.ndim - 2)
    # "symmetric" (edge-repeating) reflection also works when the pad exceeds the side length.
    return np.pad(array, widths, mode="symmetric")


def pad_to_tile(array: np.ndarray, tile: int) -> np.ndarray:
    """Reflect-pad the bottom/right of an (H, W[, C]) array so both sides are at least ``tile``."""
    return _reflect(array, max(0, tile - array.shape[0]), max(0, tile - array.shape[1]))


def pad_to_stride(array: np.ndarray, tile: int, stride: int) -> np.ndarray:
    """Reflect-pad the bottom/right so windows of ``tile`` at ``stride`` end exactly at the edge."""

    def extra(length: int) -> int:
        padded = max(length, tile)
        return padded - length + (-(padded - tile)) % stride

    return _reflect(array, extra(array.shape[0]), extra(array.shape[1]))


def iter_tiles(
    image: np.ndarray, mask: np.ndarray, tile: int, stride: int, edges: str = "shift"
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """Yield ``(y, x, image_tile, mask_tile)`` for every sliding window (after padding)."""
    if edges == "reflect":
        image, mask = pad_to_stride(image, tile, stride), pad_to_stride(mask, tile, stride)
    elif edges == "shift":
        image, mask = pad_to_tile(image, tile), pad_to_tile(mask, tile)
    else:
        raise ValueError(f"edges must be 'shift' or 'reflect', got {edges!r}")
    for y, x in windows(image.shape[0], image.shape[1], tile, stride):
        yield y, x, image[y : y + tile, x : x + tile], mask[y : y + tile, x : x + tile]
