"""What of a model directory becomes an ONNX graph, and the graph itself.

The graph is the network of a torch model (or of a whole ensemble, its mix included) followed by
the activation :func:`segbench.inference.sliding_window_proba` applies: it maps standardised
(N, C, H, W) float32 tiles to (N, 1, H, W) float32 foreground probabilities (two classes:
sigmoid of the one logit) or (N, K, H, W) class probabilities (K > 2: softmax over the logits).

It is written by torch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``):
it gives dynamic batch, height and width through ``dynamic_axes``, exports every registered
network (SAM's encoder and decoder included), and takes seconds where the ``torch.export``-based
one (``dynamo=True``, which also needs onnxscript) takes 7-10 times as long for the same graph.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from segbench.errors import SegbenchError
from segbench.modelcard import ModelCard

INPUT, OUTPUT = "image", "probabilities"
DEFAULT_OPSET = 17  # LayerNormalization is one node from 17; onnxruntime >= 1.11 runs it
# The opsets the TorchScript exporter writes (torch.onnx._constants: 9 .. 20); SegFormer's
# attention and bilinear resizing need 13 or newer.
OPSETS = range(13, 21)


def refusal(card: ModelCard) -> str | None:
    """Why the model of ``card`` has no ONNX graph (one sentence, saying what to use instead),
    or None when it can be exported. An ensemble is refused for its first refused member."""
    what = f"{card.name} ({card.entry.model})"
    if card.kind == "classical":
        return (
            f"{what} is a classical baseline computed with NumPy and scikit-image, not a "
            f"network: it has no graph to export; run it with `segbench predict`"
        )
    if card.kind == "zero_shot":
        how = (
            "the automatic mask generator's point grid, per-mask filtering and merging"
            if card.entry.prompt == "auto"
            else "prompts drawn from each image's reference mask (oracle prompts)"
        )
        return (
            f"{what} is zero-shot SAM run with {how}, a loop around the network that no single "
            "graph holds; run it with `segbench predict` (or evaluate it)"
        )
    if card.notes()["oracle_prompts"] and card.kind != "ensemble":
        return (
            f"{what} takes its box prompts from each tile's reference mask (oracle prompts), "
            "which unlabelled images do not have; export a promptless SAM (prompt: none)"
        )
    for member, member_card in (card.members or {}).items():
        why = refusal(member_card)
        if why:
            return f"ensemble {card.name}: its member {member} cannot be exported: {why}"
    return None


class ProbabilityGraph(nn.Module):
    """``model`` (standardised (N, C, H, W) float32 -> logits) followed by its activation:
    (N, 1, H, W) sigmoid probabilities for one output (two classes), else (N, K, H, W)
    softmax probabilities, float32, as :func:`segbench.inference.sliding_window_proba`
    makes them."""

    def __init__(self, model: nn.Module, *, sigmoid: bool):
        super().__init__()
        self.model, self.sigmoid = model, sigmoid

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.model(image).float()
        return torch.sigmoid(logits) if self.sigmoid else torch.softmax(logits, dim=1)


def per_image(model: nn.Module) -> bool:
    """Whether the graph of ``model`` takes one tile per run (batch fixed at 1).

    SAM's mask decoder pairs one image with a batch of prompts, so
    :class:`~segbench.sam.segmenter.SamSegmenter` decodes a batch tile by tile in a Python loop,
    which the tracer unrolls at the batch size it traced."""
    # Only SAM models are built from that module: while it is not loaded there is none.
    module = sys.modules.get("segbench.sam.segmenter")
    return module is not None and any(isinstance(m, module.SamSegmenter) for m in model.modules())


def example_input(batch: int, channels: int, height: int, width: int) -> torch.Tensor:
    """A seeded (batch, channels, height, width) float32 input, standard normal like a
    standardised image."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, channels, height, width, generator=generator)


def write_graph(
    graph: ProbabilityGraph, path: Path, *, example: torch.Tensor, opset: int, name: str
) -> None:
    """Trace ``graph`` on ``example`` ((N, C, T, T) float32) and write it to ``path``, with
    dynamic height and width (and batch unless N is 1: see :func:`per_image`). An exporter
    failure is a :class:`SegbenchError` naming the model ``name``."""
    axes = (
        {2: "height", 3: "width"}
        if example.shape[0] == 1
        else {0: "batch", 2: "height", 3: "width"}
    )
    try:
        # The TorchScript exporter warns that it is deprecated, and the tracer about every
        # Python value it freezes (an ensemble's fixed weights, SAM's merged-LoRA flag): none of
        # that is the user's to act on, and the exported graph is checked against torch after.
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph,
                (example,),
                str(path),
                dynamo=False,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: axes, OUTPUT: axes},
                opset_version=opset,
                do_constant_folding=True,
            )
    except Exception as exc:  # the exporter raises many types for an unsupported operator
        first = (str(exc).strip().splitlines() or [""])[0]
        raise SegbenchError(
            f"{name}: torch.onnx cannot export it at opset {opset} ({type(exc).__name__}: "
            f"{first}); try another --opset, or run it with `segbench predict`"
        ) from None
