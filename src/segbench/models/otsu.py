"""The classical baseline: a per-image Otsu threshold, or multi-Otsu for several classes.

No training. Two classes: :meth:`OtsuThreshold.fit` only decides whether the foreground is the
bright or the dark side of the threshold, by which choice gives the higher criterion on the
training tiles: the per-image criterion models are ranked on (:mod:`segbench.metrics`), here the
mean over tiles of Dice over all images (a tile with nothing to find scores 1 when nothing is
predicted there, 0 otherwise). C > 2 classes: ``skimage.filters.threshold_multiotsu`` splits
each image into C intensity bins (darkest first, thresholds chosen per image), and
:meth:`~OtsuThreshold.fit` learns which class each bin stands for: of every permutation of the
classes, the one with the highest mean per-tile mIoU on the training tiles. The many-to-one map
that gives each bin its most frequent class is scored beside it for comparison only: it would
win where two bins are really one class, but a class with no intensity of its own would then
never be predicted.

Colour images are reduced to luminance (ITU-R BT.601, as :mod:`segbench.decode` does) first.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from skimage.filters import threshold_multiotsu, threshold_otsu

from segbench.errors import SegbenchError
from segbench.metrics import dice_all

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

        Returns the training score of each choice tried, on the criterion (module doc): the
        mean per-tile Dice over all images per polarity, or the mean per-tile mIoU of the best
        permutation (``permutation``, the map used: multi-Otsu gives each class one
        intensity bin) and, for comparison only, of the many-to-one map (``many_to_one``: each
        bin its most common class; on data whose classes overlap in intensity it collapses to
        "everything is background", which is no segmentation at all).
        """
        if self.num_classes == 2:
            return self._fit_polarity(images, masks)
        c = self.num_classes
        counts = []  # per tile, [bin, class] pixel counts
        for image, mask in zip(images, masks, strict=True):
            bins = self.bins(image)
            if bins is None:
                continue
            keep = mask != _IGNORE
            counts.append(
                np.bincount(bins[keep].astype(np.int64) * c + mask[keep], minlength=c * c).reshape(
                    c, c
                )
            )
        counts = np.array(counts, dtype=np.int64).reshape(-1, c, c)
        perm = max(_permutations(counts.sum(axis=0)), key=lambda m: _mean_miou(counts, m))
        many = counts.sum(axis=0).argmax(axis=1)
        scores = {
            "permutation": _mean_miou(counts, perm),
            "many_to_one": _mean_miou(counts, many),
        }
        self.mapping = [int(k) for k in perm]
        return scores

    def _fit_polarity(self, images: np.ndarray, masks: np.ndarray) -> dict[str, float]:
        scores = {}
        for polarity in ("bright", "dark"):
            per_tile = []
            for image, mask in zip(images, masks, strict=True):
                scored = mask != _IGNORE
                if not scored.any():
                    continue  # nothing annotated: the tile says nothing about either side
                pred, truth = self._foreground(image, polarity) > 0, mask == 1
                tp = int(np.count_nonzero(pred & truth))
                fp = int(np.count_nonzero(pred & scored & ~truth))
                per_tile.append(dice_all(tp, fp, int(np.count_nonzero(truth)) - tp))
            scores[polarity] = float(np.mean(per_tile)) if per_tile else 1.0
        self.polarity = max(scores, key=scores.get)  # ties: bright
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
    maximises agreement over the pixels of all tiles pooled (Hungarian)."""
    c = len(counts)
    if c <= _MAX_ENUMERATED:
        yield from (np.array(p) for p in itertools.permutations(range(c)))
        return
    rows, cols = linear_sum_assignment(counts, maximize=True)
    yield cols[np.argsort(rows)]


def _mean_miou(counts: np.ndarray, mapping: np.ndarray) -> float:
    """Mean over tiles of the mIoU of predicting ``mapping[bin]``, from (N, bins, classes)
    per-tile counts: each tile's mIoU over the classes in its reference or prediction, tiles
    with no pixel counted left out (1.0 where none is left: nothing to get wrong)."""
    c = counts.shape[2]
    onehot = np.eye(c, dtype=np.int64)[np.asarray(mapping)]  # [bin, predicted class]
    confusion = np.einsum("bp,nbr->npr", onehot, counts)  # per tile [predicted, reference]
    tp = np.diagonal(confusion, axis1=1, axis2=2).astype(np.float64)
    union = confusion.sum(axis=1) + confusion.sum(axis=2) - tp
    present = union > 0
    iou = np.divide(tp, union, out=np.zeros_like(tp), where=present)
    n_present = present.sum(axis=1)
    kept = n_present > 0
    if not kept.any():
        return 1.0
    return float((iou.sum(axis=1)[kept] / n_present[kept]).mean())
