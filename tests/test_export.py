"""``segbench export MODEL_DIR --format onnx``: a graph with dynamic height and width whose
onnxruntime probabilities match torch's within 1e-4, a card that says how to run it, and one
line saying why for a model that has no graph.

Model directories are written as training writes them (card + weights), from random weights:
parity does not need a trained network, and no test here trains one.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from segbench.checkpoint import model_state
from segbench.config import parse_params
from segbench.errors import SegbenchError
from segbench.export import ExportCard, OnnxModel, export_onnx, load_onnx_predictor
from segbench.export.graph import ProbabilityGraph
from segbench.export.onnx_export import default_out_dir
from segbench.io import write_json
from segbench.modelcard import EnsembleFit, ModelCard, TrainingSummary
from segbench.predict import build_from_card, load_predictor
from segbench.training.fit import model_card
from tests.conftest import SHRINK, deep_update, real_params_raw, run_cli
from tests.test_evalmetrics import example_metrics

# The module's model directories are made once per xdist worker.
pytestmark = pytest.mark.xdist_group("export_models")

TOLERANCE = 1e-4  # the figure: max abs difference in probability
# Full-size images (scale 0.5, 64-px tiles): one narrower than a tile at the working resolution
# (reflect-padded), one over several windows; neither side a multiple of 32.
SIZES = [(150, 97), (203, 317)]
# The shrunk params, with networks small enough to export in a second or two.
SMALL = {
    "models": {
        "unet": {"encoder_depth": 3, "decoder_channels": [32, 16, 8]},
        "attention_unet": {"decoder_channels": [64, 32, 16, 8, 8]},
        "segformer": {"decoder_segmentation_channels": 32},
    },
    "ensembles": {"ensemble": {"members": ["unet", "segformer"], "weights": [0.6, 0.4]}},
}


def small_params(**models):
    """The shrunk params.yaml with :data:`SMALL`, and ``models`` entries' keys changed."""
    raw = deep_update(deep_update(real_params_raw(), SHRINK), SMALL)
    return parse_params(deep_update(raw, {"models": models}))


def write_model_dir(root: Path, card: ModelCard, *, seed: int = 0) -> Path:
    """``root/<name>`` as train (or ensemble) writes it: card.json and the weights, random."""
    folder = root / card.name
    folder.mkdir(parents=True)
    if card.kind in ("torch", "ensemble"):
        torch.manual_seed(seed)
        torch.save(model_state(build_from_card(card)), folder / "weights.pt")
    card.write(folder)
    return folder


def card_of(name: str, params, *, channels: str = "gray", classes=None) -> ModelCard:
    card = model_card(name, params, "data-v1", channels=channels)
    if classes:
        card = card.model_copy(update={"classes": list(classes), "class_colors": None})
    return card


def ensemble_card(params) -> ModelCard:
    members = {m: card_of(m, params) for m in params.ensemble("ensemble").members}
    weights = dict(zip(members, params.ensemble("ensemble").weights, strict=True))
    return ModelCard(
        name="ensemble",
        entry=params.ensemble("ensemble"),
        prepare=params.prepare,
        in_channels=1,
        train=None,
        promoted=None,
        data_version="data-v1",
        training=TrainingSummary(
            params_total=0,
            params_trainable=0,
            seconds=0,
            device="cpu",
            device_count=1,
            peak_memory_mb=0,
        ),
        members=members,
        ensemble=EnsembleFit(
            weights=weights,
            val_dice=0.5,
            member_val_dice=dict.fromkeys(members, 0.5),
            n_val_images=2,
            weights_tried=1,
            fit_seconds=0.0,
            threshold=0.5,
        ),
    )


def sample_image(shape, channels: str, seed: int) -> np.ndarray:
    """A uint8 image with structure (a bright disc on a ramp) and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    disc = (yy - shape[0] * 0.6) ** 2 + (xx - shape[1] * 0.4) ** 2 < (0.25 * min(shape)) ** 2
    image = 40 + 100 * xx / shape[1] + 90 * disc + rng.normal(0, 10, shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    return np.dstack([image, image[::-1], 255 - image]) if channels == "rgb" else image


def assert_parity(model_dir: Path, export_dir: Path) -> None:
    """onnxruntime and torch, each through a predictor with the export card's sliding window,
    on the images of :data:`SIZES`."""
    onnx_predictor = load_onnx_predictor(export_dir)
    torch_predictor = load_predictor(
        model_dir,
        overlap=onnx_predictor.overlap,
        blend=onnx_predictor.blend,
        tta=onnx_predictor.tta,
        device=torch.device("cpu"),
    )
    for i, shape in enumerate(SIZES):
        image = sample_image(shape, torch_predictor.channels, seed=i)
        ours, theirs = onnx_predictor.predict_proba(image), torch_predictor.predict_proba(image)
        assert ours.shape == theirs.shape and ours.shape[-2:] == shape
        assert np.abs(ours - theirs).max() <= TOLERANCE, (model_dir.name, shape)


@pytest.fixture(scope="module")
def unet(tmp_path_factory) -> tuple[Path, Path, dict]:
    """A U-Net model directory, its export with the threshold of an evaluation, and
    export_onnx's summary."""
    root = tmp_path_factory.mktemp("export_unet")
    model_dir = write_model_dir(root / "models", card_of("unet", small_params()))
    eval_dir = write_eval_dir(root / "eval" / "unet", model_dir)
    out = root / "exports" / "unet-onnx"
    return model_dir, out, export_onnx(model_dir, out, eval_dir=eval_dir)


def write_eval_dir(folder: Path, model_dir: Path) -> Path:
    """An evaluation of the model in ``model_dir`` as evaluate writes it (metrics, card)."""
    folder.mkdir(parents=True)
    metrics = example_metrics(
        threshold=0.35, threshold_tuned=True, min_area=12, blend="mean", tta="flips"
    )
    write_json(folder / "metrics.json", metrics)
    ModelCard.read(model_dir).write(folder)  # evaluate copies the card
    return folder


def test_unet_export_matches_torch_on_images_and_inputs_of_any_size(unet):
    model_dir, export_dir, summary = unet
    assert summary["out_dir"] == str(export_dir)  # default: beside the model
    assert sorted(p.name for p in export_dir.iterdir()) == [
        "README.md",
        "card.json",
        "export.json",
        "model.onnx",
    ]
    assert summary["max_abs_diff"] <= TOLERANCE and not summary["per_image"]
    assert_parity(model_dir, export_dir)
    # The bare graph: another batch, height and width than the tiles it was traced on.
    predictor = load_predictor(model_dir, device=torch.device("cpu"))
    graph = ProbabilityGraph(predictor.model, sigmoid=True).eval()
    x = torch.randn(3, 1, 96, 160, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = graph(x).numpy()
    got = OnnxModel(export_dir / "model.onnx").probabilities(x.numpy())
    assert got.shape == expected.shape == (3, 1, 96, 160)
    assert np.abs(got - expected).max() <= TOLERANCE


def test_the_export_card_says_how_to_run_the_graph(unet):
    model_dir, export_dir, summary = unet
    export = ExportCard.read(export_dir)
    params = small_params()
    assert export.sha256 == summary["sha256"] and export.opset == 17 == summary["opset"]
    assert export.input.shape == ["batch", 1, "height", "width"]
    assert (export.input.name, export.input.dtype, export.input.layout) == (
        "image",
        "float32",
        "NCHW",
    )
    assert export.input.channels == "gray"
    assert export.preprocess.scale == params.prepare.scale
    assert export.preprocess.normalize == params.prepare.normalize
    assert (export.preprocess.mean, export.preprocess.std) == (0.5, 0.25)
    assert not export.preprocess.imagenet_inside
    assert export.tiling.tile_size == params.prepare.tile_size
    assert (export.tiling.overlap, export.tiling.stride, export.tiling.blend) == (
        0.5,
        params.prepare.tile_size // 2,
        "mean",  # the evaluation's
    )
    assert export.tiling.tta == "flips"  # the evaluation's: its threshold was chosen with it
    assert export.output.shape == ["batch", 1, "height", "width"]
    assert export.output.activation == "sigmoid"
    assert export.classes == ["background", "foreground"]
    assert export.decision.model_dump() == {
        "threshold": 0.35,
        "threshold_source": "evaluation",
        "min_area": 12,
        "min_area_source": "evaluation",
    }
    assert (export.source.name, export.source.model, export.source.data_version) == (
        "unet",
        "unet",
        "data-v1",
    )
    assert export.segbench_version and "torch" in export.exporter
    assert ModelCard.read(export_dir) == ModelCard.read(model_dir)
    readme = (export_dir / "README.md").read_text()
    assert export.sha256 in readme and "(unit - 0.5) / 0.25" in readme


def test_a_damaged_graph_is_refused_by_the_onnx_predictor(unet, tmp_path):
    import shutil

    _, export_dir, _ = unet
    copy = shutil.copytree(export_dir, tmp_path / "copy")
    (copy / "model.onnx").write_bytes((copy / "model.onnx").read_bytes()[:-10])
    with pytest.raises(SegbenchError, match="sha256 differs"):
        load_onnx_predictor(copy)
    with pytest.raises(SegbenchError, match="not a segbench ONNX export"):
        load_onnx_predictor(tmp_path)


def test_cli_takes_the_threshold_from_the_argument_over_the_evaluation(unet, tmp_path, capsys):
    model_dir, _, _ = unet
    eval_dir = write_eval_dir(tmp_path / "eval" / "unet", model_dir)
    out = tmp_path / "exported"
    argv = ["export", str(model_dir), "--format", "onnx", "--out", str(out)]

    code, stdout, _ = run_cli([*argv, "--eval", str(eval_dir), "--threshold", "0.7"], capsys)

    assert code == 0 and stdout.startswith(f"export: wrote {out} (model.onnx ")
    assert stdout.count("\n") == 1 and "threshold 0.7 (argument)" in stdout
    decision = ExportCard.read(out).decision
    assert (decision.threshold, decision.threshold_source) == (0.7, "argument")
    assert (decision.min_area, decision.min_area_source) == (12, "evaluation")


def test_an_evaluation_of_another_model_is_refused(unet, tmp_path):
    model_dir, _, _ = unet
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    write_json(eval_dir / "metrics.json", example_metrics())
    card_of("attention_unet", small_params()).write(eval_dir)
    with pytest.raises(SegbenchError, match="evaluates another model"):
        export_onnx(model_dir, tmp_path / "out", eval_dir=eval_dir)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("out", "message"),
    [
        (lambda m: m, "holds or is inside the model"),
        (lambda m: m.parent, "holds or is inside the model"),
        (lambda m: m.parent.parent / "notes", "is not a segbench export"),
    ],
)
def test_the_out_folder_never_replaces_the_model_or_other_files(unet, out, message):
    model_dir, _, _ = unet
    target = out(model_dir)
    if target.name == "notes":
        target.mkdir(exist_ok=True)
        (target / "mine.txt").write_text("keep me")
    with pytest.raises(SegbenchError, match=message):
        export_onnx(model_dir, target)
    assert (model_dir / "weights.pt").is_file()
    assert target.name != "notes" or (target / "mine.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"opset": 11}, "--opset: 11 is not one torch.onnx writes here"),
        ({"overlap": 1.0}, "--overlap: a fraction of the tile"),
        ({"threshold": 1.5}, "--threshold: a probability in [0, 1]"),
    ],
)
def test_impossible_options_are_refused_before_anything_is_written(
    unet, tmp_path, options, message
):
    model_dir, _, _ = unet
    with pytest.raises(SegbenchError, match=re.escape(message)):
        export_onnx(model_dir, tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


def refused_cards():
    """``{case: card}`` of every kind of model that has no graph."""
    params = small_params(sam_decoder={"prompt": "box", "box_jitter": 0})
    cards = {
        name: card_of(name, params)
        for name in ("otsu", "sobel", "canny", "sam_point", "sam_points", "sam_box", "sam_auto")
    }
    cards["sam_decoder_box"] = card_of("sam_decoder", params)
    oracle_member = ensemble_card(small_params()).model_copy(
        update={
            "members": {"unet": card_of("unet", params), "sam_decoder": cards["sam_decoder_box"]}
        }
    )
    cards["ensemble_with_an_oracle_member"] = oracle_member
    return cards


REFUSED = {
    "otsu": "classical baseline",
    "sobel": "classical baseline",
    "canny": "classical baseline",
    "sam_point": "zero-shot SAM run with prompts drawn from each image's reference mask",
    "sam_points": "zero-shot SAM run with prompts drawn from each image's reference mask",
    "sam_box": "zero-shot SAM run with prompts drawn from each image's reference mask",
    "sam_auto": "zero-shot SAM run with the automatic mask generator",
    "sam_decoder_box": "takes its box prompts from each tile's reference mask",
    "ensemble_with_an_oracle_member": "ensemble ensemble: its member sam_decoder cannot be",
}


def test_models_without_a_graph_are_refused_in_one_line(tmp_path):
    for case, card in refused_cards().items():
        model_dir = tmp_path / case
        model_dir.mkdir()
        card.write(model_dir)  # the refusal comes from the card, before any weights are read
        with pytest.raises(SegbenchError) as info:
            export_onnx(model_dir)
        message = str(info.value)
        assert REFUSED[case] in message and "\n" not in message, case
        assert "segbench predict" in message or "prompt: none" in message, case
        assert not default_out_dir(model_dir).exists()


def test_cli_refuses_a_classical_model_with_one_line_and_exit_2(tmp_path, capsys):
    model_dir = tmp_path / "otsu"
    model_dir.mkdir()
    card_of("otsu", small_params()).write(model_dir)

    code, stdout, stderr = run_cli(["export", str(model_dir), "--format", "onnx"], capsys)

    assert code == 2 and stdout == ""
    assert stderr.startswith("error: otsu (otsu) is a classical baseline")
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    code, _, stderr = run_cli(["export", str(model_dir), "--format", "tflite"], capsys)
    assert code == 2 and "invalid choice: 'tflite'" in stderr


def test_a_threshold_for_a_model_of_several_classes_is_refused(tmp_path):
    model_dir = tmp_path / "unet"
    model_dir.mkdir()
    card_of("unet", small_params(), classes=["background", "a", "b"]).write(model_dir)
    with pytest.raises(SegbenchError, match="a threshold applies to two-class models only"):
        export_onnx(model_dir, threshold=0.5)


def _encoder_weights(folder: Path) -> str:
    import segmentation_models_pytorch as smp

    path = folder / "mit_b0.pth"
    torch.save(smp.encoders.get_encoder("mit_b0", in_channels=3, weights=None).state_dict(), path)
    return str(path)


# Every registered network that exports, one case each, with what makes it special.
EXPORTABLE = {
    "attention_unet": lambda root: card_of("attention_unet", small_params()),
    # RGB with ImageNet-pretrained encoder weights: the re-standardising pre-hook is in the graph.
    "segformer_rgb_imagenet": lambda root: card_of(
        "segformer",
        small_params(segformer={"encoder_weights": _encoder_weights(root)}),
        channels="rgb",
    ),
    "ensemble": lambda root: ensemble_card(small_params()),
    "unet_three_classes": lambda root: card_of(
        "unet", small_params(), classes=["background", "a", "b"]
    ),
    "sam_decoder": lambda root: card_of(
        "sam_decoder", small_params(sam_decoder={"embedding_cache": str(root / "cache")})
    ),
    "sam_lora": lambda root: card_of("sam_lora", small_params()),
}


@pytest.mark.slow  # 2-5 s each on 2 cores: an export, its check and two predictors
@pytest.mark.parametrize("case", list(EXPORTABLE))
def test_every_exportable_model_matches_torch(case, tmp_path):
    card = EXPORTABLE[case](tmp_path)
    model_dir = write_model_dir(tmp_path / "models", card)
    out = tmp_path / "exported"

    summary = export_onnx(model_dir, out)

    # The export bypasses SAM's embedding cache: it traces the encoder, and writes no file.
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.pt"))
    export = ExportCard.read(out)
    assert summary["max_abs_diff"] <= TOLERANCE
    assert_parity(model_dir, out)
    sam = case.startswith("sam_")
    assert summary["per_image"] is sam and export.input.shape[0] == (1 if sam else "batch")
    assert export.preprocess.imagenet_inside is (case == "segformer_rgb_imagenet")
    assert export.decision.threshold_source == ("default" if export.decision.threshold else None)
    if case == "unet_three_classes":
        assert export.output.activation == "softmax" and export.decision.threshold is None
        assert export.output.shape == ["batch", 3, "height", "width"]
    if case == "ensemble":
        assert export.source.members == ["unet", "segformer"]
        assert any("weights unet 0.6, segformer 0.4" in n for n in export.notes)
