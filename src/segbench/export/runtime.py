"""Run an exported ``model.onnx`` with onnxruntime, exactly as segbench runs the torch model.

:func:`load_onnx_predictor` gives a :class:`segbench.predict.Predictor` whose network is an
onnxruntime session (CPUExecutionProvider): the same channel conversion, scaling, intensity
range, standardisation, sliding window, blending and resizing back as ``load_predictor``'s, so
the two predictors' probabilities can be compared image by image (the benchmark does).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from segbench.errors import SegbenchError
from segbench.export.card import ONNX_FILE, ExportCard
from segbench.modelcard import ModelCard
from segbench.predict import Predictor


class OnnxModel:
    """An onnxruntime session of an exported graph ((N, C, H, W) standardised float32 ->
    (N, K, H, W) probabilities), callable where segbench calls a torch network.

    Called with a torch tensor, it returns what :func:`segbench.inference.sliding_window_proba`
    expects of a network, logits: ``logit(p)`` for one output and ``log(p)`` for several, which
    that function's sigmoid or softmax turns back into ``p`` (to float32 rounding). A graph with
    a fixed batch of 1 (SAM) is run tile by tile.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        # As many threads as torch uses, so that the two runtimes compare like with like.
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        spec = self.session.get_inputs()[0]
        self.input = spec.name
        self.per_image = spec.shape[0] == 1

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 standardised -> (N, K, H, W) float32 probabilities."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.per_image and len(batch) > 1:
            return np.concatenate([self.probabilities(tile[None]) for tile in batch])
        return self.session.run(None, {self.input: batch})[0]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        proba = torch.from_numpy(self.probabilities(image.detach().cpu().numpy()))
        return torch.logit(proba) if proba.shape[1] == 1 else torch.log(proba)


class OnnxPredictor(Predictor):
    """A :class:`~segbench.predict.Predictor` over an exported graph; ``export`` is its card."""

    def __init__(self, model: OnnxModel, card: ModelCard, export: ExportCard, **kwargs):
        super().__init__(model, card, device=torch.device("cpu"), **kwargs)
        self.export = export


def load_onnx_predictor(
    export_dir: str | Path,
    *,
    overlap: float | None = None,
    blend: str | None = None,
    tta: str | None = None,
    batch_size: int = 4,
    threads: int | None = None,
) -> OnnxPredictor:
    """The predictor of an export directory (``segbench export``): ``overlap``, ``blend`` and
    ``tta`` default to the export card's; ``threads``: onnxruntime's (default: as many as
    torch's).

    ``model.onnx`` is checked against the card's sha256 first: a damaged or replaced file is a
    :class:`SegbenchError`, as is a directory that is not an export."""
    export_dir = Path(export_dir)
    export = ExportCard.read(export_dir)
    card = ModelCard.read(export_dir)
    path = export_dir / ONNX_FILE
    if not path.is_file() or sha256_of(path) != export.sha256:
        raise SegbenchError(
            f"{path}: missing, or not the file export.json describes (sha256 differs); "
            "export the model again (segbench export MODEL_DIR --format onnx)"
        )
    return OnnxPredictor(
        OnnxModel(path, threads=threads),
        card,
        export,
        overlap=export.tiling.overlap if overlap is None else overlap,
        blend=blend or export.tiling.blend,
        tta=tta or export.tiling.tta,
        batch_size=batch_size,
    )


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks (a SAM graph is gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
