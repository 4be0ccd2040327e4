"""The export card (``export.json``): what a user of ``model.onnx`` must do around it.

A graph alone is not a segmenter: its input is a standardised tile at the working resolution,
and its output a tile's probabilities. The card states every step between an image file and a
mask, as :class:`segbench.predict.Predictor` takes them, with the values this model was trained
with: scale to the working resolution, measure the intensity range, map to [0, 1], standardise,
cut into tiles, blend the tiles' probabilities, resize back, threshold, drop small components.
``README.md`` beside it says the same in prose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from segbench.config.prepare import NormalizeConfig
from segbench.errors import SegbenchError, describe_validation_error
from segbench.io import read_json
from segbench.tta import TTA_DESCRIPTIONS

EXPORT_FILE, ONNX_FILE, README_FILE = "export.json", "model.onnx", "README.md"
SCHEMA_VERSION = 1


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Record):
    """The model directory the graph came from (its ``card.json`` is copied beside)."""

    name: str
    model: str  # the registered model (entry ``model:``), "ensemble" for an ensemble
    kind: str
    members: list[str] | None = None  # an ensemble's
    data_version: str
    mlflow_run_id: str | None
    random_init: bool  # a SAM built without a checkpoint: its outputs say nothing about SAM


class InputSpec(_Record):
    name: str
    dtype: Literal["float32"] = "float32"
    layout: Literal["NCHW"] = "NCHW"
    shape: list[int | str]  # e.g. ["batch", 1, "height", "width"]; 1 for a fixed batch
    channels: Literal["gray", "rgb"]
    channel_order: str  # "gray" or "R, G, B"


class Preprocess(_Record):
    """Full-size stored image (uint8/uint16) -> the graph's input, in this order."""

    scale: float  # 1. resize to round(H * scale) x round(W * scale) (the working resolution)
    resize: str
    normalize: (
        NormalizeConfig  # 2. the intensity range (lo, hi), measured on the whole scaled image
    )
    range: str
    unit: str  # 3. to [0, 1]
    mean: float  # 4. standardised: (unit - mean) / std
    std: float
    imagenet_inside: bool  # the graph re-standardises to ImageNet statistics itself


class Tiling(_Record):
    """Sliding-window inference over the standardised image (segbench.inference)."""

    tile_size: int
    overlap: float
    stride: int
    blend: Literal["gaussian", "mean"]
    sigma_scale: float
    windows: str
    # Test-time augmentation (segbench.tta) the evaluation's threshold was chosen with.
    tta: Literal["none", "flips", "d4"] = "none"


class OutputSpec(_Record):
    name: str
    shape: list[int | str]
    activation: Literal["sigmoid", "softmax"]
    meaning: str


class Decision(_Record):
    """Probabilities -> mask, at full size."""

    threshold: float | None  # two classes: foreground where p >= threshold; None: argmax
    threshold_source: Literal["argument", "evaluation", "default"] | None
    min_area: int  # drop predicted components smaller than this (pixels, full size)
    min_area_source: Literal["evaluation", "default"]


class ExportCheck(_Record):
    """onnxruntime against torch on seeded inputs, at export time."""

    shapes: list[list[int]]
    max_abs_diff: float
    tolerance: float


class ExportCard(_Record):
    schema_version: Literal[1] = SCHEMA_VERSION
    format: Literal["onnx"] = "onnx"
    file: str = ONNX_FILE
    sha256: str
    opset: int
    exporter: str
    segbench_version: str
    source: Source
    input: InputSpec
    preprocess: Preprocess
    tiling: Tiling
    output: OutputSpec
    classes: list[str]
    decision: Decision
    check: ExportCheck
    notes: list[str] = []

    def write(self, export_dir: str | Path) -> Path:
        path = Path(export_dir) / EXPORT_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def read(cls, export_dir: str | Path) -> ExportCard:
        """The card of ``export_dir``; a missing or damaged one is a :class:`SegbenchError`."""
        path = Path(export_dir) / EXPORT_FILE
        again = "export the model again (segbench export MODEL_DIR --format onnx)"
        if not path.is_file():
            raise SegbenchError(
                f"{export_dir}: not a segbench ONNX export (no {EXPORT_FILE}); {again}"
            )
        try:
            return cls.model_validate(read_json(path, fix=again))
        except ValidationError as exc:
            raise SegbenchError(
                f"{path}: not a valid export card ({describe_validation_error(exc)}); {again}"
            ) from None


def readme(card: ExportCard) -> str:
    """``README.md``: the card in prose, with a snippet that runs the graph."""
    pre, tiling, out, dec = card.preprocess, card.tiling, card.output, card.decision
    if dec.threshold is None:
        decide = "the class of each pixel is the argmax over the class probabilities"
    else:
        decide = (
            f"a pixel is foreground where its probability is >= {dec.threshold:g} "
            f"({dec.threshold_source})"
        )
    pct = (
        f" (percentiles {list(pre.normalize.percentiles)})"
        if pre.normalize.mode == "percentile"
        else ""
    )
    imagenet = (
        " The graph re-standardises its input to ImageNet's per-channel statistics itself: "
        "feed it segbench's standardisation as above."
        if pre.imagenet_inside
        else ""
    )
    notes = "".join(f"- {n}\n" for n in card.notes)
    return f"""# {card.source.name}: ONNX export

`{card.file}` (opset {card.opset}, sha256 `{card.sha256}`), exported by segbench
{card.segbench_version} from the model `{card.source.name}` ({card.source.model}, data version
`{card.source.data_version}`). Classes: {", ".join(card.classes)}. `export.json` holds every value
below; `card.json` is the source model card.

## Input

`{card.input.name}`: {card.input.dtype} {card.input.layout}, shape {_shape(card.input.shape)},
{card.input.channels} ({card.input.channel_order}). Steps from a stored image (uint8 or uint16):

1. Resize to the working resolution: x {pre.scale:g} ({pre.resize}).
2. Intensity range (lo, hi): `{pre.normalize.mode}`{pct}, {pre.range}.
3. `{pre.unit}`.
4. Standardise: `(unit - {pre.mean:g}) / {pre.std:g}`.{imagenet}
5. Sliding window: tiles of {tiling.tile_size} px, overlap {tiling.overlap:g} (stride
   {tiling.stride} px); {tiling.windows}. Blend: {tiling.blend} (sigma = {tiling.sigma_scale:g}
   x tile). Test-time augmentation: {TTA_DESCRIPTIONS[tiling.tta]}.

## Output

`{out.name}`: shape {_shape(out.shape)}, {out.activation}: {out.meaning}. Resize the blended
probabilities back to the full image (bilinear); {decide}; then drop predicted 8-connected
components smaller than {dec.min_area} px at full size ({dec.min_area_source}).

onnxruntime matched torch within {card.check.max_abs_diff:.1e} (tolerance {card.check.tolerance:g})
on inputs of shapes {", ".join(_shape(s) for s in card.check.shapes)} at export.

{notes}
```python
import onnxruntime as ort

session = ort.InferenceSession("{card.file}", providers=["CPUExecutionProvider"])
# tiles: standardised float32, NCHW, as in steps 1-5
tile_proba = session.run(None, {{"{card.input.name}": tiles}})[0]

# or every step above, as segbench predicts:
from segbench.export import load_onnx_predictor

proba = load_onnx_predictor("path/to/this/folder").predict_proba(image)  # full-size image
```
"""


def _shape(shape: list) -> str:
    return f"({', '.join(str(d) for d in shape)})"
