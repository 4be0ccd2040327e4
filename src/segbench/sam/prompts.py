"""Prompts for Segment Anything taken from a reference mask (oracle prompts), per component.

Coordinates follow segment_anything: points are (x, y) pixel positions, boxes are
(x0, y0, x1, y1) with inclusive corners, both in the image's own pixel frame. Prompts derived
from the ground truth are *oracle* prompts: a real user would have to click or draw them, and
the report labels every row that uses them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# 8-connectivity: particles touching at a corner are one object, as a person would see them.
_EIGHT = np.ones((3, 3), dtype=bool)


def components(mask: np.ndarray) -> list[np.ndarray]:
    """The connected foreground components of an (H, W) mask, each as an (H, W) bool mask,
    largest first (ties in scan order)."""
    labels, n = ndimage.label(np.asarray(mask).astype(bool), structure=_EIGHT)
    if n == 0:
        return []
    sizes = np.bincount(labels.ravel())[1:]
    order = sorted(range(n), key=lambda i: -sizes[i])
    return [labels == i + 1 for i in order]


def interior_points(component: np.ndarray, k: int = 1) -> np.ndarray:
    """``k`` points inside one component, as a (k, 2) float array of (x, y).

    The first is the pixel farthest from the component's boundary (the image edge counts as
    boundary; among equally deep pixels, the one nearest the centroid): the most unambiguous
    single click. Each next point maximises the smaller of its
    distance to the boundary and to the points already chosen, which spreads the points over
    the object. A component with fewer than ``k`` pixels gives each of its pixels once.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    padded = np.pad(component.astype(bool), 1)  # so the image border is boundary too
    to_edge = ndimage.distance_transform_edt(padded)[1:-1, 1:-1]
    ys, xs = np.nonzero(component)
    if ys.size == 0:
        raise ValueError("the component is empty")
    depth = to_edge[ys, xs]
    # The deepest pixel; on a ridge of equally deep ones (a bar), the one nearest the centroid.
    deepest = np.flatnonzero(depth == depth.max())
    centre = np.hypot(ys[deepest] - ys.mean(), xs[deepest] - xs.mean())
    chosen: list[int] = [int(deepest[np.argmin(centre)])]
    nearest = np.full(ys.size, np.inf)
    for _ in range(min(k, ys.size) - 1):
        last = chosen[-1]
        nearest = np.minimum(nearest, np.hypot(ys - ys[last], xs - xs[last]))
        # Best min(depth, distance to chosen points); among equals, the farthest from them.
        chosen.append(int(np.lexsort((nearest, np.minimum(depth, nearest)))[-1]))
    return np.stack([xs[chosen], ys[chosen]], axis=1).astype(np.float32)


def box(component: np.ndarray, *, jitter: int = 0, rng: np.random.Generator | None = None):
    """The component's bounding box (x0, y0, x1, y1), float32, inclusive corners.

    ``jitter`` > 0 moves each side independently by a whole number of pixels drawn uniformly
    from [-jitter, jitter] (as SAM's training recipe does to imitate a sloppy user), clipped to
    the image and never inverted.
    """
    ys, xs = np.nonzero(component)
    if ys.size == 0:
        raise ValueError("the component is empty")
    height, width = component.shape
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max(), ys.max()
    if jitter > 0:
        rng = rng or np.random.default_rng(0)
        dx0, dy0, dx1, dy1 = rng.integers(-jitter, jitter + 1, size=4)
        x0, x1 = np.clip(x0 + dx0, 0, width - 1), np.clip(x1 + dx1, 0, width - 1)
        y0, y1 = np.clip(y0 + dy0, 0, height - 1), np.clip(y1 + dy1, 0, height - 1)
        x0, x1 = min(x0, x1), max(x0, x1)
        y0, y1 = min(y0, y1), max(y0, y1)
    return np.array([x0, y0, x1, y1], dtype=np.float32)
