"""The model card: what a model directory is, in one typed file (``card.json``).

``train`` writes it for every entry of ``models``, ``ensemble`` for every ensemble; ``predict``,
``evaluate`` and ``report`` read it (evaluate also copies it into ``eval/<name>/``, so a row of
the report is described by its evaluation directory alone). It holds everything needed to
rebuild the model and to qualify its numbers:

- ``name`` and ``entry``: the ``models`` (or ``ensembles``) entry as validated, with its
  registered ``model``, so the same builder makes the same network;
- ``prepare`` and ``in_channels``: the working resolution, tile size and normalisation the
  model was trained at (prediction repeats them), and its input channels (1 grey, 3 RGB);
- ``classes`` and ``class_colors``: the classes it tells apart, background first, and their
  display colours (from the data's ``classes.json``; two classes: one sigmoid output);
- ``train``: the training configuration it actually used (its entry's own keys and any values
  promoted from the sweep applied), ``promoted``: those sweep values, if any;
- ``data_version``: the hash of the tiles it was trained on;
- ``training``: its cost and outcome (parameters, seconds, device, peak memory, best epoch);
- ``members`` and ``ensemble``: an ensemble's members (their own cards) and how it was mixed;
- ``mlflow_run_id``: the MLflow run that recorded it (``evaluate`` logs into the same run).

Weights live beside it (``weights.pt``, ``last.pt`` or ``state.json``), per-epoch figures in
``history.csv``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from segbench.config.models import AnyEntry
from segbench.config.prepare import PrepareConfig
from segbench.config.training import TrainConfig
from segbench.errors import SegbenchError, describe_validation_error
from segbench.io import read_json

CARD_FILE = "card.json"
SCHEMA_VERSION = 1
# Columns of a model directory's history.csv: one row per epoch (empty for untrained models).
# A model trained with train.repeats > 1 keeps each further seed's model directory under
# <model dir>/repeats/<seed>/ (segbench.training.repeats).
REPEATS_DIR = "repeats"
HISTORY_FIELDS = ["epoch", "train_loss", "val_loss", "val_dice", "val_score", "lr", "seconds"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingSummary(_Record):
    """What training (or fitting) cost and gave."""

    params_total: int = Field(ge=0)
    params_trainable: int = Field(ge=0)
    seconds: float = Field(ge=0, description="wall time of training or fitting")
    device: str
    device_count: int = Field(ge=1)
    peak_memory_mb: float = Field(ge=0, description="peak CUDA memory, else peak RSS")
    best_epoch: int | None = None  # torch models: the epoch whose weights were kept
    best_val_dice: float | None = None
    epochs_run: int | None = None
    stop_reason: str | None = None
    # Of ``seconds``, the time spent filling SAM's embedding cache (encoder forward passes
    # whose result later epochs read from disk); 0 without a cache.
    cache_seconds: float = Field(default=0.0, ge=0)
    # The checkpoint criterion at best_epoch: mean over validation tiles of the per-image
    # criterion (Dice over all images with two classes, mIoU with several).
    best_val_score: float | None = None
    fit_scores: dict[str, float] = {}  # classical models: the score of each choice tried (Dice
    # or mIoU pooled over the split the model fits on: training tiles, or validation for edges)


class EnsembleFit(_Record):
    """How an ensemble's mixing weights were chosen on the validation split."""

    weights: dict[str, float]
    val_dice: float  # pooled validation Dice of the mix
    member_val_dice: dict[str, float]  # of each member alone, same computation
    n_val_images: int
    weights_tried: int
    fit_seconds: float
    # Searched together with the weights (two classes; None with several: the argmax decides).
    threshold: float | None = None
    # The criterion models are ranked on (segbench.metrics: mean per-image Dice over all
    # images with two classes, mean per-image mIoU with several), of the mix and of each member
    # alone at its own best threshold.
    val_score: float | None = None
    member_val_score: dict[str, float] = {}
    # The one member holding all the weight, when the search gave it all: the ensemble *is*
    # that member and the report shows it as such, not as a new model.
    collapsed_to: str | None = None


class ModelCard(_Record):
    schema_version: Literal[1] = SCHEMA_VERSION
    name: str
    entry: AnyEntry
    prepare: PrepareConfig
    in_channels: int = Field(ge=1)
    # Cards written before classes became data are binary.
    classes: list[str] = Field(default=["background", "foreground"], min_length=2)
    class_colors: list[tuple[int, int, int]] | None = None
    train: TrainConfig | None  # None: nothing trained by gradient descent
    promoted: dict[str, Any] | None  # the sweep's best values this model trained with
    data_version: str
    training: TrainingSummary
    # k-fold cross-validation (data.split.folds): the fold this model was validated on (it
    # trained on the others); 0 is also the plain train/val split.
    fold: int = Field(default=0, ge=0)
    members: dict[str, ModelCard] | None = None
    ensemble: EnsembleFit | None = None
    mlflow_run_id: str | None = None

    @property
    def kind(self) -> str:
        return self.entry.kind

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> str:
        """``rgb`` or ``gray``: the images the model takes."""
        return "rgb" if self.in_channels == 3 else "gray"

    def notes(self) -> dict[str, bool]:
        """``oracle_prompts`` and ``random_init`` (see :class:`segbench.config.models.Entry`):
        an ensemble carries what any of its members carries."""
        own = self.entry.notes()
        for member in (self.members or {}).values():
            own = {k: v or member.notes()[k] for k, v in own.items()}
        return own

    def write(self, model_dir: str | Path) -> Path:
        path = Path(model_dir) / CARD_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def read(cls, model_dir: str | Path) -> ModelCard:
        """The card of ``model_dir``; a missing, damaged or foreign file is a
        :class:`SegbenchError` that names it and says what to do."""
        model_dir = Path(model_dir)
        path = model_dir / CARD_FILE
        if not model_dir.is_dir():
            raise SegbenchError(f"{model_dir}: no such model directory (e.g. models/unet)")
        if not path.is_file():
            raise SegbenchError(
                f"{model_dir}: not a trained segbench model (no {CARD_FILE}); point at a "
                "directory the train or ensemble stage wrote, such as models/unet, or re-run "
                "`dvc repro`"
            )
        data = read_json(path, fix="re-run its train stage")
        if isinstance(data, dict) and data.get("schema_version") != SCHEMA_VERSION:
            raise SegbenchError(
                f"{path}: model card version {data.get('schema_version')!r}, this segbench "
                f"reads version {SCHEMA_VERSION}; re-run its train stage"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise SegbenchError(
                f"{path}: not a valid model card ({describe_validation_error(exc)}); re-run its "
                "train stage"
            ) from None

    def config(self) -> dict[str, Any]:
        """What determines the trained weights (for resume fingerprints and MLflow params):
        the entry, the preparation, the training configuration and the data."""
        return self.model_dump(
            mode="json",
            include={
                "name",
                "entry",
                "prepare",
                "in_channels",
                "classes",
                "train",
                "data_version",
                "fold",
            },
        )


ModelCard.model_rebuild()
