"""``export_onnx``: a trained model directory -> ``model.onnx`` and the card to run it.

The export directory holds ``model.onnx`` (:mod:`segbench.export.graph`), ``export.json`` and
``README.md`` (:mod:`segbench.export.card`) and a copy of the model's ``card.json`` (which
:func:`segbench.export.runtime.load_onnx_predictor` reads, as ``evaluate`` copies it into its
own directory). It is written atomically, and only once onnxruntime has matched torch on the
exported graph within :data:`TOLERANCE`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from segbench.errors import SegbenchError
from segbench.evalmetrics import EvalMetrics
from segbench.export.card import EXPORT_FILE, ONNX_FILE, README_FILE, Decision, ExportCheck, readme
from segbench.export.describe import export_card, tiling
from segbench.export.graph import (
    DEFAULT_OPSET,
    OPSETS,
    ProbabilityGraph,
    example_input,
    per_image,
    refusal,
    write_graph,
)
from segbench.export.runtime import OnnxModel, sha256_of
from segbench.inference import BLENDS
from segbench.io import atomic_dir
from segbench.modelcard import CARD_FILE, ModelCard
from segbench.predict import load_predictor

# onnxruntime against torch, max abs difference in probability (the figure).
TOLERANCE = 1e-4
DEFAULT_THRESHOLD = 0.5
SUFFIX = "-onnx"  # the default export directory: exports/<model name>-onnx


def export_onnx(
    model_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    threshold: float | None = None,
    eval_dir: str | Path | None = None,
    opset: int | None = None,
    overlap: float = 0.5,
    blend: str | None = None,
) -> dict:
    """Export the model of ``model_dir`` to ``out_dir`` (default ``exports/<model name>-onnx``).

    The card's threshold is ``threshold``, else ``eval_dir/metrics.json``'s (the model's
    evaluation, which also gives min_area, the blend and the test-time augmentation), else
    0.5; several classes take the argmax and no threshold. ``overlap`` and ``blend`` (default:
    the evaluation's, else gaussian) are the sliding window the card tells users to run. A
    model that cannot be exported (classical, zero-shot, oracle-prompted, or refused by the
    exporter) is a :class:`SegbenchError` of one line saying why.

    Returns ``out_dir``, ``sha256``, ``bytes``, ``opset``, ``seconds`` (export and check),
    ``max_abs_diff`` (onnxruntime against torch), ``threshold``, ``threshold_source``,
    ``per_image`` (a graph taking one tile per run).
    """
    model_dir = Path(model_dir)
    card = ModelCard.read(model_dir)
    why = refusal(card)
    if why:
        raise SegbenchError(why)
    opset = DEFAULT_OPSET if opset is None else opset
    _check_options(opset, overlap, blend)
    out_dir = Path(out_dir) if out_dir else default_out_dir(model_dir)
    _check_out_dir(out_dir, model_dir)
    metrics = _evaluation(card, eval_dir) if eval_dir else None
    decision = _decision(card, threshold, metrics)
    blend = blend or (metrics.blend if metrics else "gaussian")

    start = time.perf_counter()
    predictor = load_predictor(model_dir, device=torch.device("cpu"))
    graph = ProbabilityGraph(predictor.model, sigmoid=card.num_classes == 2).eval()
    batch = 1 if per_image(predictor.model) else 2
    tile = card.prepare.tile_size
    with atomic_dir(out_dir) as tmp, predictor.cache_off():
        path = tmp / ONNX_FILE
        write_graph(
            graph,
            path,
            example=example_input(batch, card.in_channels, tile, tile),
            opset=opset,
            name=card.name,
        )
        _check_graph(path, card.name)
        check = _parity(graph, path, card, batch)
        export = export_card(
            card,
            graph,
            sha256=sha256_of(path),
            opset=opset,
            batch=batch,
            tiles=tiling(tile, overlap, blend, metrics.tta if metrics else "none"),
            decision=decision,
            check=check,
        )
        export.write(tmp)
        (tmp / README_FILE).write_text(readme(export))
        card.write(tmp)
        size = path.stat().st_size
    return {
        "out_dir": str(out_dir),
        "sha256": export.sha256,
        "bytes": size,
        "opset": opset,
        "seconds": time.perf_counter() - start,
        "max_abs_diff": check.max_abs_diff,
        "threshold": decision.threshold,
        "threshold_source": decision.threshold_source,
        "per_image": batch == 1,
    }


def default_out_dir(model_dir: Path) -> Path:
    """``exports/<model name>-onnx`` under the current directory (``models/unet`` ->
    ``exports/unet-onnx``). Not beside the model: ``models/`` is what the ensemble stage
    depends on, and a new folder there would make DVC re-run it."""
    base = model_dir if model_dir.name else model_dir.resolve()  # "." has no name
    return Path("exports") / (base.name + SUFFIX)


def _check_options(opset: int, overlap: float, blend: str | None) -> None:
    if opset not in OPSETS:
        raise SegbenchError(f"--opset: {opset} is not one torch.onnx writes here; choose 13 .. 20")
    if not 0 <= overlap < 1:
        raise SegbenchError(f"--overlap: a fraction of the tile in [0, 1), got {overlap}")
    if blend is not None and blend not in BLENDS:
        raise SegbenchError(f"--blend: one of {', '.join(BLENDS)}, got {blend!r}")


def _check_out_dir(out_dir: Path, model_dir: Path) -> None:
    """``out_dir`` is replaced as a whole: never the model, a folder holding it, or a folder
    of something else."""
    out, model = out_dir.resolve(), model_dir.resolve()
    if out == model or out in model.parents or model in out.parents:
        raise SegbenchError(
            f"--out {out_dir}: the export replaces that folder as a whole, and it holds or is "
            f"inside the model {model_dir}; choose a folder of its own"
        )
    if out_dir.is_file() or (
        out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / EXPORT_FILE).is_file()
    ):
        raise SegbenchError(
            f"--out {out_dir}: exists and is not a segbench export (the export would replace "
            "it as a whole); choose another folder or remove it"
        )


def _evaluation(card: ModelCard, eval_dir: str | Path) -> EvalMetrics:
    """The evaluation of this very model (its copied card must describe the same training)."""
    eval_dir = Path(eval_dir)
    stage = f"{'evaluate_ensemble' if card.kind == 'ensemble' else 'evaluate'}@{card.name}"
    metrics = EvalMetrics.read(eval_dir, stage=stage)
    if (eval_dir / CARD_FILE).is_file() and ModelCard.read(eval_dir).config() != card.config():
        raise SegbenchError(
            f"--eval {eval_dir}: evaluates another model or another training of "
            f"{card.name} (its {CARD_FILE} differs); re-run `dvc repro {stage}` or pass "
            "--threshold"
        )
    return metrics


def _decision(card: ModelCard, threshold: float | None, metrics: EvalMetrics | None) -> Decision:
    area = {"min_area": metrics.min_area if metrics else 0}
    area["min_area_source"] = "evaluation" if metrics else "default"
    if card.num_classes > 2:
        if threshold is not None:
            raise SegbenchError(
                f"--threshold: {card.name} tells {card.num_classes} classes apart by the argmax "
                "of their probabilities; a threshold applies to two-class models only"
            )
        return Decision(threshold=None, threshold_source=None, **area)
    if threshold is not None:
        if not 0 <= threshold <= 1:
            raise SegbenchError(f"--threshold: a probability in [0, 1], got {threshold}")
        return Decision(threshold=threshold, threshold_source="argument", **area)
    if metrics:
        return Decision(threshold=metrics.threshold, threshold_source="evaluation", **area)
    return Decision(threshold=DEFAULT_THRESHOLD, threshold_source="default", **area)


def _check_graph(path: Path, name: str) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise SegbenchError(f"{name}: the exported graph is not valid ONNX ({first})") from None


def _parity(graph: ProbabilityGraph, path: Path, card: ModelCard, batch: int) -> ExportCheck:
    """onnxruntime against torch on a batch of tiles and on one larger, non-square input
    (dynamic height and width really used); beyond :data:`TOLERANCE` the export is refused."""
    tile, channels = card.prepare.tile_size, card.in_channels
    inputs = [
        example_input(batch, channels, tile, tile),
        example_input(1, channels, tile + 32, tile + 64),
    ]
    session = OnnxModel(path)
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            ours = session.probabilities(x.numpy())
            worst = max(worst, float(np.abs(ours - graph(x).numpy()).max()))
    shapes = [list(x.shape) for x in inputs]
    if not worst <= TOLERANCE:
        raise SegbenchError(
            f"{card.name}: the exported graph differs from torch by {worst:.2g} in probability "
            f"(more than {TOLERANCE:g}) on inputs of shapes {shapes}; nothing was written"
        )
    return ExportCheck(shapes=shapes, max_abs_diff=worst, tolerance=TOLERANCE)
