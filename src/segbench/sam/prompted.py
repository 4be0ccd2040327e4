"""Zero-shot SAM as a pipeline model: one prompt mode, used as it comes, nothing trained.

:class:`PromptedSam` is what the registry builds for ``model: sam_zero_shot``. The predictor
hands it each full test image at the working resolution (and, for the oracle modes, its
reference mask), and it returns SAM's mask. Embeddings go through the on-disk cache, so the
``sam_point``, ``sam_box``, ... stages, each its own process, embed every test image once
between them.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from segment_anything.modeling import Sam

from segbench.config.models import SamZeroShotEntry
from segbench.errors import SegbenchError
from segbench.sam.cache import EmbeddingCache
from segbench.sam.zero_shot import PROMPT_MODES, ZeroShot, to_sam_rgb


class PromptedSam:
    """(H, W) float image in [0, 1] (+ (H, W) reference for oracle modes) -> (H, W) bool mask."""

    def __init__(self, sam: Sam, entry: SamZeroShotEntry):
        self.sam, self.prompt = sam.eval(), entry.prompt
        self.oracle = PROMPT_MODES[entry.prompt]
        self._settings = dict(
            k_points=entry.k_points or 1,
            box_jitter=entry.box_jitter or 0,
            seed=entry.seed,
            auto=entry.auto,
            embedding_cache=entry.embedding_cache,
        )
        self.points_curve = entry.points_curve
        self._zero_shot: ZeroShot | None = None
        self._image_id: str | None = None

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """SAM's parameters (all frozen: nothing is trained), for the cost figures."""
        for p in self.sam.parameters():
            p.requires_grad_(False)
            yield p

    @property
    def cache(self) -> EmbeddingCache | None:
        """The embedding cache this model reads (None without ``embedding_cache``), so that
        :func:`~segbench.sam.cache.caches_in` finds it; made with the zero-shot predictor."""
        return self._predictor().cache

    def to(self, device: torch.device) -> PromptedSam:
        self.sam.to(device)
        self._zero_shot = None  # its predictor holds the device it was made on
        self._image_id = None
        return self

    def predict(
        self, unit: np.ndarray, reference: np.ndarray | None = None, *, image_id: str = ""
    ) -> np.ndarray:
        """SAM's (H, W) bool mask for one (H, W) or (H, W, 3) float image in [0, 1] (see
        :func:`segbench.data.normalize.to_unit`), shown to SAM in colour (grey replicated).

        ``reference`` is the (H, W) ground-truth mask the oracle modes take their prompts from
        (ignored by ``auto``); ``image_id`` seeds the box jitter per image.
        """
        self._set_image(unit, image_id)
        ref = None if reference is None or not self.oracle else np.asarray(reference) > 0
        return self._zero_shot.predict(self.prompt, ref)

    def predict_points_curve(
        self, unit: np.ndarray, reference: np.ndarray, *, image_id: str = ""
    ) -> list[np.ndarray]:
        """The (H, W) bool masks with 1 .. k_points points per object (``points_curve``
        entries). The image just given to :meth:`predict` under the same ``image_id`` (not
        empty) is not embedded again."""
        if self.prompt != "points":
            raise SegbenchError(f"points curve: only prompt: points has one, not {self.prompt}")
        if not (image_id and image_id == self._image_id):
            self._set_image(unit, image_id)
        return self._zero_shot.predict_points_curve(np.asarray(reference) > 0)

    def _predictor(self) -> ZeroShot:
        # Made at first use, on the device the model is on by then (see to()).
        if self._zero_shot is None:
            self._zero_shot = ZeroShot(self.sam, **self._settings)
        return self._zero_shot

    def _set_image(self, unit: np.ndarray, image_id: str) -> None:
        zero_shot = self._predictor()
        self._image_id = None  # until the new image is set
        zero_shot.set_image(to_sam_rgb(unit), image_id=image_id)
        self._image_id = image_id
