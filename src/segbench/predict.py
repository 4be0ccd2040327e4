"""Load a trained model directory and predict full-size images with it.

A :class:`Predictor` takes an (H, W) or (H, W, 3) uint8/uint16 image at full resolution, scales
it to the working resolution the model was trained at (``prepare.scale``), predicts, and returns
probabilities resized back to (H, W): the foreground probability (H, W) of a two-class model, or
(C, H, W) class probabilities.

An image whose channels differ from the model's (a grey image for an RGB model, or the reverse)
is converted (grey replicated; colour to luminance) and the predictor says so once.

Timing a predictor (cost figures that do not depend on what ran before)::

    predictor.warmup()                # one untimed image: start-up costs paid here
    with predictor.cache_off():       # SAM's embedding cache bypassed: the encoder runs on
        for image in images:          # every image, as on a user's first one
            predictor.predict_proba(image, ...)
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import cv2
import numpy as np
import torch

from segbench.checkpoint import load_model_state, load_state
from segbench.cost import embedding_caches
from segbench.data.dataset import to_chw
from segbench.data.normalize import intensity_range, standardize, to_unit
from segbench.data.resize import resize_image, resize_mask, scaled_shape
from segbench.decode import convert_channels
from segbench.devices import resolve_device
from segbench.errors import SegbenchError
from segbench.inference import sliding_window_proba
from segbench.io import read_json
from segbench.modelcard import ModelCard
from segbench.models import build_ensemble, build_model
from segbench.tta import TTA_MODES, averaged

# The warm-up image's seed: the same synthetic image in every run.
_WARMUP_SEED = 0


class Predictor:
    """Full-resolution (H, W[, 3]) uint8/uint16 image -> float32 probabilities: (H, W)
    foreground for two classes, (C, H, W) for several.

    The image is scaled to the working resolution first, and its intensity range is measured
    there, exactly as ``prepare`` measured it for the training tiles. Models that take oracle
    prompts (``self.oracle``: SAM prompted from the ground truth) also need the image's
    reference mask; zero-shot SAM returns a 0/1 mask rather than a probability.
    """

    def __init__(
        self,
        model,
        card: ModelCard,
        *,
        overlap: float,
        batch_size: int,
        device: torch.device,
        blend: str = "gaussian",
        tta: str = "none",
    ):
        if tta not in TTA_MODES:
            raise SegbenchError(f"tta: unknown mode {tta!r}; valid: {', '.join(TTA_MODES)}")
        self.model, self.card = model, card
        self.tta = tta
        self.name, self.kind = card.name, card.kind
        self.scale = card.prepare.scale
        self.tile = card.prepare.tile_size
        self.normalize = card.prepare.normalize
        self.overlap, self.batch_size, self.device = overlap, batch_size, device
        self.blend = blend
        self.oracle = card.notes()["oracle_prompts"]
        self.num_classes, self.channels = card.num_classes, card.channels
        self._told = False

    def as_input(self, image: np.ndarray) -> np.ndarray:
        """``image`` with the model's channels: converted, and said once, where they differ."""
        has = "rgb" if image.ndim == 3 else "gray"
        if has == self.channels:
            return image
        if not self._told:
            how = "replicated to 3 channels" if self.channels == "rgb" else "reduced to luminance"
            print(
                f"{self.name}: the model takes {self.channels} images; {has} images are {how}",
                file=sys.stderr,
            )
            self._told = True
        return convert_channels(image, self.channels)

    def warmup(self) -> None:
        """One untimed prediction of a synthetic image (one tile at the working resolution;
        for oracle models with a square object in its reference), with :meth:`cache_off`: the
        one-off start-up costs (CUDA context and kernels, allocator, the zero-shot predictor
        and its cache key) are paid here, so that throughput figures exclude them, and the
        synthetic image's embedding never enters a cache. Classical models need none."""
        if self.kind == "classical":
            return
        image, reference = warmup_image(self.tile, self.scale, self.channels)
        with self.cache_off():
            self.predict_proba(image, reference)

    @contextmanager
    def cache_off(self) -> Iterator[None]:
        """Inside the block, the model's SAM embedding caches (zero-shot ``embedding_cache``, a
        fine-tuned decoder's, an ensemble member's) are bypassed: the image encoder runs on
        every image, no cache file is read or written, hits and misses stay as they are.
        Outputs are the same as with the cache. The caches are used again after the block; a
        model without one is unaffected. Do not move the model (``.to``) inside the block."""
        with ExitStack() as stack:
            for cache in embedding_caches(self.model):
                stack.enter_context(cache.off())
            yield

    def predict_proba(
        self, image: np.ndarray, reference: np.ndarray | None = None, *, image_id: str = ""
    ) -> np.ndarray:
        """(H, W[, 3]) image [+ (H, W) reference mask, used only by oracle models] -> (H, W)
        float32 foreground probability (two classes) or (C, H, W) class probabilities."""
        image = self.as_input(image)
        height, width = image.shape[:2]
        shape = scaled_shape(height, width, self.scale)
        small = resize_image(image, shape)
        if self.oracle and reference is None:
            raise SegbenchError(
                f"{self.name} takes its prompts from "
                "reference masks (oracle prompts), and none was given; it can only be "
                "evaluated on images with masks"
            )
        ref = resize_mask(reference, shape) if self.oracle else None
        if self.tta == "none":
            proba = self._predict_small(small, ref, image_id)
        else:  # the views' probabilities averaged at the working resolution
            proba = averaged(self._predict_small, small, ref, mode=self.tta, image_id=image_id)
        if proba.shape[-2:] != (height, width):
            proba = resize_proba(proba, (height, width))
        return proba.astype(np.float32)

    def _predict_small(self, small: np.ndarray, ref: np.ndarray | None, image_id: str):
        """One (h, w[, 3]) image at the working resolution [+ its (h, w) reference, oracle
        models] -> (h, w) or (C, h, w) probabilities at that resolution."""
        if self.kind == "classical":
            if getattr(self.model, "unit_input", False):  # edge baselines: unit thresholds
                small = to_unit(small, *intensity_range(small, self.normalize))
            # Several classes (multi-Otsu): one-hot (C, H, W), resized like probabilities.
            several = self.num_classes > 2
            proba = (self.model.predict_proba if several else self.model.predict)(small)
        elif self.kind == "zero_shot":
            unit = to_unit(small, *intensity_range(small, self.normalize))
            mask = self.model.predict(unit, ref, image_id=image_id)
            proba = mask.astype(np.float32)
        else:
            proba = sliding_window_proba(
                self.model,
                to_chw(standardize(small, *intensity_range(small, self.normalize))),
                tile=self.tile,
                overlap=self.overlap,
                batch_size=self.batch_size,
                device=self.device,
                blend=self.blend,
                guide=ref,
            )
        return proba

    def predict_points_curve(
        self, image: np.ndarray, reference: np.ndarray, *, image_id: str = ""
    ) -> list[np.ndarray]:
        """Zero-shot SAM with ``points_curve``: 1 .. k_points points per object, each as
        :meth:`predict_proba` returns a mask ((H, W) float32, 0/1 resized to the image), for one
        (H, W[, 3]) image and its (H, W) reference mask. Called right after
        :meth:`predict_proba` with the same ``image_id``, it reuses that image's embedding."""
        if not getattr(self.model, "points_curve", False):
            raise SegbenchError(f"{self.name} has no points curve (points_curve: true)")
        unit, full = self.unit_image(image)
        ref = resize_mask(reference, unit.shape[:2])
        masks = self.model.predict_points_curve(unit, ref, image_id=image_id)
        return [self.to_full(m, full) for m in masks]

    def unit_image(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """A full-size (H, W[, 3]) image as the zero-shot SAMs see it (with the model's
        channels, at the working resolution, in [0, 1]: :func:`to_unit` over the range
        ``prepare`` measured), and its full (H, W)."""
        image = self.as_input(image)
        full = image.shape[:2]
        small = resize_image(image, scaled_shape(*full, self.scale))
        return to_unit(small, *intensity_range(small, self.normalize)), full

    @staticmethod
    def to_full(mask: np.ndarray, full: tuple[int, int]) -> np.ndarray:
        """A working-resolution mask as :meth:`predict_proba` returns it: (H, W) float32 0/1,
        resized like a probability to the image's ``full`` (H, W)."""
        out = mask.astype(np.float32)
        return out if out.shape == tuple(full) else resize_proba(out, full)


def warmup_image(tile: int, scale: float, channels: str) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random uint8 image ((S, S) grey or (S, S, 3) RGB, S such that it is one
    ``tile`` at the working resolution ``scale``) and its (S, S) uint8 {0, 1} reference: a
    centred square half its side, so that an oracle model has one object to prompt."""
    size = max(1, round(tile / scale))
    shape = (size, size, 3) if channels == "rgb" else (size, size)
    image = np.random.default_rng(_WARMUP_SEED).integers(0, 256, shape, dtype=np.uint8)
    reference = np.zeros((size, size), dtype=np.uint8)
    reference[size // 4 : size - size // 4, size // 4 : size - size // 4] = 1
    return image, reference


def resize_proba(proba: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) or (C, H, W) probabilities resized (bilinear) to ``shape`` = (H', W')."""
    height, width = shape
    if proba.ndim == 2:
        return cv2.resize(proba, (width, height), interpolation=cv2.INTER_LINEAR)
    # OpenCV resizes up to 512 channels at once, channels last.
    moved = np.ascontiguousarray(proba.transpose(1, 2, 0), dtype=np.float32)
    out = cv2.resize(moved, (width, height), interpolation=cv2.INTER_LINEAR)
    return (out[..., None] if out.ndim == 2 else out).transpose(2, 0, 1)


def load_predictor(
    model_dir: str | Path,
    *,
    overlap: float = 0.5,
    batch_size: int = 4,
    blend: str = "gaussian",
    device: torch.device | None = None,
    tta: str = "none",
    card: ModelCard | None = None,
) -> Predictor:
    """Rebuild the model saved by :func:`segbench.training.train` (or an ensemble fitted by
    :func:`segbench.ensemble.fit_ensemble`) in ``model_dir``, as its model card describes.

    Torch weights are read with ``torch.load(..., weights_only=True)``. A directory that is not a
    complete trained model (no or a damaged ``card.json``, missing or unreadable weights) raises
    a :class:`SegbenchError` naming the file. ``card``, when given, replaces the directory's
    own (an MLflow model's copy, whose SAM checkpoint lies elsewhere); ``tta`` is
    :class:`Predictor`'s.
    """
    model_dir = Path(model_dir)
    card = card or ModelCard.read(model_dir)
    model = build_from_card(card)
    device = device or resolve_device("auto")
    if card.kind == "zero_shot":  # used as it comes: nothing was trained or saved
        model = model.to(device)
    elif card.kind == "classical":
        model.load_state_dict(read_json(model_dir / "state.json"))
    else:  # torch models and ensembles: one state dict
        weights = model_dir / "weights.pt"
        try:
            load_model_state(model, load_state(weights, "re-run its train stage"))
        except (RuntimeError, TypeError, ValueError) as exc:  # not what the card builds
            raise SegbenchError(
                f"{weights} does not fit the model {model_dir / 'card.json'} describes "
                f"({str(exc).splitlines()[0]}); re-run its train stage"
            ) from None
        if hasattr(model, "prepare_for_inference"):
            model.prepare_for_inference()  # SAM LoRA: adapters merged, no extra latency
        model = model.to(device).eval()
    return Predictor(
        model, card, overlap=overlap, batch_size=batch_size, device=device, blend=blend, tta=tta
    )


def build_from_card(card: ModelCard):
    """The untrained model of ``card`` (an ensemble with its members, as their cards say)."""
    if card.kind != "ensemble":
        return build_model(
            card.entry, name=card.name, in_channels=card.in_channels, num_classes=card.num_classes
        )
    members = {m: (c.entry, c.in_channels) for m, c in (card.members or {}).items()}
    weights = [card.ensemble.weights[m] for m in members] if card.ensemble else None
    return build_ensemble(members, weights, num_classes=card.num_classes)
