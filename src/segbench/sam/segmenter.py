"""SAM as a promptless segmenter: the mask decoder used as a semantic head (as SAMed does).

:class:`SamSegmenter` has the input and output convention of every other segbench network, so the
training loop, sliding-window evaluation and ``segbench predict`` use it unchanged: (N, C, H, W)
images standardised by :func:`segbench.data.normalize.standardize` (C = 1 or 3) in, (N, 1, H, W)
logits out. Inside, each tile is mapped back to SAM's input (RGB in [0, 255], resized to the
encoder's input size, normalised with SAM's pixel mean and std), embedded, and decoded with no
prompt: no points, no box, and the prompt encoder's "no mask" embedding.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch import nn

from segbench.data.normalize import IMAGE_MEAN, IMAGE_STD


class SamSegmenter(nn.Module):
    """SAM's image encoder + mask decoder, (N, C, H, W) standardised -> (N, 1, H, W) logits.

    With :meth:`use_cache`, embeddings of tiles seen before are read from disk instead of
    recomputed (decoder-only fine-tuning: every epoch after the first skips the encoder).

    ``train_encoder`` False freezes the image encoder (decoder-only fine-tuning; LoRA factors
    added later by :func:`segbench.sam.lora.apply_lora` stay trainable). The prompt encoder is
    always frozen: with no prompt, only its fixed "no mask" embedding and positional encoding
    are used. The IoU head is frozen too: a promptless semantic head has no IoU to predict.
    """

    def __init__(self, sam: Sam, *, train_encoder: bool = False):
        super().__init__()
        self.sam = sam
        self.cache = None  # an EmbeddingCache, see use_cache
        frozen = [sam.prompt_encoder, sam.mask_decoder.iou_prediction_head]
        if not train_encoder:
            frozen.append(sam.image_encoder)
        for module in frozen:
            for p in module.parameters():
                p.requires_grad_(False)

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
        """Standardised (N, C, H, W) -> SAM-normalised (N, 3, S, S), S the encoder input size.

        Tiles are square, so resizing to S x S keeps their aspect ratio (SAM's own transform
        resizes the longest side and pads; for a square input that is the same)."""
        unit = x * IMAGE_STD + IMAGE_MEAN
        rgb = unit.expand(-1, 3, -1, -1) if unit.shape[1] == 1 else unit[:, :3]
        rgb = F.interpolate(rgb, size=(self.image_size,) * 2, mode="bilinear", align_corners=False)
        return (rgb * 255.0 - self.sam.pixel_mean) / self.sam.pixel_std

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) standardised -> (N, D, g, g) image embeddings (g = S / 16)."""
        return self.sam.image_encoder(self.to_sam_input(x))

    def decode(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(N, D, g, g) embeddings -> (N, 1, S/4, S/4) low-resolution mask logits."""
        pe = self.sam.prompt_encoder
        sparse = embeddings.new_zeros((1, 0, pe.embed_dim))
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, *embeddings.shape[-2:])
        dense_pe = pe.get_dense_pe()
        # The mask decoder pairs one image with a batch of prompts (it repeats the embedding per
        # prompt), so a batch of images is decoded one image at a time.
        out = [
            self.sam.mask_decoder(
                image_embeddings=emb[None],
                image_pe=dense_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )[0]
            for emb in embeddings
        ]
        return torch.cat(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb = self.embed(x) if self.cache is None else self.cache.embed(x, self.embed)
        low = self.decode(emb)
        return F.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=False)
