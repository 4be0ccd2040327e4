"""The classical baseline: a per-image Otsu threshold, or multi-Otsu for several classes.

No training. Two classes: :meth:`OtsuThreshold.fit` only decides whether the foreground is the
bright or the dark side of the threshold, by which choice gives the higher Dice on the training
tiles. C > 2 classes: ``skimage.filters.threshold_multiotsu`` splits each image into C intensity
bins (darkest first, thresholds chosen per image), and :meth:`~OtsuThreshold.fit` learns which
class each bin stands for: of every permutation of the classes and the many-to-one map that
gives each bin its most frequent class, the one with the highest mIoU on the training tiles,
pixels pooled. A permutation predicts every class; the many-to-one map wins where two bins are
really one class (a class with no intensity of its own is then never predicted).

Colour images are reduced to luminance (ITU-R BT.601, as :mod:`segbench.decode` does) first.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from skimage.filters import threshold_multiotsu, threshold_otsu

from segbench.errors import SegbenchError

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_IGNORE = 255  # segbench.classes.IGNORE: mask pixels that count for nothing
_MAX_ENUMERATED = 7  # up to 7! = 5040 permutations are scored; more classes: Hungarian only


class OtsuThreshold:
    """Images are (H, W) grey or (H, W, 3) RGB, uint8/uint16. Predictions: two classes (H, W)
    float32 in {0, 1}; C > 2 classes (H, W) uint8 class indices in 0..C-1."""

    def __init__(
        self, *, smooth_sigma: float = 1.0, polarity: str = "bright", num_classes: int = 2
    ):
        self.smooth_sigma = smooth_sigma
        self.polarity = polarity
        self.num_classes = num_classes
        # class of each intensity bin, darkest bin first; identity until fitted
        self.mapping = list(range(num_classes))

    def _smoothed(self, image: np.ndarray) -> np.ndarray:
        x = (
            image.astype(np.float32)
            if image.ndim == 2
            else image[..., :3].astype(np.float32) @ _LUMA
        )
        if self.smooth_sigma > 0:
            x = ndimage.gaussian_filter(x, self.smooth_sigma)
        return x

    def _foreground(self, image: np.ndarray, polarity: str) -> np.ndarray:
        x = self._smoothed(image)
        if x.min() == x.max():  # flat image: Otsu is undefined, call it all background
            return np.zeros(x.shape, dtype=np.float32)
        bright = x > threshold_otsu(x)
        return (bright if polarity == "bright" else ~bright).astype(np.float32)

    def bins(self, image: np.ndarray) -> np.ndarray | None:
        """(H, W) uint8 multi-Otsu bin of each pixel (0 darkest), or None where the image has
        fewer distinct intensities than classes (a flat image)."""
        x = self._smoothed(image)
        try:
            thresholds = threshold_multiotsu(x, classes=self.num_classes)
        except ValueError:
            return None
        return np.digitize(x, thresholds).astype(np.uint8)

    def fit(self, images: np.ndarray, masks: np.ndarray) -> dict[str, float]:
        """Learn the polarity (two classes) or the bin -> class map (C > 2) on (N, H, W[, 3])
        images and (N, H, W) masks of class indices (255 ignored).

        Returns the training score of each choice tried: Dice per polarity, or the pooled mIoU
        of the best permutation (``permutation``, the map used: multi-Otsu gives each class one
        intensity bin) and, for comparison only, of the many-to-one map (``many_to_one``: each
        bin its most common class; on data whose classes overlap in intensity it collapses to
        "everything is background", which is no segmentation at all).
        """
        if self.num_classes == 2:
            return self._fit_polarity(images, masks)
        c = self.num_classes
        counts = np.zeros((c, c), dtype=np.int64)  # [bin, class] pixel counts, pooled
        for image, mask in zip(images, masks, strict=True):
            bins = self.bins(image)
            if bins is None:
                continue
            keep = mask != _IGNORE
            counts += np.bincount(
                bins[keep].astype(np.int64) * c + mask[keep], minlength=c * c
            ).reshape(c, c)
        perm = max(_permutations(counts), key=lambda m: _pooled_miou(counts, m))
        many = counts.argmax(axis=1)
        scores = {
            "permutation": _pooled_miou(counts, perm),
            "many_to_one": _pooled_miou(counts, many),
        }
        self.mapping = [int(k) for k in perm]
        return scores

    def _fit_polarity(self, images: np.ndarray, masks: np.ndarray) -> dict[str, float]:
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
        """Two classes: (H, W) float32 foreground "probability" in {0, 1}. C > 2: (H, W)
        uint8 class indices (a flat image: all background, 0)."""
        if self.num_classes == 2:
            return self._foreground(image, self.polarity)
        bins = self.bins(image)
        if bins is None:
            return np.zeros(image.shape[:2], dtype=np.uint8)
        return np.asarray(self.mapping, dtype=np.uint8)[bins]

    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        """:meth:`predict` as probabilities: two classes (H, W) float32 in {0, 1} (the same
        array); C > 2 (C, H, W) float32 one-hot, for callers that resize or average them."""
        pred = self.predict(image)
        if self.num_classes == 2:
            return pred
        return (pred[None] == np.arange(self.num_classes)[:, None, None]).astype(np.float32)

    def state_dict(self) -> dict:
        state = {"smooth_sigma": self.smooth_sigma, "polarity": self.polarity}
        if self.num_classes > 2:  # the binary state stays what it always was
            state |= {"num_classes": self.num_classes, "mapping": list(self.mapping)}
        return state

    def load_state_dict(self, state: dict) -> None:
        fitted = int(state.get("num_classes", 2))
        if fitted != self.num_classes:
            raise SegbenchError(
                f"otsu: fitted for {fitted} classes, asked for {self.num_classes}; "
                "re-run its train stage"
            )
        self.smooth_sigma = float(state["smooth_sigma"])
        self.polarity = str(state["polarity"])
        if fitted > 2:
            mapping = [int(k) for k in state["mapping"]]
            if len(mapping) != fitted or not all(0 <= k < fitted for k in mapping):
                raise SegbenchError(f"otsu: a damaged bin -> class map {mapping}")
            self.mapping = mapping


def _permutations(counts: np.ndarray):
    """Candidate bin -> class permutations: all of them for few classes, else the one that
    maximises pooled agreement (Hungarian)."""
    c = len(counts)
    if c <= _MAX_ENUMERATED:
        yield from (np.array(p) for p in itertools.permutations(range(c)))
        return
    rows, cols = linear_sum_assignment(counts, maximize=True)
    yield cols[np.argsort(rows)]


def _pooled_miou(counts: np.ndarray, mapping: np.ndarray) -> float:
    """mIoU of predicting ``mapping[bin]`` from pooled [bin, class] counts, over the classes
    in the reference or the prediction."""
    c = counts.shape[1]
    confusion = np.zeros((c, c), dtype=np.int64)  # [predicted, reference]
    np.add.at(confusion, np.asarray(mapping), counts)
    tp = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if present.any() else 1.0
