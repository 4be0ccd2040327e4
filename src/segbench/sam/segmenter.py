"""SAM's mask decoder fine-tuned as a segmenter: promptless (as SAMed does) or box-prompted.

:class:`SamSegmenter` has the input and output convention of every other segbench network, so the
training loop, sliding-window evaluation and ``segbench predict`` use it unchanged: (N, C, H, W)
images standardised by :func:`segbench.data.normalize.standardize` (C = 1 or 3) in, (N, 1, H, W)
logits out for two classes (sigmoid), (N, K, H, W) for K > 2 classes (softmax). Inside, each tile
is mapped back to SAM's input (RGB in [0, 255]: a grey tile replicated, an RGB tile as it is;
resized to the encoder's input size, normalised with SAM's pixel mean and std), embedded, and
decoded either

- ``prompt="none"``: with no prompt (no points, no box, the prompt encoder's "no mask"
  embedding), the decoder acting as a semantic head: for two classes its single-mask output,
  for K > 2 one mask token per class (SAMed's construction, see
  :func:`segbench.sam.build.multiclass_decoder`), every token's mask a class's logits; or
- ``prompt="box"``: with one box per connected component of the tile's reference mask (oracle
  prompts, :mod:`segbench.sam.box_head`), the per-box masks united by an elementwise max.

It is *guided*: the training loop and the predictor pass the reference mask as a second
argument when they have one ((N, 1, H, W) {0, 1} for two classes, (N, H, W) int64 class indices
with 255 ignored for K > 2); it supplies the box prompts and the target of SAM's IoU-prediction
loss, left in :attr:`SamSegmenter.aux_loss` after each forward.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch import nn

from segbench.classes import IGNORE
from segbench.data.normalize import IMAGE_MEAN, IMAGE_STD
from segbench.errors import SegbenchError
from segbench.sam.box_head import mask_iou, reference_prompts, to_sam_frame
from segbench.sam.build import multiclass_decoder
from segbench.sam.lora import lora_modules, merge_lora

PROMPTS = ("none", "box")
# sigmoid(-20) ~ 2e-9: surely background, yet finite, so focal, Dice and BCE stay finite.
EMPTY_LOGIT = -20.0
# The key under which trained_state_dict records the class count of a K > 2 model. A state
# without it is a two-class one, which keeps binary states exactly as they were saved before.
CLASSES_KEY = "num_classes"


class SamSegmenter(nn.Module):
    """SAM's image encoder + mask decoder: (N, C, H, W) standardised [+ reference] -> logits,
    (N, 1, H, W) for ``num_classes`` 2, (N, ``num_classes``, H, W) above.

    ``train_encoder`` False freezes the image encoder (decoder-only fine-tuning; LoRA factors
    added later by :func:`segbench.sam.lora.apply_lora` stay trainable). The prompt encoder is
    always frozen. The IoU-prediction head trains iff ``iou_loss_weight`` > 0, the weight of the
    SAM paper's MSE between predicted and actual IoU. ``box_jitter`` (tile pixels) moves each
    training box's sides, drawn from ``seed`` and a count of training forwards; ``max_prompts``
    caps the boxes per tile (the largest components are kept). ``num_classes`` > 2 (promptless
    only) replaces the decoder by a copy with one mask token per class.

    With :meth:`use_cache`, embeddings of tiles seen before are read from disk instead of
    recomputed (decoder-only fine-tuning: every epoch after the first skips the encoder).
    """

    guided = True  # the training loop and predictor hand forward() the reference mask

    def __init__(
        self,
        sam: Sam,
        *,
        train_encoder: bool = False,
        prompt: str = "none",
        box_jitter: int = 0,
        iou_loss_weight: float = 1.0,
        max_prompts: int = 32,
        seed: int = 0,
        num_classes: int = 2,
    ):
        super().__init__()
        if prompt not in PROMPTS:
            raise SegbenchError(f"prompt: unknown {prompt!r}; valid: {', '.join(PROMPTS)}")
        if box_jitter < 0 or max_prompts < 1 or iou_loss_weight < 0:
            raise SegbenchError(
                "box_jitter and iou_loss_weight must be >= 0 and max_prompts >= 1; got "
                f"{box_jitter}, {iou_loss_weight}, {max_prompts}"
            )
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise SegbenchError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if num_classes > 2 and prompt != "none":
            raise SegbenchError(
                f"the box-prompted SAM decoder segments one class; {num_classes} classes need "
                "the promptless one (prompt: none)"
            )
        if num_classes > 2:
            sam.mask_decoder = multiclass_decoder(sam.mask_decoder, num_classes)
        self.sam, self.num_classes = sam, num_classes
        self.prompt, self.box_jitter, self.max_prompts = prompt, box_jitter, max_prompts
        self.iou_loss_weight, self.seed = float(iou_loss_weight), seed
        self.cache = None  # an EmbeddingCache, see use_cache
        self._draws = 0  # training forwards so far: with seed, picks each call's box jitter
        self.aux_loss = torch.zeros(())
        sam.prompt_encoder.requires_grad_(False)
        sam.mask_decoder.iou_prediction_head.requires_grad_(self.iou_loss_weight > 0)
        if not train_encoder:
            sam.image_encoder.requires_grad_(False)

    def use_cache(self, root: str | Path) -> None:
        """Read and write image embeddings under ``root`` (:mod:`segbench.sam.cache`).

        Only for a frozen encoder: a trained one (LoRA, full fine-tuning) changes its
        embeddings at every step, so none could be reused.
        """
        from segbench.sam.cache import EmbeddingCache

        if any(p.requires_grad for p in self.sam.image_encoder.parameters()):
            raise ValueError("an embedding cache needs a frozen image encoder")
        self.cache = EmbeddingCache(root, self.sam.image_encoder)

    @property
    def image_size(self) -> int:
        return self.sam.image_encoder.img_size

    def to_sam_input(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised (N, C, H, W), C = 1 (grey) or 3 (RGB) -> SAM-normalised (N, 3, S, S),
        S the encoder input size. A grey tile is replicated to three equal channels; an RGB
        tile keeps its channels in R, G, B order.

        Tiles are square, so resizing to S x S keeps their aspect ratio (SAM's own transform
        resizes the longest side and pads; for a square input that is the same)."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise SegbenchError(
                f"SAM takes (N, 1, H, W) grey or (N, 3, H, W) RGB tiles, got {tuple(x.shape)}"
            )
        unit = x * IMAGE_STD + IMAGE_MEAN
        rgb = unit.expand(-1, 3, -1, -1) if unit.shape[1] == 1 else unit
        rgb = F.interpolate(rgb, size=(self.image_size,) * 2, mode="bilinear", align_corners=False)
        return (rgb * 255.0 - self.sam.pixel_mean) / self.sam.pixel_std

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) standardised -> (N, D, g, g) image embeddings (g = S / 16)."""
        return self.sam.image_encoder(self.to_sam_input(x))

    def decode(
        self, embedding: torch.Tensor, boxes: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One image's (D, g, g) embedding + (P, 4) XYXY boxes in the encoder input's pixels
        (None: no prompt, P = 1) -> (P, K, S/4, S/4) low-resolution mask logits, (P, K)
        predicted IoUs; K = 1 for two classes, else ``num_classes`` (every mask token's
        output). The decoder pairs one image with a batch of prompts, so a batch of images is
        decoded one image at a time."""
        pe = self.sam.prompt_encoder
        if boxes is None:
            sparse = embedding.new_zeros((1, 0, pe.embed_dim))
            dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
                1, -1, *embedding.shape[-2:]
            )
        else:
            sparse, dense = pe(points=None, boxes=boxes, masks=None)
        inputs = {
            "image_embeddings": embedding[None],
            "image_pe": pe.get_dense_pe(),
            "sparse_prompt_embeddings": sparse,
            "dense_prompt_embeddings": dense,
        }
        if self.num_classes > 2:
            # forward() would drop token 0 or keep only it; every token is a class here.
            return self.sam.mask_decoder.predict_masks(**inputs)
        return self.sam.mask_decoder(**inputs, multimask_output=False)

    def prompt_boxes(self, guide: torch.Tensor) -> list[np.ndarray]:
        """The box prompts drawn from an (N, 1, H, W) reference: per tile a (P, 4) float32 XYXY
        array in tile pixels. Jittered in training mode only; each call draws anew."""
        return [boxes for _, boxes in self._prompts(guide)]

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C, H, W) standardised tiles [+ reference] -> (N, K, H, W) logits, K = 1 for two
        classes (reference (N, 1, H, W) in {0, 1}), else ``num_classes`` (reference (N, H, W)
        int64 class indices, :data:`~segbench.classes.IGNORE` for an ignored pixel).

        With a reference, also sets :attr:`aux_loss` (a scalar: ``iou_loss_weight`` x MSE of
        predicted vs actual IoU; for K > 2 of every class's mask, the pixels where the
        prediction's argmax is the class, against the class's pixels in the reference, ignored
        pixels left out); without one, or with nothing prompted, it is 0."""
        if self.prompt == "box" and guide is None:
            raise SegbenchError(
                "the box-prompted SAM (prompt: box) takes its prompts from reference masks "
                "(oracle prompts), so it can only run on images that have masks; use a "
                "promptless SAM (prompt: none) to segment unlabelled images"
            )
        emb = self.embed(x) if self.cache is None else self.cache.embed(x, self.embed)
        size = tuple(x.shape[-2:])
        if self.prompt == "none":
            low, predicted = zip(*(self.decode(e) for e in emb), strict=True)
            logits = _upsample(torch.cat(low), size)
            predicted = torch.cat(predicted)
            if guide is None:
                actual = None
            elif self.num_classes == 2:
                # The decoder's single output mask, scored against the whole reference.
                actual = mask_iou(logits.detach() > 0, guide > 0.5)
            else:
                actual = class_iou(logits.detach().argmax(1), guide, self.num_classes)
        else:
            logits, predicted, actual = self._box_forward(emb, guide, size)
        self.aux_loss = self._iou_loss(predicted, actual, x)
        return logits

    def _box_forward(self, emb: torch.Tensor, guide: torch.Tensor, size: tuple[int, int]):
        """(N, 1, H, W) logits, (sum P, 1) predicted and (sum P,) actual per-box IoUs."""
        # A tile without a component gets no prompt and stays EMPTY_LOGIT; tiles with boxes
        # are written in, which keeps the autograd graph through their decoder outputs.
        logits = emb.new_full((len(emb), 1, *size), EMPTY_LOGIT, dtype=torch.float32)
        predicted, actual = [], []
        for i, (parts, boxes) in enumerate(self._prompts(guide)):
            if not len(boxes):
                continue
            sam_boxes = to_sam_frame(torch.from_numpy(boxes), size, self.image_size)
            low, iou = self.decode(emb[i], sam_boxes.to(emb.device))
            masks = _upsample(low, size)  # (P, 1, H, W)
            logits[i] = masks.amax(dim=0).to(logits.dtype)  # the union of the boxes' masks
            target = torch.from_numpy(parts).to(emb.device)
            # Per box, against its own component: the SAM paper's per-mask IoU target.
            actual.append(mask_iou(masks.detach()[:, 0] > 0, target))
            predicted.append(iou)
        if not predicted:
            # Nothing prompted in the whole batch: a zero-gradient link to every trained weight,
            # so that backward() still works (and DDP sees no parameter go unused).
            trained = [p.sum() for p in self.parameters() if p.requires_grad]
            logits = logits + 0.0 * sum(trained, logits.new_zeros(()))
            return logits, emb.new_zeros((0, 1)), emb.new_zeros(0)
        return logits, torch.cat(predicted), torch.cat(actual)

    def _prompts(self, guide: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
        # One generator per call, from the seed and a count of training calls: reproducible runs,
        # fresh jitter at every step; evaluation boxes are exact.
        jitter = self.box_jitter if self.training else 0
        rng = np.random.default_rng((self.seed, self._draws))
        self._draws += int(self.training)
        refs = guide[:, 0].detach().cpu().numpy() > 0.5
        return [
            reference_prompts(ref, max_prompts=self.max_prompts, jitter=jitter, rng=rng)
            for ref in refs
        ]

    def _iou_loss(self, predicted, actual, like: torch.Tensor) -> torch.Tensor:
        if actual is None or self.iou_loss_weight == 0 or actual.numel() == 0:
            return like.new_zeros((), dtype=torch.float32)
        mse = F.mse_loss(predicted.float().flatten(), actual.float().flatten())
        return self.iou_loss_weight * mse

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """Detached copies of the ``state_dict()`` entries that are trainable parameters: the
        mask decoder, the IoU head when it trains, LoRA factors, a trained encoder. The frozen
        base weights are not repeated (rebuild them from the same checkpoint or seed). For
        more than two classes, also :data:`CLASSES_KEY`: the class count, a 0-d int64 tensor
        (a two-class state has no such key, as before classes were counted)."""
        trainable = self._trainable_names()
        state = {k: v.detach().clone() for k, v in self.state_dict().items() if k in trainable}
        if self.num_classes > 2:
            state[CLASSES_KEY] = torch.tensor(self.num_classes, dtype=torch.int64)
        return state

    def load_trained_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load :meth:`trained_state_dict`'s output into a model built the same way; any other
        key set or shape, or another class count, is a :class:`SegbenchError`."""
        state = dict(state)
        saved = state.pop(CLASSES_KEY, None)
        saved = 2 if saved is None else int(saved)
        if saved != self.num_classes:
            raise SegbenchError(
                f"these SAM weights were trained for {saved} classes, asked for "
                f"{self.num_classes}; train the model on data with {self.num_classes} classes "
                f"or predict with {saved}"
            )
        hint = (
            "these SAM weights were saved from a differently configured model (another "
            "variant, image_size, prompt, iou_loss_weight, train_encoder or LoRA settings)"
        )
        trainable = self._trainable_names()
        unknown, missing = sorted(set(state) - trainable), sorted(trainable - set(state))
        if unknown or missing:
            raise SegbenchError(f"{hint}: unknown keys {unknown[:3]}, missing keys {missing[:3]}")
        own = self.state_dict()
        shapes = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
        if shapes:
            raise SegbenchError(f"{hint}: other shapes for {shapes[:3]}")
        if any(bool(m.merged) for m in lora_modules(self.sam).values()):
            # The merged qkv weights already hold the old update; new factors would be ignored.
            raise SegbenchError("load SAM weights before prepare_for_inference(), not after")
        self.load_state_dict(state, strict=False)

    def prepare_for_inference(self) -> SamSegmenter:
        """Merge LoRA adapters (if any) into the encoder's weights: no added latency."""
        merge_lora(self.sam)
        return self

    def _trainable_names(self) -> set[str]:
        return {n for n, p in self.named_parameters(remove_duplicate=False) if p.requires_grad}


def class_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """IoU of every class between (N, H, W) predicted and reference class indices -> (N, K).

    ``target`` may also be (N, 1, H, W); its :data:`~segbench.classes.IGNORE` pixels count for
    neither mask. A class absent from both has IoU 1, as in :func:`mask_iou`."""
    if target.ndim == 4:
        target = target[:, 0]
    target = target.to(device=pred.device, dtype=torch.long)
    classes = torch.arange(num_classes, device=pred.device).view(1, -1, 1, 1)
    valid = (target != IGNORE)[:, None]
    ious = mask_iou(
        ((pred[:, None] == classes) & valid).flatten(0, 1),
        (target[:, None] == classes).flatten(0, 1),  # IGNORE is no class index
    )
    return ious.view(len(pred), num_classes)


def _upsample(low: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(low, size=size, mode="bilinear", align_corners=False)
