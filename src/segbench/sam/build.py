"""Build a Segment Anything model by variant name, at 1024 px or smaller, from a checked file.

``build_sam("vit_b", image_size=512, checkpoint="sam_vit_b_01ec64.pth")`` assembles
``segment_anything``'s own classes with the numbers of its ``build_sam_vit_b`` (or of ``tiny``,
a shrunk copy for tests), loads the checkpoint with torch's weights-only unpickler, and resizes
its position embeddings from the native 64 x 64 token grid to ``image_size / 16`` per side.
:func:`multiclass_decoder` gives a built model's mask decoder one mask token per class.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)
from torch import nn

from segbench.errors import SegbenchError
from segbench.sam.checkpoint import load_checkpoint

# segment_anything's normalisation of RGB uint8 pixels in [0, 255] (ImageNet mean and std).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

_POS_EMBED = "image_encoder.pos_embed"
_PATCH_WEIGHT = "image_encoder.patch_embed.proj.weight"
_REL_POS = re.compile(r"image_encoder\.blocks\.(\d+)\.attn\.rel_pos_([hw])")
_BLOCK = re.compile(r"image_encoder\.blocks\.(\d+)\.")


@dataclass(frozen=True)
class SamVariant:
    """The numbers that tell one SAM apart from another; defaults are SAM's (all variants)."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    patch_size: int = 16
    window_size: int = 14
    native_image_size: int = 1024
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256


# The three published ones are segment_anything.build_sam's numbers; `tiny` keeps every class and
# the window of 14 but is small enough to run a 512 px forward pass on a CPU in a test.
SAM_VARIANTS: dict[str, SamVariant] = {
    "vit_b": SamVariant(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": SamVariant(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamVariant(1280, 32, 16, (7, 15, 23, 31)),
    "tiny": SamVariant(
        64,
        2,
        2,
        (1,),
        prompt_embed_dim=32,
        decoder_mlp_dim=64,
        decoder_num_heads=2,
        iou_head_hidden_dim=32,
    ),
}


def get_variant(name: str) -> SamVariant:
    """The registered :class:`SamVariant` called ``name``, or an error listing the valid names."""
    try:
        return SAM_VARIANTS[name]
    except KeyError:
        raise SegbenchError(
            f"unknown SAM variant {name!r}; valid variants: {', '.join(SAM_VARIANTS)}"
        ) from None


def build_sam(
    variant: str,
    *,
    image_size: int = 1024,
    checkpoint: str | Path | None = None,
    sha256: str | None = None,
    init_seed: int | None = None,
) -> Sam:
    """A ``segment_anything`` :class:`Sam` for square ``image_size`` x ``image_size`` inputs.

    The model takes ``(B, 3, image_size, image_size)`` float images (normalised with
    ``sam.preprocess``) and its image encoder returns ``(B, prompt_embed_dim, S, S)`` with
    ``S = image_size / 16``. Without ``checkpoint`` the weights are random: drawn from
    ``init_seed`` alone when given (so a trained decoder saved without its frozen random
    encoder gets the same encoder back at prediction), else from torch's global generator.
    With one, the file (checked against ``sha256`` if given) must be a checkpoint of
    ``variant``, and it is resized to ``image_size`` before a strict load.
    """
    spec = get_variant(variant)
    check_image_size(image_size, native=spec.native_image_size, patch_size=spec.patch_size)
    state = None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, sha256=sha256, variant=variant)
        try:
            found = checkpoint_variant(state)
        except SegbenchError as exc:
            raise SegbenchError(f"{checkpoint}: {exc}") from None
        # Checked before building: a vit_h would allocate 2.5 GB only to fail its load.
        if found != variant:
            raise SegbenchError(
                f"{checkpoint} is a {found} checkpoint but the variant asked for is {variant}; "
                f"set the variant to {found} or use a {variant} checkpoint"
            )
        state = adapt_to_image_size(state, image_size, patch_size=spec.patch_size)
    elif sha256 is not None:
        raise SegbenchError("sha256 is set but checkpoint is not; set both or neither")
    if state is None and init_seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            sam = _assemble(spec, image_size)
    else:
        sam = _assemble(spec, image_size)
    if state is not None:
        try:
            sam.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            detail = " ".join(str(exc).split())
            raise SegbenchError(
                f"{checkpoint} does not fit a {variant} SAM: {detail[:400]}; "
                "it is not a segment_anything checkpoint (or was saved from a modified model)"
            ) from None
    return sam


def _assemble(spec: SamVariant, image_size: int) -> Sam:
    # The same construction as segment_anything.build_sam._build_sam, with its numbers in `spec`
    # and the image size free.
    grid = image_size // spec.patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=spec.encoder_depth,
            embed_dim=spec.encoder_embed_dim,
            img_size=image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=spec.encoder_num_heads,
            patch_size=spec.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=spec.encoder_global_attn_indexes,
            window_size=spec.window_size,
            out_chans=spec.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=spec.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=spec.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=spec.decoder_depth,
                embedding_dim=spec.prompt_embed_dim,
                mlp_dim=spec.decoder_mlp_dim,
                num_heads=spec.decoder_num_heads,
            ),
            transformer_dim=spec.prompt_embed_dim,
            iou_head_depth=spec.iou_head_depth,
            iou_head_hidden_dim=spec.iou_head_hidden_dim,
        ),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    )
    sam.eval()  # as segment_anything's builders leave it; SAM has no dropout or batch norm
    return sam


def class_token_sources(num_classes: int, *, num_mask_tokens: int = 4) -> list[int]:
    """For each of ``num_classes`` classes, the mask token of SAM's decoder it starts from.

    Class 0 (background) takes token 0, the decoder's single-mask output; classes 1, 2, ...
    cycle through the multimask tokens 1 .. ``num_mask_tokens`` - 1 (SAM's whole / part /
    subpart masks): ``[0, 1, 2, 3, 1, 2, ...]``. Classes that share a source token start out
    identical; their different targets tell them apart from the first gradient step.
    """
    if num_mask_tokens < 2:
        raise SegbenchError(f"a decoder with {num_mask_tokens} mask token(s) has no multimask ones")
    return [0] + [1 + (c - 1) % (num_mask_tokens - 1) for c in range(1, num_classes)]


def multiclass_decoder(decoder: MaskDecoder, num_classes: int) -> MaskDecoder:
    """A copy of ``decoder`` with ``num_classes`` mask tokens: one per class, as SAMed does.

    The copy's mask tokens, output-hypernetwork MLPs and IoU-head output rows are copies of
    the ``decoder``'s, chosen by :func:`class_token_sources`, so fine-tuning starts from SAM's
    own decoder (a checkpoint's or a random one). SAMed instead leaves these three
    re-initialised at random when the class count differs from SAM's. The rest (transformer,
    upscaling, IoU token) is copied as it is. ``decoder.predict_masks`` of the copy then gives
    (B, ``num_classes``, h, w) logits and (B, ``num_classes``) predicted IoUs. No random
    numbers are drawn.
    """
    source = class_token_sources(num_classes, num_mask_tokens=decoder.num_mask_tokens)
    index = torch.tensor(source, device=decoder.mask_tokens.weight.device)
    new = copy.deepcopy(decoder)
    tokens = decoder.mask_tokens.weight
    new.mask_tokens = nn.Embedding.from_pretrained(
        tokens.detach()[index].clone(), freeze=not tokens.requires_grad
    )
    new.output_hypernetworks_mlps = nn.ModuleList(
        copy.deepcopy(decoder.output_hypernetworks_mlps[s]) for s in source
    )
    old_head, head = decoder.iou_prediction_head.layers[-1], new.iou_prediction_head.layers[-1]
    head.weight = nn.Parameter(
        old_head.weight.detach()[index].clone(), requires_grad=old_head.weight.requires_grad
    )
    head.bias = nn.Parameter(
        old_head.bias.detach()[index].clone(), requires_grad=old_head.bias.requires_grad
    )
    head.out_features = num_classes
    new.num_mask_tokens, new.num_multimask_outputs = num_classes, num_classes - 1
    return new


def check_image_size(image_size: int, *, native: int, patch_size: int = 16) -> None:
    """Raise unless ``image_size`` is a positive multiple of ``patch_size`` no larger than
    ``native`` (the checkpoint's own size, 1024 for SAM)."""
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, int)
        or image_size <= 0
        or image_size % patch_size
        or image_size > native
    ):
        raise SegbenchError(
            f"image_size {image_size!r} does not work: SAM needs a multiple of its patch size "
            f"{patch_size} from {patch_size} to {native} (its native size), e.g. {native} or "
            f"{native // 2}"
        )


def checkpoint_variant(state: dict[str, torch.Tensor]) -> str:
    """The registered variant whose image encoder has the state's embed dim and block count."""
    weight = state.get(_PATCH_WEIGHT)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4:
        raise SegbenchError(
            f"not a SAM state dict: it has no 4-d {_PATCH_WEIGHT}; use a segment_anything "
            "checkpoint (sam_vit_b/l/h_*.pth) or one saved from a segbench SAM"
        )
    embed_dim = weight.shape[0]
    depth = len({int(m.group(1)) for k in state if (m := _BLOCK.match(k))})
    for name, spec in SAM_VARIANTS.items():
        if (spec.encoder_embed_dim, spec.encoder_depth) == (embed_dim, depth):
            return name
    known = ", ".join(
        f"{n} ({s.encoder_embed_dim}, {s.encoder_depth})" for n, s in SAM_VARIANTS.items()
    )
    raise SegbenchError(
        f"SAM state dict of an unknown variant: embed dim {embed_dim} with {depth} encoder "
        f"blocks; the known (embed dim, blocks) are {known}"
    )


def adapt_to_image_size(
    state: dict[str, torch.Tensor], image_size: int, *, patch_size: int = 16
) -> dict[str, torch.Tensor]:
    """A copy of a SAM ``state`` whose image encoder fits ``image_size`` px square inputs.

    ``image_encoder.pos_embed`` ``(1, H, W, C)`` is resized bicubically to ``(1, S, S, C)`` with
    ``S = image_size / patch_size``. The relative-position tables ``(2H - 1, head_dim)`` and
    ``(2W - 1, head_dim)`` of global-attention blocks are resized linearly to ``2S - 1`` rows,
    as ``segment_anything``'s ``get_rel_pos`` would do on the fly. Windowed blocks' tables
    (``2 * window - 1`` rows) do not depend on the image size and are kept; the two are told
    apart by their row counts, which differ unless the checkpoint's grid equals the window (no
    SAM checkpoint's does). Tensors that need no change are shared, not copied.
    """
    pos = state.get(_POS_EMBED)
    if not isinstance(pos, torch.Tensor) or pos.ndim != 4 or pos.shape[0] != 1:
        raise SegbenchError(f"not a SAM state dict: it has no (1, H, W, C) {_POS_EMBED}")
    _, height, width, _ = pos.shape
    check_image_size(image_size, native=min(height, width) * patch_size, patch_size=patch_size)
    grid = image_size // patch_size
    out = dict(state)
    if (height, width) == (grid, grid):
        return out
    out[_POS_EMBED] = _resize_pos_embed(pos, grid)
    for key, table in state.items():
        match = _REL_POS.fullmatch(key)
        if match is None:
            continue
        native = height if match.group(2) == "h" else width
        if table.shape[0] == 2 * native - 1:
            out[key] = _resize_rel_pos(table, 2 * grid - 1)
    return out


def _resize_pos_embed(pos: torch.Tensor, grid: int) -> torch.Tensor:
    # In float32: a half-precision checkpoint would otherwise need half bicubic kernels, and
    # load_state_dict casts to the model's dtype anyway. No antialias: detectron2's ViTDet
    # get_abs_pos, where this encoder comes from, resizes the same way.
    resized = F.interpolate(
        pos.permute(0, 3, 1, 2).float(),
        size=(grid, grid),
        mode="bicubic",
        align_corners=False,
    )
    return resized.permute(0, 2, 3, 1).contiguous().to(pos.dtype)


def _resize_rel_pos(table: torch.Tensor, rows: int) -> torch.Tensor:
    # Exactly segment_anything.modeling.image_encoder.get_rel_pos's interpolation, done once here
    # so that the table's shape matches the parameter a smaller model is built with.
    resized = F.interpolate(
        table.float().reshape(1, table.shape[0], -1).permute(0, 2, 1),
        size=rows,
        mode="linear",
    )
    return resized.reshape(-1, rows).permute(1, 0).contiguous().to(table.dtype)


def reinitialise(module: nn.Module, *, seed: int) -> nn.Module:
    """Give every parameter of ``module`` (e.g. SAM's mask decoder) fresh initial values, drawn
    by each layer's own ``reset_parameters`` (PyTorch's defaults, as segment_anything builds
    them) from ``seed``; the global random state is left as it was. A decoder "trained from
    scratch", as one reference study did, starts here rather than from the checkpoint's."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer in module.modules():
            reset = getattr(layer, "reset_parameters", None)
            if callable(reset):
                reset()
            elif type(layer).__name__ == "LayerNorm2d":  # segment_anything's own: 1 and 0
                nn.init.ones_(layer.weight)
                nn.init.zeros_(layer.bias)
    return module
