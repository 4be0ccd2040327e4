"""What an evaluation directory holds, typed: ``metrics.json`` and the columns of ``per_image.csv``.

``evaluate`` writes ``eval/<name>/metrics.json`` through :class:`EvalMetrics` (the DVC metrics
file: one flat JSON object), and the comparison and the report read it back through the same
class, so writer and readers cannot drift apart. A file that is not what this segbench writes
(hand-edited, truncated, written by another version) is one :class:`SegbenchError` line that
names it and the stage that rewrites it.

Undefined figures (a mean over no defined value, an interval from one image) are ``null`` in
the file and ``None`` here; the writer may pass them as NaN. Every number is finite.

``per_image.csv`` (one row per test image; evaluate's ``PER_IMAGE_FIELDS``) is read with
:func:`read_per_image`, which checks and converts the columns its caller uses.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from segbench.errors import SegbenchError, describe_validation_error
from segbench.io import read_csv, read_json, write_json

METRICS_FILE = "metrics.json"
PER_IMAGE_FILE = "per_image.csv"
# per_image.csv: the confusion counts are integers, every other column but the id a number
# (``nan`` where undefined).
COUNT_COLUMNS = ("tp", "fp", "fn", "tn")


def evaluate_stage(name: str, ensembles: Collection[str] = ()) -> str:
    """The DVC stage that writes ``eval/<name>``: ``evaluate@<name>``, or
    ``evaluate_ensemble@<name>`` for a name of ``ensembles``."""
    return f"{'evaluate_ensemble' if name in ensembles else 'evaluate'}@{name}"


def _nan_to_none(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


# A mean, std, interval bound or rate: a finite number, or None where it is undefined.
Figure = Annotated[float | None, BeforeValidator(_nan_to_none)]
Count = Annotated[int, Field(ge=0)]
NonNegative = Annotated[float, Field(ge=0)]


class EvalMetrics(BaseModel):
    """``eval/<name>/metrics.json``: the test metrics of one model, in the file's key order.

    For each metric of :data:`segbench.metrics.METRICS`: its mean over the test images where it
    is defined, the std of those values and their number (``<metric>_std``, ``<metric>_n``);
    then the empty-reference counts, 95% bootstrap intervals of Dice and IoU, how masks were
    made, training's and inference's cost, and the notes that qualify the numbers.
    """

    # strict: a number written as text, or a flag as 0/1, is a damaged file, not a value.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    n_images: Count
    dice: Figure
    dice_std: Figure
    dice_n: Count
    # Two classes: Dice over all images (segbench.metrics.dice_all), the ranking criterion.
    dice_all: Figure = None
    dice_all_std: Figure = None
    dice_all_n: Count | None = None
    iou: Figure
    iou_std: Figure
    iou_n: Count
    pixel_accuracy: Figure
    pixel_accuracy_std: Figure
    pixel_accuracy_n: Count
    mpa: Figure
    mpa_std: Figure
    mpa_n: Count
    miou: Figure
    miou_std: Figure
    miou_n: Count
    precision: Figure
    precision_std: Figure
    precision_n: Count
    recall: Figure
    recall_std: Figure
    recall_n: Count
    n_empty_reference: Count
    empty_fpr: Figure  # mean false-positive rate over the empty-reference images
    empty_with_fp: Count
    n_empty_prediction: Count
    dice_ci_low: Figure
    dice_ci_high: Figure
    # The ranking criterion (segbench.metrics: Dice over all images with two classes, mIoU
    # with several; score_metric says which), per test image averaged over the model's seeds:
    # mean, std and 95% bootstrap interval over test images. val_score: its mean over the
    # validation images (averaged over seeds), on which the report's reference is chosen.
    score: Figure = None
    score_std: Figure = None
    score_ci_low: Figure = None
    score_ci_high: Figure = None
    score_metric: Literal["dice_all", "miou"] = "dice_all"
    val_score: Figure = None
    n_val_images: Count = 0
    # train.repeats > 1: the seeds, each seed's mean test and validation score, the
    # seed-to-seed std of the mean test score.
    seeds: list[int | None] | None = None
    folds: list[int] | None = None  # data.split.folds: each run's cross-validation fold
    seed_scores: list[Figure] | None = None
    seed_val_scores: list[Figure] | None = None
    seed_std: Figure = None
    iou_ci_low: Figure
    iou_ci_high: Figure
    threshold: float = Field(ge=0, le=1)
    threshold_tuned: bool
    min_area: Count
    blend: str  # evaluate.blend
    small_test_set: bool
    params_total: Count
    params_trainable: Count
    train_seconds: NonNegative
    train_cache_seconds: NonNegative = 0.0  # of train_seconds: filling SAM's embedding cache
    device_count: int = Field(ge=1)
    train_device: str
    train_peak_memory_mb: NonNegative
    # After a warm-up pass, with SAM's embedding cache bypassed (every image encoded); undefined
    # when no test image took any time.
    images_per_second: Figure
    peak_memory_mb: NonNegative
    device: str
    oracle_prompts: bool
    random_init: bool
    scratch_decoder: bool = False  # written since the decoder could be trained from scratch
    # Ensembles: the one member the weight search gave all the weight (the ensemble is it).
    ensemble_collapsed_to: str | None = None
    # Only when the threshold was tuned: pooled validation Dice at the chosen threshold.
    val_dice_at_threshold: Figure = None
    # Trained networks: their training loss on the test images (segbench.cardloss), and the
    # epochs and batch size they trained with (train, or the entry's own train keys).
    test_loss: Figure = None
    train_epochs: int | None = Field(default=None, ge=1)
    train_batch_size: int | None = Field(default=None, ge=1)
    # Several classes only (absent for two): the class list, per-class means over the test
    # images where each is defined, IoU intervals, images holding each class, mIoU interval.
    num_classes: int | None = Field(default=None, ge=3)
    class_names: list[str] | None = None
    class_iou: list[Figure] | None = None
    class_dice: list[Figure] | None = None
    class_precision: list[Figure] | None = None
    class_recall: list[Figure] | None = None
    class_iou_ci_low: list[Figure] | None = None
    class_iou_ci_high: list[Figure] | None = None
    class_images: list[Count] | None = None
    miou_ci_low: Figure = None
    miou_ci_high: Figure = None
    # Test-time augmentation (evaluate.tta): the transforms whose probabilities were averaged.
    tta: Literal["none", "flips", "d4"] = "none"
    # Objects (two classes only; absent with several: segbench.objects). The reference's objects
    # are the data's instance labels where fetch found them, else its connected components
    # (split as the predictions are); per test image, objects matched at IoU > objects_iou:
    # object F1, panoptic quality (pq = sq x rq), and the count error n_pred - n_ref, whose
    # mean absolute value is count_mae and mean count_bias. Means over the images where each
    # is defined (F1 and PQ are undefined where neither side has an object), with 95%
    # bootstrap intervals; totals of objects over the test images.
    objects_reference: Literal["instances", "components"] | None = None
    objects_split: Literal["none", "watershed"] | None = None
    objects_iou: float | None = Field(default=None, ge=0.5, lt=1)
    objects_min_distance: int | None = Field(default=None, ge=1)  # watershed marker spacing, px
    obj_precision: Figure = None
    obj_recall: Figure = None
    obj_f1: Figure = None
    obj_f1_std: Figure = None
    obj_f1_n: Count | None = None
    obj_f1_ci_low: Figure = None
    obj_f1_ci_high: Figure = None
    pq: Figure = None
    pq_std: Figure = None
    pq_n: Count | None = None
    pq_ci_low: Figure = None
    pq_ci_high: Figure = None
    sq: Figure = None
    rq: Figure = None
    count_mae: Figure = None
    count_mae_ci_low: Figure = None
    count_mae_ci_high: Figure = None
    count_bias: Figure = None
    count_bias_ci_low: Figure = None
    count_bias_ci_high: Figure = None
    n_ref_objects: Count | None = None
    n_pred_objects: Count | None = None

    @property
    def primary(self) -> str:
        """The metric models are ranked and tested on: Dice (two classes), mIoU (several)."""
        return "dice" if self.num_classes is None else "miou"

    def write(self, eval_dir: str | Path) -> Path:
        """``eval_dir/metrics.json``: exactly the keys given (``val_dice_at_threshold`` only
        when tuned), in the class's order, ``null`` where undefined."""
        path = Path(eval_dir) / METRICS_FILE
        write_json(path, self.model_dump(exclude_unset=True))
        return path

    @classmethod
    def read(cls, eval_dir: str | Path, *, stage: str) -> EvalMetrics:
        """The metrics of ``eval_dir``; a missing or damaged file is a :class:`SegbenchError`
        that names it and says to re-run ``stage`` (the one that writes it)."""
        path = Path(eval_dir) / METRICS_FILE
        rerun = f"re-run `dvc repro {stage}`"
        if not path.is_file():
            raise SegbenchError(f"{path}: no such file; run `dvc repro {stage}`")
        data = read_json(path, fix=rerun)
        if not isinstance(data, dict):
            raise SegbenchError(
                f"{path}: not valid evaluation metrics (a JSON object of metric names and "
                f"values is expected, found {_json_kind(data)}); {rerun}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise SegbenchError(
                f"{path}: not valid evaluation metrics ({_describe(exc)}); {rerun}"
            ) from None


def _json_kind(value: Any) -> str:
    kinds = {list: "a list", str: "a string", bool: "true or false", type(None): "null"}
    return kinds.get(type(value), "a number")


def _describe(exc: ValidationError) -> str:
    """:func:`describe_validation_error`, with missing keys said in this file's words (its own
    wording for them is about the params file)."""
    errors = exc.errors()
    missing = [str(e["loc"][0]) for e in errors if e["type"] == "missing"]
    others = [e for e in errors if e["type"] != "missing"]
    parts = [describe_validation_error(exc, errors=others)] if others else []
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 6 else ""
        named = ", ".join(missing[:5] if more else missing)
        parts.append(f"missing key{'s' * (len(missing) > 1)} {named}{more}")
    return "; ".join(parts)


def read_per_image(path: str | Path, *, stage: str, columns: tuple[str, ...]) -> list[dict]:
    """The rows of a ``per_image.csv`` with ``columns`` only, converted: ``id`` text, the
    confusion counts int, every other column float (NaN where undefined: ``nan`` or empty).
    A missing column or a value that is not what the column holds is a :class:`SegbenchError`
    that names the file and says to re-run ``stage``."""
    rerun = f"re-run `dvc repro {stage}`"
    try:
        rows = read_csv(path)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise SegbenchError(f"{path}: not a readable CSV table ({exc}); {rerun}") from None
    absent = [c for c in columns if rows and c not in rows[0]]
    if absent:
        raise SegbenchError(
            f"{path}: no {', '.join(absent)} column{'s' * (len(absent) > 1)} (found "
            f"{', '.join(rows[0]) or 'none'}); {rerun}"
        )
    out = []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            out.append({c: _cell(c, row[c]) for c in columns})
        except ValueError as exc:
            raise SegbenchError(f"{path}, line {line}: {exc}; {rerun}") from None
    return out


def _cell(column: str, text: str | None) -> str | int | float:
    if text is None:  # a short row: csv fills the missing cells with None
        raise ValueError(f"{column}: no value")
    if column == "id":
        if not text:
            raise ValueError("id: empty")
        return text
    try:
        value = int(text) if column in COUNT_COLUMNS else float(text or "nan")
    except ValueError:
        value = None
    if value is None or math.isinf(value):
        kind = "an integer" if column in COUNT_COLUMNS else "a finite number (or nan)"
        raise ValueError(f"{column}: {text!r} is not {kind}")
    return value


SKIPPED_KEY = "skipped"
# An evaluation's extra measurements (segbench.evalextra) live in this sub-directory, which
# always holds an index saying which of them are there (a fixed DVC output).
EXTRA_DIR, EXTRA_INDEX = "extra", "index.json"


def write_extra_index(eval_dir: str | Path, *, points_curve: bool, auto_compare: bool) -> Path:
    """``eval_dir/extra/index.json`` (the directory made if missing): which extras exist."""
    path = Path(eval_dir) / EXTRA_DIR / EXTRA_INDEX
    path.parent.mkdir(exist_ok=True)
    write_json(path, {"points_curve": points_curve, "auto_compare": auto_compare})
    return path


def write_skipped(eval_dir: str | Path, reason: str) -> Path:
    """``eval_dir/metrics.json`` for an entry that cannot run on this data (a zero-shot SAM
    entry on several classes, :func:`segbench.config.not_applicable`): ``{"skipped": reason}``."""
    path = Path(eval_dir) / METRICS_FILE
    write_json(path, {SKIPPED_KEY: reason})
    return path


def read_skipped(eval_dir: str | Path) -> str | None:
    """Why ``eval_dir`` holds no results (written by :func:`write_skipped`), else None."""
    path = Path(eval_dir) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except SegbenchError:
        return None
    if isinstance(data, dict) and set(data) == {SKIPPED_KEY} and isinstance(data[SKIPPED_KEY], str):
        return data[SKIPPED_KEY]
    return None
