"""Segment Anything zero-shot: one image embedding, every prompt mode, one binary mask each.

Prompt modes (:data:`PROMPT_MODES`):

| mode     | prompt per ground-truth component                       | oracle |
| -------- | ------------------------------------------------------- | ------ |
| `point`  | the interior point farthest from the boundary           | yes    |
| `points` | ``k`` interior points spread over the component          | yes    |
| `box`    | its bounding box, optionally jittered by a few pixels    | yes    |
| `auto`   | none: SAM's automatic mask generator, all masks merged   | no     |

Oracle modes read their prompts from the reference mask, so they measure SAM given a perfect
user, not SAM on its own; the report labels those rows. ``point`` asks SAM for its three
candidate masks and keeps the one with the highest predicted IoU, as the SAM paper does for an
ambiguous single click; ``points`` and ``box`` are unambiguous and ask for one mask.

With an ``embedding_cache`` directory the image encoder's features go through
:class:`~segbench.sam.cache.EmbeddingCache`, keyed by the encoder's weights and by the exact
preprocessed input, so the pipeline's stages (one process per mode) embed each image once
between them. ``auto`` reads it too: its first crop is the whole image.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from segment_anything.modeling import Sam

from segbench.config.models import AutoMaskConfig
from segbench.errors import SegbenchError
from segbench.sam.cache import EmbeddingCache
from segbench.sam.prompts import box, components, interior_points

PROMPT_MODES = {"point": True, "points": True, "box": True, "auto": False}  # mode -> oracle?

# Prompts per forward pass of the mask decoder: bounds memory on images with many particles.
_CHUNK = 64


def to_sam_rgb(unit: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) float image in [0, 1] (see :func:`segbench.data.normalize.to_unit`)
    -> (H, W, 3) uint8 RGB, SAM's input: a grey image replicated, a colour image as it is."""
    rgb = np.rint(np.clip(unit, 0.0, 1.0) * 255).astype(np.uint8)
    return rgb if rgb.ndim == 3 else np.repeat(rgb[:, :, None], 3, axis=2)


class CachedPredictor(SamPredictor):
    """A :class:`SamPredictor` whose image features come from an :class:`EmbeddingCache`.

    ``set_torch_image`` is the original's, except that the (1, 3, S, S) preprocessed input
    (normalised and padded, exactly what the encoder would get) is handed to the cache, which
    runs ``sam.image_encoder`` only on a miss.
    """

    def __init__(self, sam: Sam, cache: EmbeddingCache):
        super().__init__(sam)
        self.cache = cache

    @torch.no_grad()
    def set_torch_image(
        self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]
    ) -> None:
        """(1, 3, h, w) image resized by ``ResizeLongestSide`` (long side = the encoder's input
        size); ``original_image_size`` is its (H, W) before resizing."""
        img_size = self.model.image_encoder.img_size
        assert (
            len(transformed_image.shape) == 4
            and transformed_image.shape[1] == 3
            and max(*transformed_image.shape[2:]) == img_size
        ), f"set_torch_image input must be BCHW with long side {img_size}."
        self.reset_image()

        self.original_size = original_image_size
        self.input_size = tuple(transformed_image.shape[-2:])
        input_image = self.model.preprocess(transformed_image)
        self.features = self.cache.embed(input_image, self.model.image_encoder)
        self.is_image_set = True


class ZeroShot:
    """Prompted and automatic SAM masks for one image at a time.

    ``set_image`` runs the image encoder once; every prompted mode after it reuses that
    embedding. (The automatic generator embeds its own crops: crop layer 0 is the whole image,
    crop layer 1 four overlapping crops, each at the encoder's input size.) With
    ``embedding_cache`` (a directory), embeddings are read from and written to it, in every
    mode; ``self.cache`` counts its ``hits`` and ``misses``, and inside ``self.cache.off()``
    every image is embedded afresh. Without it, ``self.cache`` is None.
    """

    def __init__(
        self,
        sam: Sam,
        *,
        k_points: int = 3,
        box_jitter: int = 0,
        seed: int = 0,
        auto: AutoMaskConfig | None = None,
        embedding_cache: str | Path | None = None,
    ):
        if k_points < 1:
            raise SegbenchError(f"k_points: must be at least 1, got {k_points}")
        if box_jitter < 0:
            raise SegbenchError(f"box_jitter: must be >= 0 pixels, got {box_jitter}")
        self.sam = sam
        self.cache = (
            None if embedding_cache is None else EmbeddingCache(embedding_cache, sam.image_encoder)
        )
        self.predictor = self._new_predictor()
        self.k_points, self.box_jitter, self.seed = k_points, box_jitter, seed
        self.auto = auto
        self._rgb: np.ndarray | None = None
        self._id = ""

    def set_image(self, rgb: np.ndarray, *, image_id: str = "") -> None:
        """Embed one (H, W, 3) uint8 RGB image of any size (see :func:`to_sam_rgb`)."""
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or 0 in rgb.shape:
            raise SegbenchError(
                f"image {image_id or '(unnamed)'}: SAM takes an (H, W, 3) uint8 RGB image, got "
                f"{rgb.shape} {rgb.dtype}; convert a float image in [0, 1] with to_sam_rgb"
            )
        self.predictor.set_image(rgb)
        self._rgb, self._id = rgb, image_id

    @torch.inference_mode()
    def predict(self, mode: str, reference: np.ndarray | None = None) -> np.ndarray:
        """The (H, W) bool mask of ``mode`` for the current image.

        Oracle modes need ``reference``, the (H, W) ground-truth mask the prompts come from; an
        empty reference gives no prompt and so an empty prediction.
        """
        if self._rgb is None:
            raise RuntimeError("call set_image first")
        if mode not in PROMPT_MODES:
            raise SegbenchError(
                f"unknown SAM prompt mode {mode!r}; valid: {', '.join(PROMPT_MODES)}"
            )
        if mode == "auto":
            return self._automatic()
        if reference is None:
            raise SegbenchError(
                f"SAM prompt mode {mode!r} takes its prompts from the reference mask, and image "
                f"{self._id or '(unnamed)'} has none; use mode 'auto' for images without masks"
            )
        if reference.shape != self._rgb.shape[:2]:
            raise SegbenchError(
                f"image {self._id or '(unnamed)'}: reference mask {reference.shape} and image "
                f"{self._rgb.shape[:2]} differ in size"
            )
        parts = components(reference)
        out = np.zeros(reference.shape, dtype=bool)
        # Seeded per image, so a jittered box is the same in every run and every mode order.
        rng = np.random.default_rng([self.seed, zlib.crc32(self._id.encode())])
        for start in range(0, len(parts), _CHUNK):
            out |= self._prompted(mode, parts[start : start + _CHUNK], rng)
        return out

    @torch.inference_mode()
    def predict_points_curve(self, reference: np.ndarray) -> list[np.ndarray]:
        """The (H, W) bool masks of ``points`` mode with 1, 2, ..., ``k_points`` points per
        component, for the current image, from one embedding.

        The points are :func:`interior_points`' greedy sequence, so the j-point prompt is the
        first j of the k-point one and the last mask is exactly :meth:`predict` ``("points")``.
        """
        if self._rgb is None:
            raise RuntimeError("call set_image first")
        if reference.shape != self._rgb.shape[:2]:
            raise SegbenchError(
                f"image {self._id or '(unnamed)'}: reference mask {reference.shape} and image "
                f"{self._rgb.shape[:2]} differ in size"
            )
        parts = components(reference)
        out = [np.zeros(reference.shape, dtype=bool) for _ in range(self.k_points)]
        for start in range(0, len(parts), _CHUNK):
            chunk = parts[start : start + _CHUNK]
            for j in range(1, self.k_points + 1):
                out[j - 1] |= self._prompted("points", chunk, None, k=j)
        return out

    def _prompted(self, mode: str, parts: list[np.ndarray], rng, *, k: int | None = None):
        size = self._rgb.shape[:2]
        transform, device = self.predictor.transform, self.predictor.device
        coords = labels = boxes = None
        if mode == "box":
            raw = np.stack([box(p, jitter=self.box_jitter, rng=rng) for p in parts])
            boxes = transform.apply_boxes_torch(torch.as_tensor(raw, device=device), size)
        else:
            k = 1 if mode == "point" else k or self.k_points
            # A component smaller than k pixels gives fewer points; repeating its last point
            # keeps the batch rectangular and adds no new information.
            pts = [interior_points(p, k) for p in parts]
            pts = np.stack([np.concatenate([q, np.repeat(q[-1:], k - len(q), 0)]) for q in pts])
            coords = transform.apply_coords_torch(torch.as_tensor(pts, device=device), size)
            labels = torch.ones(pts.shape[:2], dtype=torch.int, device=device)
        multimask = mode == "point"
        masks, iou, _ = self.predictor.predict_torch(
            coords, labels, boxes=boxes, multimask_output=multimask
        )
        if multimask:  # keep each prompt's candidate with the highest predicted IoU
            best = iou.argmax(dim=1)
            masks = masks[torch.arange(len(masks)), best][:, None]
        return masks[:, 0].any(dim=0).cpu().numpy()

    def _new_predictor(self) -> SamPredictor:
        return (
            SamPredictor(self.sam) if self.cache is None else CachedPredictor(self.sam, self.cache)
        )

    def _automatic(self) -> np.ndarray:
        if self.auto is None:
            raise SegbenchError("SAM prompt mode 'auto' needs its `auto` settings")
        generator = _MaskGenerator(self.sam, **self.auto.model_dump())
        # Its own predictor, as the generator resets it after each crop.
        generator.predictor = self._new_predictor()
        out = np.zeros(self._rgb.shape[:2], dtype=bool)
        for record in generator.generate(self._rgb):
            out |= record["segmentation"]
        return out


class _MaskGenerator(SamAutomaticMaskGenerator):
    """segment_anything's generator, except that a crop where no mask survives the thresholds
    gives an empty result instead of an IndexError: it records such a crop's boxes as a (0,)
    tensor, which the NMS across crops cannot index (seen with weak or random weights)."""

    def _process_crop(self, image, crop_box, crop_layer_idx, orig_size):
        data = super()._process_crop(image, crop_box, crop_layer_idx, orig_size)
        data["crop_boxes"] = data["crop_boxes"].reshape(-1, 4)
        return data
