"""Sliding-window geometry: every pixel of a (padded) image is covered by some tile."""

import itertools

import numpy as np
import pytest

from segbench.data.tiles import iter_tiles, pad_to_tile, window_starts, windows


@pytest.mark.parametrize(
    ("length", "tile", "stride"),
    [(512, 512, 512), (700, 512, 384), (1024, 256, 256), (1000, 256, 100), (257, 256, 1)],
)
def test_window_starts_cover_and_stay_inside(length, tile, stride):
    starts = window_starts(length, tile, stride)
    assert starts[0] == 0 and starts[-1] == length - tile
    assert all(0 < b - a <= stride for a, b in itertools.pairwise(starts))


@pytest.mark.parametrize(
    ("shape", "tile", "stride"),
    [((768, 1024), 512, 384), ((384, 512), 256, 128), ((100, 130), 64, 48), ((40, 90), 64, 64)],
)
def test_tiles_cover_every_pixel_of_the_padded_image(shape, tile, stride):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, shape, dtype=np.uint8)
    mask = (image > 128).astype(np.uint8)
    padded = pad_to_tile(image, tile)
    covered = np.zeros(padded.shape, dtype=int)
    for y, x, img_t, msk_t in iter_tiles(image, mask, tile, stride):
        assert img_t.shape == msk_t.shape == (tile, tile)
        np.testing.assert_array_equal(img_t, padded[y : y + tile, x : x + tile])
        covered[y : y + tile, x : x + tile] += 1
    assert covered.min() >= 1
    assert padded.shape == (max(shape[0], tile), max(shape[1], tile))


def test_padding_reflects_and_keeps_the_original():
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    padded = pad_to_tile(image, 6)
    assert padded.shape == (6, 6)
    np.testing.assert_array_equal(padded[:3, :4], image)
    np.testing.assert_array_equal(padded[3, :4], image[2])  # symmetric: edge row repeats


def test_windows_reject_bad_geometry():
    with pytest.raises(ValueError):
        window_starts(100, 128, 64)
    with pytest.raises(ValueError):
        window_starts(200, 128, 0)
    assert windows(128, 128, 128, 64) == [(0, 0)]


@pytest.mark.parametrize(
    ("shape", "tile", "stride"),
    [((768, 1024), 512, 384), ((100, 130), 64, 48), ((40, 90), 64, 64), ((300, 300), 128, 100)],
)
def test_reflect_edges_cover_every_pixel_with_even_steps(shape, tile, stride):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, shape, dtype=np.uint8)
    mask = (image > 128).astype(np.uint8)
    covered = np.zeros((shape[0] + 2 * tile, shape[1] + 2 * tile), dtype=int)
    ys, xs = set(), set()
    for y, x, img_t, msk_t in iter_tiles(image, mask, tile, stride, edges="reflect"):
        assert img_t.shape == msk_t.shape == (tile, tile)
        covered[y : y + tile, x : x + tile] += 1
        ys.add(y)
        xs.add(x)
        h, w = min(tile, shape[0] - y), min(tile, shape[1] - x)
        if h > 0 and w > 0:  # inside the image the tile is the image itself
            np.testing.assert_array_equal(img_t[:h, :w], image[y : y + h, x : x + w])
    assert (covered[: shape[0], : shape[1]] >= 1).all()
    for starts in (sorted(ys), sorted(xs)):
        assert all(b - a == stride for a, b in itertools.pairwise(starts))


def test_unknown_edge_mode_is_an_error():
    with pytest.raises(ValueError, match="edges"):
        next(iter_tiles(np.zeros((64, 64)), np.zeros((64, 64)), 32, 32, edges="wrap"))
