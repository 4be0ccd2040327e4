"""The export card of a model: its card, its graph and the export's choices -> :class:`ExportCard`.

Every value is the one :class:`segbench.predict.Predictor` uses for this model, read from the
same places (the model card's ``prepare``, :mod:`segbench.data.normalize`'s constants,
:mod:`segbench.inference`'s windows and blend).
"""

from __future__ import annotations

import torch
from torch import nn

import segbench
from segbench.data.normalize import IMAGE_MEAN, IMAGE_STD
from segbench.export.card import (
    Decision,
    ExportCard,
    ExportCheck,
    InputSpec,
    OutputSpec,
    Preprocess,
    Source,
    Tiling,
)
from segbench.export.graph import INPUT, OUTPUT
from segbench.modelcard import ModelCard

SIGMA_SCALE = 0.125  # sliding_window_proba's default, which Predictor keeps

_RANGES = {
    "dtype": "lo = 0 and hi = the dtype's maximum (255 for uint8, 65535 for uint16)",
    "minmax": "lo and hi = the scaled image's own minimum and maximum",
    "percentile": "lo and hi = those percentiles of the scaled image, every s-th pixel in each "
    "direction with s = max(1, int(sqrt(pixels / 250000)))",
}


def tiling(tile: int, overlap: float, blend: str, tta: str) -> Tiling:
    """The sliding window of :func:`segbench.inference.sliding_window_proba`, under the
    test-time augmentation ``tta`` (:mod:`segbench.tta`)."""
    return Tiling(
        tta=tta,
        tile_size=tile,
        overlap=overlap,
        stride=max(1, round(tile * (1.0 - overlap))),
        blend=blend,
        sigma_scale=SIGMA_SCALE,
        windows="the last window in each direction shifted back to end flush with the edge; "
        "an image smaller than a tile is reflect-padded at the bottom and right first",
    )


def export_card(
    card: ModelCard,
    graph: nn.Module,
    *,
    sha256: str,
    opset: int,
    batch: int,
    tiles: Tiling,
    decision: Decision,
    check: ExportCheck,
) -> ExportCard:
    """The card of ``graph`` (:class:`~segbench.export.graph.ProbabilityGraph`) exported from
    the model of ``card``; ``batch`` 1: the graph takes one tile per run."""
    sigmoid = card.num_classes == 2
    shape_in = [1 if batch == 1 else "batch", card.in_channels, "height", "width"]
    shape_out = [shape_in[0], 1 if sigmoid else card.num_classes, "height", "width"]
    return ExportCard(
        sha256=sha256,
        opset=opset,
        exporter=f"torch.onnx.export (TorchScript-based, dynamo=False), torch {torch.__version__}",
        segbench_version=segbench.__version__,
        source=Source(
            name=card.name,
            model=card.entry.model,
            kind=card.kind,
            members=list(card.members) if card.members else None,
            data_version=card.data_version,
            mlflow_run_id=card.mlflow_run_id,
            random_init=card.notes()["random_init"],
        ),
        input=InputSpec(
            name=INPUT,
            shape=shape_in,
            channels=card.channels,
            channel_order="R, G, B" if card.channels == "rgb" else "gray",
        ),
        preprocess=Preprocess(
            scale=card.prepare.scale,
            resize="OpenCV INTER_AREA when shrinking, INTER_LINEAR when enlarging",
            normalize=card.prepare.normalize,
            range=_RANGES[card.prepare.normalize.mode] + "; hi = lo + 1 where hi <= lo",
            unit="unit = clip((x - lo) / (hi - lo), 0, 1)",
            mean=IMAGE_MEAN,
            std=IMAGE_STD,
            # smp_models.imagenet_input's buffers: its pre-hook is traced into the graph.
            imagenet_inside=any(n.endswith("input_scale") for n, _ in graph.named_buffers()),
        ),
        tiling=tiles,
        output=OutputSpec(
            name=OUTPUT,
            shape=shape_out,
            activation="sigmoid" if sigmoid else "softmax",
            meaning=f"the probability of {card.classes[1]}"
            if sigmoid
            else f"the probability of each class ({', '.join(card.classes)}), summing to 1",
        ),
        classes=card.classes,
        decision=decision,
        check=check,
        notes=_notes(card, batch),
    )


def _notes(card: ModelCard, batch: int) -> list[str]:
    notes = []
    if batch == 1:
        notes.append(
            "SAM: the graph takes one tile per run (batch fixed at 1) and resizes each tile to "
            f"SAM's input size ({_sam_input_size(card)} px) inside; give it square tiles of "
            f"{card.prepare.tile_size} px, as the sliding window cuts them"
        )
    if card.notes()["random_init"]:
        notes.append(
            "built without a SAM checkpoint (random weights): its outputs say nothing about "
            "Segment Anything"
        )
    if card.ensemble:
        mix = ", ".join(f"{m} {w:g}" for m, w in card.ensemble.weights.items())
        notes.append(f"an ensemble in one graph: members' probabilities mixed with weights {mix}")
    return notes


def _sam_input_size(card: ModelCard) -> int | str:
    sizes = {getattr(c.entry, "image_size", None) for c in [card, *(card.members or {}).values()]}
    sizes.discard(None)
    return sizes.pop() if len(sizes) == 1 else "each member's own"
