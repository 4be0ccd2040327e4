"""Load a trained model directory and predict full-size images with it.

A :class:`Predictor` takes an (H, W) uint8/uint16 image at full resolution, scales it to the working
resolution the model was trained at (``prepare.scale``), predicts, and returns the foreground
probability resized back to (H, W).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from segbench.checkpoint import load_model_state
from segbench.config import NormalizeConfig
from segbench.data.normalize import intensity_range, standardize, to_unit
from segbench.data.resize import resize_image, resize_mask, scaled_shape
from segbench.errors import SegbenchError
from segbench.inference import sliding_window_proba
from segbench.io import read_json
from segbench.models import build_model, get_spec
from segbench.models.registry import model_notes


class Predictor:
    """Full-resolution (H, W) uint8/uint16 image -> (H, W) float32 foreground probability.

    The image is scaled to the working resolution first, and its intensity range is measured
    there, exactly as ``prepare`` measured it for the training tiles. Models that take oracle
    prompts (``self.oracle``: SAM prompted from the ground truth) also need the image's
    reference mask; zero-shot SAM returns a 0/1 mask rather than a probability.
    """

    def __init__(
        self,
        model,
        config: dict,
        *,
        overlap: float,
        batch_size: int,
        device: torch.device,
        blend: str = "gaussian",
    ):
        self.model, self.config = model, config
        self.name = config.get("name", config["model"])  # ensembles have their own
        self.kind = config["kind"]
        self.scale = float(config["prepare"]["scale"])
        self.tile = int(config["prepare"]["tile_size"])
        self.normalize = NormalizeConfig(**config["prepare"].get("normalize", {}))
        self.overlap, self.batch_size, self.device = overlap, batch_size, device
        self.blend = blend
        self.oracle = model_notes(config["model"], config["params"])["oracle_prompts"]

    def warmup(self) -> None:
        """One untimed forward pass, so throughput figures exclude one-off start-up costs."""
        if self.kind not in ("classical", "zero_shot") and not self.oracle:
            blank = np.zeros((self.tile, self.tile), dtype=np.uint8)
            sliding_window_proba(
                self.model,
                standardize(blank, 0.0, 255.0)[None],
                tile=self.tile,
                overlap=0.0,
                batch_size=1,
                device=self.device,
            )

    def predict_proba(
        self, image: np.ndarray, reference: np.ndarray | None = None, *, image_id: str = ""
    ) -> np.ndarray:
        """(H, W) image [+ (H, W) reference mask, used only by oracle models] -> (H, W)
        float32 probability in [0, 1]."""
        height, width = image.shape[:2]
        shape = scaled_shape(height, width, self.scale)
        small = resize_image(image, shape)
        if self.oracle and reference is None:
            raise SegbenchError(
                f"{self.name} takes its prompts from "
                "reference masks (oracle prompts), and none was given; it can only be "
                "evaluated on images with masks"
            )
        ref = resize_mask(reference, shape) if self.oracle else None
        if self.kind == "classical":
            proba = self.model.predict(small)
        elif self.kind == "zero_shot":
            unit = to_unit(small, *intensity_range(small, self.normalize))
            mask = self.model.predict(unit, ref, image_id=image_id)
            proba = mask.astype(np.float32)
        else:
            proba = sliding_window_proba(
                self.model,
                standardize(small, *intensity_range(small, self.normalize))[None],
                tile=self.tile,
                overlap=self.overlap,
                batch_size=self.batch_size,
                device=self.device,
                blend=self.blend,
                guide=ref,
            )
        if proba.shape != (height, width):
            proba = cv2.resize(proba, (width, height), interpolation=cv2.INTER_LINEAR)
        return proba.astype(np.float32)


def load_predictor(
    model_dir: str | Path,
    *,
    overlap: float = 0.5,
    batch_size: int = 4,
    blend: str = "gaussian",
    device: torch.device | None = None,
) -> Predictor:
    """Rebuild the model saved by :func:`segbench.train.train` (or an ensemble fitted by
    :func:`segbench.ensemble.fit_ensemble`) in ``model_dir``.

    Torch weights are read with ``torch.load(..., weights_only=True)``. A directory that is not a
    complete trained model (no ``config.json``, missing or unreadable weights) raises a
    :class:`SegbenchError` naming the file.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise SegbenchError(f"{model_dir}: no such model directory (e.g. models/unet)")
    if not (model_dir / "config.json").is_file():
        raise SegbenchError(
            f"{model_dir}: not a trained segbench model (no config.json); point at a directory "
            "the train stage wrote, such as models/unet, or re-run `dvc repro`"
        )
    config = read_json(model_dir / "config.json")
    spec = get_spec(config["model"])
    model = build_model(config["model"], **config["params"])
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.kind == "zero_shot":  # used as it comes: nothing was trained or saved
        model = model.to(device)
    elif spec.kind != "classical":  # torch models and ensembles: one state dict
        weights = model_dir / "weights.pt"
        try:
            load_model_state(model, _load_weights(weights))
        except RuntimeError as exc:  # keys or shapes differ from what config.json builds
            raise SegbenchError(
                f"{weights} does not fit the model {model_dir / 'config.json'} describes "
                f"({str(exc).splitlines()[0]}); re-run its train stage"
            ) from None
        if hasattr(model, "prepare_for_inference"):
            model.prepare_for_inference()  # SAM LoRA: adapters merged, no extra latency
        model = model.to(device).eval()
    else:
        model.load_state_dict(read_json(model_dir / "state.json"))
    return Predictor(
        model, config, overlap=overlap, batch_size=batch_size, device=device, blend=blend
    )


def _load_weights(path: Path) -> dict:
    """A state dict, read without running any code; a user error if missing or damaged."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SegbenchError(
            f"{path}: missing, so the model directory is incomplete; re-run its train stage"
        ) from None
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise SegbenchError(
            f"{path}: unreadable as a weights-only state dict ({type(exc).__name__}); the file "
            "is damaged or not a segbench checkpoint: re-run its train stage"
        ) from None
