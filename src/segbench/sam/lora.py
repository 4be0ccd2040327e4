"""LoRA on SAM's image encoder: low-rank updates of the query/key/value projections.

SAM's attention computes q, k and v with one fused ``qkv`` Linear (width -> 3 x width). peft can
wrap that Linear, but only as a whole: it cannot give q and v their own adapters and leave k
alone, which is what the LoRA-for-SAM studies (SAMed, the reference study) do. :class:`LoRAQKV`
is that small wrapper: for each targeted projection p, ``p(x) + (alpha / r) * B_p(A_p(drop(x)))``
with A (r x width) Kaiming-initialised and B (width x r) zero-initialised, so an adapted model
starts out identical to its base.

``apply_lora`` freezes the encoder and inserts the adapters (what was trained, factors and
decoder, is saved by :meth:`segbench.sam.segmenter.SamSegmenter.trained_state_dict`);
``merge_lora`` folds the updates into the ``qkv`` weights, after which the model is a plain SAM
again (no extra latency at inference).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable

import torch
from torch import nn

from segbench.errors import SegbenchError

_SLOTS = {"q": 0, "k": 1, "v": 2}  # position of each projection in the fused qkv output


class LoRAQKV(nn.Module):
    """A fused ``qkv`` Linear plus rank-``rank`` updates of the projections in ``targets``."""

    def __init__(
        self,
        qkv: nn.Linear,
        *,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        targets: Iterable[str] = ("q", "v"),
    ):
        super().__init__()
        self.qkv = qkv
        self.width = qkv.in_features
        self.targets = tuple(targets)
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_a = nn.ParameterDict()
        self.lora_b = nn.ParameterDict()
        for name in self.targets:
            a = torch.empty(rank, self.width)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # as peft and the LoRA paper's code
            self.lora_a[name] = nn.Parameter(a)
            self.lora_b[name] = nn.Parameter(torch.zeros(self.width, rank))
        # A buffer, not a plain attribute: a state dict saved after merging (an ensemble holding
        # a merged member) must reload as merged, or the updates would be added twice.
        self.register_buffer("merged", torch.tensor(False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.qkv(x)
        if self.merged:
            return out
        h = self.dropout(x)
        deltas = [torch.zeros_like(out[..., : self.width])] * 3
        for name in self.targets:
            a, b = self.lora_a[name], self.lora_b[name]
            deltas[_SLOTS[name]] = (h @ a.t() @ b.t()) * self.scaling
        return out + torch.cat(deltas, dim=-1)

    @torch.no_grad()
    def merge(self) -> None:
        """Add the updates to the ``qkv`` weight once; the adapters are then skipped."""
        if self.merged:
            return
        for name in self.targets:
            rows = slice(_SLOTS[name] * self.width, (_SLOTS[name] + 1) * self.width)
            delta = self.lora_b[name] @ self.lora_a[name] * self.scaling
            self.qkv.weight[rows] += delta.to(self.qkv.weight.dtype)
        self.merged.fill_(True)


def apply_lora(
    sam: nn.Module,
    *,
    rank: int,
    alpha: float | None = None,
    dropout: float = 0.0,
    targets: Iterable[str] = ("q", "v"),
    blocks: Iterable[int] | None = None,
) -> list[int]:
    """Freeze ``sam.image_encoder`` and put LoRA on the attention of ``blocks`` (None = all).

    Returns the adapted block indexes. ``alpha`` defaults to ``rank`` (scaling 1). The mask
    decoder is left as it is (trainable); the prompt encoder is the caller's choice. A rank at
    or above the projection width is allowed but warned about: such an update is no longer
    low-rank (ViT-B's width is 768), and costs more than training the projection itself.
    """
    targets = tuple(targets)
    if rank < 1:
        raise SegbenchError(f"lora.rank: must be at least 1, got {rank}")
    unknown = sorted(set(targets) - set(_SLOTS))
    if not targets or unknown:
        raise SegbenchError(f"lora.targets: choose from q, k, v (e.g. [q, v]); got {list(targets)}")
    encoder = sam.image_encoder
    n_blocks = len(encoder.blocks)
    chosen = list(range(n_blocks)) if blocks is None else sorted(set(blocks))
    bad = [b for b in chosen if not 0 <= b < n_blocks]
    if bad or not chosen:
        raise SegbenchError(
            f"lora.blocks: the image encoder has blocks 0..{n_blocks - 1}; got {bad or chosen}"
        )
    width = encoder.blocks[0].attn.qkv.in_features
    if rank >= width:
        warnings.warn(
            f"lora.rank {rank} is at or above the projection width {width}: the update is no "
            "longer low-rank and trains more parameters than the projection has",
            stacklevel=2,
        )
    for p in encoder.parameters():
        p.requires_grad_(False)
    for i in chosen:
        attn = encoder.blocks[i].attn
        attn.qkv = LoRAQKV(
            attn.qkv, rank=rank, alpha=alpha or rank, dropout=dropout, targets=targets
        )
    return chosen


def lora_modules(sam: nn.Module) -> dict[str, LoRAQKV]:
    return {n: m for n, m in sam.named_modules() if isinstance(m, LoRAQKV)}


def merge_lora(sam: nn.Module) -> int:
    """Fold every adapter into its ``qkv`` weight; returns how many were merged."""
    modules = lora_modules(sam)
    for m in modules.values():
        m.merge()
    return len(modules)
