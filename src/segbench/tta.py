"""Test-time augmentation: predict an image under several dihedral transforms, map each
prediction back, and average the probabilities (``evaluate.tta``, ``segbench predict --tta``).

A view is ``(k, flip)``: flip the image left-right (when ``flip``), then rotate it by ``k``
quarter turns counter-clockwise (:func:`numpy.rot90`). ``flips`` is {identity, left-right,
up-down, both} (four views), ``d4`` the eight symmetries of the square. Both sets are groups,
so the averaged prediction of a transformed image is exactly the transformed averaged
prediction: a flip of the input flips the output, whatever the model does (tested).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

View = tuple[int, bool]
TTA_VIEWS: dict[str, tuple[View, ...]] = {
    "none": ((0, False),),
    # up-down = left-right then a half turn; both = a half turn.
    "flips": ((0, False), (0, True), (2, True), (2, False)),
    "d4": tuple((k, flip) for flip in (False, True) for k in range(4)),
}
TTA_MODES = tuple(TTA_VIEWS)
# In words, for the report and the export's model card.
TTA_DESCRIPTIONS = {
    "none": "none (each image predicted once)",
    "flips": (
        "horizontal and vertical flips (4 views: as is, flipped left-right, up-down and both), "
        "the probabilities averaged after undoing each flip"
    ),
    "d4": (
        "the 8 dihedral transforms (rotations by 0, 90, 180 and 270 degrees, each with and "
        "without a flip), the probabilities averaged after undoing each"
    ),
}


def forward(array: np.ndarray, view: View, axes: tuple[int, int]) -> np.ndarray:
    """``array`` transformed by ``view`` over its two spatial ``axes`` ((0, 1) for an
    (H, W[, C]) image, (-2, -1) for (..., H, W) probabilities)."""
    k, flip = view
    out = np.flip(array, axis=axes[1]) if flip else array
    return np.ascontiguousarray(np.rot90(out, k, axes=axes))


def inverse(array: np.ndarray, view: View, axes: tuple[int, int]) -> np.ndarray:
    """Undo :func:`forward` (rotate back, then flip back)."""
    k, flip = view
    out = np.rot90(array, -k, axes=axes)
    return np.ascontiguousarray(np.flip(out, axis=axes[1]) if flip else out)


def averaged(
    predict: Callable[[np.ndarray, np.ndarray | None, str], np.ndarray],
    image: np.ndarray,
    reference: np.ndarray | None,
    *,
    mode: str,
    image_id: str = "",
) -> np.ndarray:
    """The mean over ``mode``'s views of ``predict(view of image, view of reference,
    view id)`` mapped back; ``image`` is (H, W[, C]), ``reference`` (H, W) or None, and
    ``predict`` returns (H', W') or (C, H', W') probabilities of the image it was given.
    Each view has its own id (``<image_id>#tta<k><f>``; the identity keeps ``image_id``), so
    that a per-image cache (SAM's embeddings) never serves one view's entry for another."""
    if mode not in TTA_VIEWS:
        raise ValueError(f"unknown tta mode {mode!r}; valid: {', '.join(TTA_MODES)}")
    total = None
    for view in TTA_VIEWS[mode]:
        ref = None if reference is None else forward(reference, view, (0, 1))
        tag = image_id if view == (0, False) else f"{image_id}#tta{view[0]}{int(view[1])}"
        proba = inverse(predict(forward(image, view, (0, 1)), ref, tag), view, (-2, -1))
        total = proba.astype(np.float64) if total is None else total + proba
    return (total / len(TTA_VIEWS[mode])).astype(np.float32)
