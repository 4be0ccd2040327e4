"""A trained segbench model as an MLflow model: a pyfunc wrapping segbench's own predictor.

``evaluate`` logs one per servable model (:func:`log_pyfunc`) into the run that trained it, with
everything prediction needs: the model directory (card and weights), the SAM checkpoint it was
built on (if any), and the settings the evaluation used (sliding-window overlap and blend,
test-time augmentation, the threshold tuned on validation, ``min_area``). The report stage
registers the reference model and moves the alias ``champion`` to it (:mod:`segbench.registry`),
and ``mlflow models serve -m models:/<name>@champion --env-manager local`` serves it.

Input and output (the logged signature)::

    input   (N, H, W) grey or (N, H, W, 3) RGB images, the data's dtype (uint8 or uint16), as
            the model was trained on; each is predicted at full size like ``segbench predict``
    output  (N, H, W) uint8 masks: {0, 1} for two classes, class indices for several
    params  threshold (float, two classes), min_area (int, px): override the logged ones

Over HTTP: ``POST /invocations`` with ``{"inputs": [[[...]]]}`` (nested lists) answers
``{"predictions": [[[...]]]}``; an input of the wrong shape, dtype or channels is HTTP 400
with the reason.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from segbench.errors import SegbenchError
from segbench.modelcard import CARD_FILE, ModelCard
from segbench.tracking import MODEL_URI_TAG

MODEL_NAME = "model"  # the logged model's name in its run
# The logged model's code (MLflow's "models from code"): it names segbench's class.
_MODEL_SCRIPT = """from mlflow.models import set_model

from segbench.pyfunc import SegbenchModel

set_model(SegbenchModel())
"""
# What a model directory needs to be rebuilt: the card and the weights (never last.pt, the
# resumable checkpoint with the optimiser's state, nor the other seeds in repeats/).
_MODEL_FILES = (CARD_FILE, "weights.pt", "state.json")
_EXAMPLE_SIDE = 256  # the input example: a crop of a test image at most this many px a side


def servable(card: ModelCard) -> str | None:
    """Why ``card``'s model cannot be served, or None: a model prompted from the reference
    masks (oracle prompts) has nothing to prompt it with on a user's image."""
    if card.notes()["oracle_prompts"]:
        return "its prompts come from the reference masks (oracle prompts)"
    return None


class SegbenchModel(PythonModel):
    """The pyfunc: ``model_config`` holds the prediction settings, ``artifacts`` the model
    directory (``model_dir``) and, for SAM models built on a checkpoint, ``sam_checkpoint``."""

    def load_context(self, context) -> None:
        from segbench.predict import load_predictor

        cfg = context.model_config
        model_dir = Path(context.artifacts["model_dir"])
        card = ModelCard.read(model_dir)
        if "sam_checkpoint" in context.artifacts:
            card = with_checkpoint(card, context.artifacts["sam_checkpoint"])
        self.predictor = load_predictor(
            model_dir,
            overlap=cfg["overlap"],
            batch_size=cfg["batch_size"],
            blend=cfg["blend"],
            tta=cfg["tta"],
            card=card,
        )
        self.threshold, self.min_area = float(cfg["threshold"]), int(cfg["min_area"])

    def predict(
        self, context, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        """(N, H, W[, 3]) images -> (N, H, W) uint8 masks. (The ``np.ndarray`` hint tells MLflow
        that the logged signature, not a type hint, describes the input.)"""
        from segbench.postprocess import to_labels

        images = self.check(model_input)
        params = params or {}
        threshold = float(params.get("threshold", self.threshold))
        min_area = int(params.get("min_area", self.min_area))
        if not 0 < threshold < 1 or min_area < 0:
            raise _bad(
                f"threshold must be in (0, 1) and min_area >= 0; got {threshold}, {min_area}"
            )
        masks = []
        for image in images:
            try:
                proba = self.predictor.predict_proba(image)
            except SegbenchError as exc:
                raise _bad(str(exc)) from None
            masks.append(to_labels(proba, threshold, min_area).astype(np.uint8))
        return np.stack(masks)

    def check(self, model_input) -> np.ndarray:
        """The batch, or HTTP 400 for images with no pixels. Shape, channels and dtype are the
        logged signature's to check: MLflow enforces it before :meth:`predict` is called."""
        images = np.asarray(model_input)
        if images.ndim < 3 or min(images.shape[1:3]) < 1:
            raise _bad(f"{self.predictor.name}: images with no pixels (shape {images.shape})")
        return images


def _bad(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)  # HTTP 400


def with_checkpoint(card: ModelCard, path: str) -> ModelCard:
    """``card`` with its SAM entry's ``checkpoint`` pointing at ``path`` (the logged copy)."""
    entry = card.entry.model_copy(update={"checkpoint": str(path)})
    return card.model_copy(update={"entry": entry})


def model_files(model_dir: Path, dest: Path) -> Path:
    """Copy what :func:`segbench.predict.load_predictor` reads from ``model_dir`` into
    ``dest``; return ``dest``."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    for name in _MODEL_FILES:
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, dest / name)
    return dest


def requirements() -> list[str]:
    """segbench's own dependencies, pinned to the versions installed (segbench itself is not
    on PyPI: serve with ``--env-manager local`` in its virtualenv)."""
    out = []
    for line in importlib.metadata.requires("segbench") or []:
        if "extra ==" in line:  # the pipeline and dev extras: not needed to predict
            continue
        name = re.match(r"[A-Za-z0-9._-]+", line).group(0)
        try:
            out.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(line.split(";")[0].strip())
    return out


def input_example(image: np.ndarray) -> np.ndarray:
    """A batch of one: the top-left crop of ``image`` ((H, W[, 3])), at most 256 px a side."""
    return image[None, :_EXAMPLE_SIDE, :_EXAMPLE_SIDE].copy()


def log_pyfunc(
    model_dir: Path, card: ModelCard, example: np.ndarray, settings: dict[str, Any], work: Path
) -> str:
    """Log ``model_dir`` as the pyfunc :data:`MODEL_NAME` of the active run, tag the run with
    its URI (:data:`segbench.tracking.MODEL_URI_TAG`) and return it. ``example`` is one
    full-size test image (its crop is the input example and its dtype the signature's);
    ``settings``: threshold, min_area, overlap, blend, batch_size, tta; ``work`` a scratch
    folder."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    batch = input_example(example)
    signature = ModelSignature(
        inputs=Schema(
            [TensorSpec(batch.dtype, (-1, *(-1 for _ in batch.shape[1:3]), *batch.shape[3:]))]
        ),
        outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1))]),
        params=ParamSchema(
            [
                ParamSpec("threshold", "double", float(settings["threshold"])),
                ParamSpec("min_area", "long", int(settings["min_area"])),
            ]
        ),
    )
    artifacts = {"model_dir": str(model_files(model_dir, work / "model_dir"))}
    checkpoint = getattr(card.entry, "checkpoint", None)
    if checkpoint:
        artifacts["sam_checkpoint"] = str(checkpoint)
    # "Models from code": MLflow keeps this script, not a pickle of the model object, so that
    # loading the model unpickles nothing (the weights load with weights_only=True).
    script = work / "segbench_model.py"
    script.write_text(_MODEL_SCRIPT)
    info = mlflow.pyfunc.log_model(
        name=MODEL_NAME,
        python_model=str(script),
        artifacts=artifacts,
        model_config=settings,
        signature=signature,
        input_example=(batch, {"threshold": float(settings["threshold"])}),
        pip_requirements=requirements(),
    )
    mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
    return info.model_uri
