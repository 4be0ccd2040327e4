"""The classical baseline: a per-image Otsu threshold, with polarity chosen on the training split.

No training: :meth:`OtsuThreshold.fit` only decides whether the foreground is the bright or the
dark side of the threshold, by which choice gives the higher Dice on the training tiles.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu


class OtsuThreshold:
    """Images are (H, W) uint8 in [0, 255]; predictions are (H, W) float32 in {0, 1}."""

    def __init__(self, *, smooth_sigma: float = 1.0, polarity: str = "bright"):
        self.smooth_sigma = smooth_sigma
        self.polarity = polarity

    def _foreground(self, image: np.ndarray, polarity: str) -> np.ndarray:
        x = image.astype(np.float32)
        if self.smooth_sigma > 0:
            x = ndimage.gaussian_filter(x, self.smooth_sigma)
        if x.min() == x.max():  # flat image: Otsu is undefined, call it all background
            return np.zeros(x.shape, dtype=np.float32)
        bright = x > threshold_otsu(x)
        return (bright if polarity == "bright" else ~bright).astype(np.float32)

    def fit(self, images: np.ndarray, masks: np.ndarray) -> dict[str, float]:
        """Choose the polarity on (N, H, W) images and {0, 1} masks; return Dice per polarity."""
        scores = {}
        for polarity in ("bright", "dark"):
            inter = total = 0.0
            for image, mask in zip(images, masks, strict=True):
                pred = self._foreground(image, polarity)
                inter += float((pred * mask).sum())
                total += float(pred.sum() + mask.sum())
            scores[polarity] = 2 * inter / total if total else 1.0
        self.polarity = max(scores, key=scores.get)
        return scores

    def predict(self, image: np.ndarray) -> np.ndarray:
        """(H, W) uint8 image -> (H, W) float32 foreground "probability" in {0, 1}."""
        return self._foreground(image, self.polarity)

    def state_dict(self) -> dict:
        return {"smooth_sigma": self.smooth_sigma, "polarity": self.polarity}

    def load_state_dict(self, state: dict) -> None:
        self.smooth_sigma = float(state["smooth_sigma"])
        self.polarity = str(state["polarity"])
