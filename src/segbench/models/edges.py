"""Classical edge baselines: Sobel or Canny edges filled into regions, threshold chosen on val.

An edge detector marks where the intensity changes, not which side is the object; an edge map is
made a foreground mask the way scikit-image's "edge-based segmentation" example does it (edges,
then ``scipy.ndimage.binary_fill_holes``), with two steps that make it hold on tiles and on
unclosed contours:

1. **Luminance.** The input is a unit image, float32 in [0, 1] (the stored intensities scaled by
   the source image's intensity range, as the networks see them, so one threshold means the same
   on a tile as on the whole image); colour is reduced to luminance (ITU-R BT.601).
2. **Edges** at threshold ``t``. Sobel: ``skimage.filters.sobel`` of the image smoothed by a
   Gaussian of ``smooth_sigma`` px, kept where the magnitude is above ``t`` (thick edges).
   Canny: ``skimage.feature.canny`` with ``sigma``, ``high_threshold = t`` and ``low_threshold =
   low_ratio * t`` (thin edges, linked by hysteresis). Each threshold is in its detector's own
   units: ``sobel``'s normalised magnitude, and canny's unnormalised one (a sharp step from 0
   to 1 scores about 0.7 and 4 respectively, before smoothing).
3. **Closing** with a disk of ``close_radius`` px bridges gaps of up to about ``2 * close_radius``
   px in a contour. The edge map is mirrored past the frame first, so that the frame itself
   neither closes nor erodes anything.
4. **Filling.** Every region enclosed by edges becomes foreground, and so does a region enclosed
   by edges and exactly one side of the frame: an object cut by the frame, which tiles do to many
   objects. A region touching two or more sides is taken for background and left open.
5. **Opening** with the same disk removes what enclosed nothing: edge fragments (texture,
   clutter, open contours) thinner than ``2 * close_radius + 1`` px. Objects narrower than that
   are lost too: ``close_radius`` trades gap bridging against the smallest object kept.
6. **Region.** ``inside``: the filled regions are the foreground; ``outside``: their complement
   (data whose foreground is the phase around closed objects, such as a matrix around pores).

:meth:`EdgeSegmenter.fit` tries every threshold of the detector's grid (geometric, ten steps a
decade) with both regions on the **validation** tiles (``fit_split``), scores each by the
per-image criterion models are ranked on (:mod:`segbench.metrics`): the mean over tiles of Dice
over all images (a tile with nothing to find scores 1 when nothing is predicted there, 0
otherwise), and keeps the best; ``fit_scores`` holds every score. Only the
threshold and the region are learnt; the other keys are set in ``params.yaml``.

Two classes only: a filled contour says "object", not which class (on data with several classes
these entries are skipped, :func:`segbench.config.not_applicable`).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from scipy import ndimage
from skimage.feature import canny
from skimage.filters import sobel
from skimage.morphology import disk

from segbench.classes import IGNORE
from segbench.errors import SegbenchError
from segbench.metrics import dice_all

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_REGIONS = ("inside", "outside")


def _grid(low: float, high: float) -> tuple[float, ...]:
    """Thresholds from ``low`` to ``high``, ten a decade, rounded to 3 significant digits."""
    n = round(10 * math.log10(high / low)) + 1
    return tuple(float(f"{t:.3g}") for t in np.geomspace(low, high, n))


def luminance(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) unit image -> (H, W) float32 (BT.601 luminance for colour)."""
    x = np.asarray(image, dtype=np.float32)
    return x if x.ndim == 2 else x[..., :3] @ _LUMA


def edges_to_regions(edges: np.ndarray, radius: int) -> np.ndarray:
    """(H, W) bool edge map -> (H, W) bool regions they enclose (steps 3-5 of the module)."""
    if radius > 0:
        se = disk(radius)
        padded = np.pad(edges, radius, mode="symmetric")
        edges = ndimage.binary_closing(padded, se)[radius:-radius, radius:-radius]
    filled = ndimage.binary_fill_holes(edges)
    frame = np.pad(edges, 1)
    for side in ((0, slice(None)), (-1, slice(None)), (slice(None), 0), (slice(None), -1)):
        closed = frame.copy()
        closed[side] = True  # this side of the frame closes what touches it alone
        filled |= ndimage.binary_fill_holes(closed)[1:-1, 1:-1]
    if radius > 0:
        filled = ndimage.binary_opening(filled, disk(radius))
    return filled


def _mean_dice_all(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> float:
    """Mean over tiles of :func:`segbench.metrics.dice_all` from (N,) per-tile counts (1.0 for
    no tile: nothing to get wrong)."""
    if not len(tp):
        return 1.0
    per_tile = zip(tp.tolist(), fp.tolist(), fn.tolist(), strict=True)
    return float(np.mean([dice_all(*counts) for counts in per_tile]))


class EdgeSegmenter:
    """Base of the edge baselines. Images are (H, W) or (H, W, 3) float32 unit images in [0, 1]
    (``unit_input``); predictions (H, W) float32 in {0, 1}. Subclasses say how a luminance
    image becomes a response (:meth:`_response`, computed once per image) and how a response
    becomes edges at a threshold (:meth:`_edges`)."""

    name: ClassVar[str]
    grid: ClassVar[tuple[float, ...]]  # the thresholds fit tries, ascending
    fit_split: ClassVar[str] = "val"  # the tiles fit() is given (segbench.training.fit)
    unit_input: ClassVar[bool] = True  # fit() and predict() take unit images, not stored ones

    def __init__(self, *, close_radius: int, num_classes: int = 2):
        if num_classes != 2:
            raise SegbenchError(
                f"{self.name}: an edge baseline segments one foreground, but the data has "
                f"{num_classes} classes; use otsu (multi-Otsu) as the classical baseline"
            )
        self.close_radius = close_radius
        self.threshold: float | None = None  # None until fitted
        self.region = "inside"

    def _response(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _edges(self, response: np.ndarray, threshold: float) -> np.ndarray:
        raise NotImplementedError

    def _inside(self, response: np.ndarray, threshold: float) -> np.ndarray:
        return edges_to_regions(self._edges(response, threshold), self.close_radius)

    def fit(self, images: np.ndarray, masks: np.ndarray) -> dict[str, float]:
        """Choose the threshold and the region on (N, H, W[, 3]) unit images and (N, H, W)
        {0, 1} masks (the validation tiles; 255, not annotated, counts for nothing) by the
        criterion models are ranked on: the mean over tiles of Dice over all images (module
        doc). Returns ``{"<region>_<threshold>": criterion}`` for every choice tried."""
        responses = [self._response(luminance(image)) for image in images]
        truth = [np.asarray(m) == 1 for m in masks]
        scored = [np.asarray(m) != IGNORE for m in masks]
        kept = [i for i, k in enumerate(scored) if k.any()]  # an unannotated tile says nothing
        fg = np.array([int(truth[i].sum()) for i in kept])
        pixels = np.array([int(scored[i].sum()) for i in kept])
        scores, choices = {}, {}
        for threshold in self.grid:
            inter, pred = np.zeros(len(kept), np.int64), np.zeros(len(kept), np.int64)
            for j, i in enumerate(kept):
                inside = self._inside(responses[i], threshold)
                inter[j] = np.count_nonzero(inside & truth[i])
                pred[j] = np.count_nonzero(inside & scored[i])
            # "outside" is the complement: its counts follow from the same pass
            for region, tp, p in (("inside", inter, pred), ("outside", fg - inter, pixels - pred)):
                key = f"{region}_{threshold:g}"
                scores[key] = _mean_dice_all(tp, p - tp, fg - tp)
                choices[key] = (threshold, region)
        best = max(scores, key=scores.get)  # ties: the lowest threshold, inside first
        self.threshold, self.region = choices[best]
        return scores

    def predict(self, image: np.ndarray) -> np.ndarray:
        """(H, W[, 3]) unit image -> (H, W) float32 foreground in {0, 1}."""
        if self.threshold is None:
            raise SegbenchError(f"{self.name}: not fitted; run its train stage first")
        inside = self._inside(self._response(luminance(image)), self.threshold)
        return (inside if self.region == "inside" else ~inside).astype(np.float32)

    def _settings(self) -> dict:
        return {"close_radius": self.close_radius}

    def state_dict(self) -> dict:
        """What fit chose and the settings it chose with (JSON: state.json)."""
        return {
            "model": self.name,
            "threshold": self.threshold,
            "region": self.region,
            **self._settings(),
        }

    def load_state_dict(self, state: dict) -> None:
        expected = set(self.state_dict())
        if set(state) != expected or state["model"] != self.name:
            raise SegbenchError(
                f"{self.name}: state holds {sorted(state)} of {state.get('model')!r}, expected "
                f"{sorted(expected)} of {self.name!r}; re-run its train stage"
            )
        threshold = state["threshold"]
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or threshold <= 0:
            raise SegbenchError(
                f"{self.name}: a damaged threshold {threshold!r}; re-run its train stage"
            )
        if state["region"] not in _REGIONS:
            raise SegbenchError(f"{self.name}: region {state['region']!r} not in {_REGIONS}")
        self.threshold, self.region = float(threshold), str(state["region"])
        for key, value in self._settings().items():
            setattr(self, key, type(value)(state[key]))


class SobelEdges(EdgeSegmenter):
    """Sobel gradient magnitude of the Gaussian-smoothed image, thresholded (thick edges)."""

    name = "sobel"
    grid = _grid(1e-3, 1.0)

    def __init__(self, *, smooth_sigma: float, close_radius: int, num_classes: int = 2):
        super().__init__(close_radius=close_radius, num_classes=num_classes)
        self.smooth_sigma = smooth_sigma

    def _response(self, x: np.ndarray) -> np.ndarray:
        if self.smooth_sigma > 0:
            x = ndimage.gaussian_filter(x, self.smooth_sigma)
        return sobel(x)

    def _edges(self, response: np.ndarray, threshold: float) -> np.ndarray:
        return response > threshold

    def _settings(self) -> dict:
        return {"smooth_sigma": self.smooth_sigma, **super()._settings()}


class CannyEdges(EdgeSegmenter):
    """Canny edges (Gaussian ``sigma``, non-maximum suppression, hysteresis between
    ``low_ratio * threshold`` and ``threshold``): one pixel wide, linked along contours."""

    name = "canny"
    grid = _grid(4e-3, 4.0)

    def __init__(self, *, sigma: float, low_ratio: float, close_radius: int, num_classes: int = 2):
        super().__init__(close_radius=close_radius, num_classes=num_classes)
        self.sigma, self.low_ratio = sigma, low_ratio

    def _response(self, x: np.ndarray) -> np.ndarray:
        return x  # canny smooths, differentiates and suppresses at each threshold itself

    def _edges(self, response: np.ndarray, threshold: float) -> np.ndarray:
        return canny(
            response,
            sigma=self.sigma,
            low_threshold=self.low_ratio * threshold,
            high_threshold=threshold,
        )

    def _settings(self) -> dict:
        return {"sigma": self.sigma, "low_ratio": self.low_ratio, **super()._settings()}
