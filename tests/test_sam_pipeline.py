"""Segment Anything inside segbench's pipeline functions: params entries with `model:`, zero-shot
prompt modes as train@/evaluate@ models, trained-only weights, oracle and random-init notes."""

import pytest
import torch
from torch.utils.data import DataLoader

from segbench.config import parse_params
from segbench.data.dataset import TileDataset
from segbench.errors import SegbenchError
from segbench.evaluate import evaluate
from segbench.io import read_csv, read_json
from segbench.losses import build_loss
from segbench.modelcard import ModelCard
from segbench.predict import load_predictor
from segbench.training import train
from segbench.training.loop import validate
from tests.conftest import DROP, SHRINK, deep_update, raw_entry, real_params_raw

TINY = {"variant": "tiny", "image_size": 64}


def _params(models: dict, **train):
    """The shrunk params with only ``models`` (``{name: (shipped entry, changes)}``)."""
    raw = deep_update(real_params_raw(), SHRINK)
    raw["models"] = {
        name: raw_entry(base, **({**TINY, **kw} if base.startswith("sam_") else kw))
        for name, (base, kw) in models.items()
    }
    raw["ensembles"] = {}
    raw["sweep"]["enabled"] = False  # it sweeps sam_lora, which may not be here
    raw["train"].update(train)
    return parse_params(raw)


def test_entries_name_their_registered_model():
    params = _params(
        {
            "sam_box": ("sam_box", {}),
            "unet_small": ("unet", {"decoder_channels": [16, 16, 16, 16, 16]}),
            "unet": ("unet", {"model": DROP}),
        }
    )
    assert params.models["sam_box"].model == "sam_zero_shot"
    assert params.models["unet_small"].model == "unet" == params.models["unet"].model
    assert params.models["sam_box"].prompt == "box"
    assert params.models["unet_small"].decoder_channels == (16,) * 5


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ({"sam_box": ("sam_box", {"model": "sam_zeroshot"})}, r"sam_box\.model: unknown model"),
        ({"sam_box": ("sam_box", {"prompt": "lasso"})}, r"models\.sam_box\.prompt"),
        ({"sam_lora": ("sam_lora", {"rank": 0})}, r"models\.sam_lora\.rank"),
        ({"sam_decoder": ("sam_decoder", {"image_size": 500})}, r"image_size.*multiple"),
        ({"sam_auto": ("sam_auto", {"auto": {"points_per_side": 0}})}, "points_per"),
    ],
)
def test_bad_sam_entries_name_the_key(models, message):
    with pytest.raises(SegbenchError, match=message):
        _params(models)


def test_an_oracle_model_cannot_join_an_ensemble():
    raw = deep_update(real_params_raw(), SHRINK)
    decoder = raw_entry("sam_decoder", prompt="box", box_jitter=0, **TINY)
    raw["models"] = {"unet": raw_entry("unet"), "sam_decoder": decoder}
    raw["ensembles"] = {"mix": {"members": ["unet", "sam_decoder"], "weights": None}}
    raw["ensembles"]["mix"]["weight_step"] = 0.1
    raw["sweep"]["enabled"] = False
    with pytest.raises(SegbenchError, match="sam_decoder takes its prompts from the reference"):
        parse_params(raw)


@pytest.mark.slow
def test_zero_shot_modes_train_and_evaluate_sharing_embeddings(tiny_data, tmp_path):
    raw_dir, tiles, _ = tiny_data
    cache = str(tmp_path / "cache")
    auto = raw_entry("sam_auto")["auto"] | {"points_per_side": 4, "min_mask_region_area": 4}
    models = {
        "sam_point": ("sam_point", {"embedding_cache": cache}),
        "sam_box": ("sam_box", {"embedding_cache": cache}),
        "sam_auto": ("sam_auto", {"auto": auto, "embedding_cache": None}),
    }
    params = _params(models)
    results = {}
    for name in models:
        out = tmp_path / "models" / name
        summary = train(name, params, tiles, out)
        assert summary["params_trainable"] == 0 < summary["params_total"]
        assert summary["random_init"] is True
        assert summary["oracle_prompts"] is (name != "sam_auto")
        assert not (out / "weights.pt").exists()  # nothing trained, nothing saved
        card = ModelCard.read(out)
        assert (card.entry.model, card.name) == ("sam_zero_shot", name)
        results[name] = evaluate(out, params, raw_dir, tmp_path / "eval" / name)
        # The DVC metrics file carries the notes too, so the numbers never travel without them.
        saved = read_json(tmp_path / "eval" / name / "metrics.json")
        assert (saved["oracle_prompts"], saved["random_init"]) == (name != "sam_auto", True)
        rows = read_csv(tmp_path / "eval" / name / "per_image.csv")
        assert len(rows) == results[name]["n_images"] >= 1
    # Both oracle stages embedded the same validation images at the same size: one file each.
    # The test images are timed with the cache off (no row's speed depends on another's
    # cache), so they leave no file.
    n_val = results["sam_point"]["n_val_images"]
    assert n_val >= 1 and len(list((tmp_path / "cache").rglob("*.pt"))) == n_val


def test_an_oracle_model_needs_reference_masks(tiny_data, tmp_path):
    _, tiles, _ = tiny_data
    params = _params({"sam_box": ("sam_box", {"embedding_cache": None})})
    train("sam_box", params, tiles, tmp_path / "m")
    predictor = load_predictor(tmp_path / "m")
    image = torch.zeros(40, 60, dtype=torch.uint8).numpy()
    with pytest.raises(SegbenchError, match="oracle prompts"):
        predictor.predict_proba(image)


@pytest.mark.slow
def test_fine_tuned_sam_saves_only_what_it_trained_and_reloads_identically(tiny_data, tmp_path):
    raw_dir, tiles, _ = tiny_data
    models = {
        "sam_decoder": ("sam_decoder", {"embedding_cache": None}),
        "sam_lora": ("sam_lora", {"rank": 2}),
        "sam_decoder_box": (
            "sam_decoder",
            {"prompt": "box", "box_jitter": 2, "embedding_cache": str(tmp_path / "cache")},
        ),
    }
    params = _params(models, epochs=1, optimizer="adamw", lr=1e-3)
    val = DataLoader(TileDataset.from_dir(tiles, "val"), batch_size=params.train.batch_size)
    for name in models:
        out = tmp_path / name
        summary = train(name, params, tiles, out)
        state = torch.load(out / "weights.pt", weights_only=True)
        assert not any(k.startswith("sam.image_encoder.") and ".lora_" not in k for k in state)
        assert sum(v.numel() for v in state.values()) == summary["params_trainable"]
        assert summary["oracle_prompts"] is (name == "sam_decoder_box")
        # Reloaded from the (seeded) random base plus the saved weights (LoRA merged), the
        # model predicts the way validation saw it: the same score on the same tiles.
        predictor = load_predictor(out, device=torch.device("cpu"))
        assert predictor.oracle is (name == "sam_decoder_box")
        again = validate(predictor.model, val, build_loss("dice"), torch.device("cpu"))
        assert again.score == pytest.approx(summary["best_val_score"], abs=2e-3)
        assert again.dice == pytest.approx(summary["best_val_dice"], abs=2e-3)
        metrics = evaluate(out, params, raw_dir, tmp_path / "eval" / name)
        assert 0 <= metrics["dice"] <= 1


class _RunsCode:
    def __reduce__(self):
        return (print, ("this pickle ran code",))


@pytest.mark.parametrize("problem", ["missing", "code", "truncated"])
def test_a_bad_checkpoint_stops_train_with_one_line_and_no_output(
    problem, tiny_data, tmp_path, capsys
):
    import yaml

    from segbench.cli import main

    _, tiles, _ = tiny_data
    ckpt = tmp_path / "sam_vit_b.pth"
    if problem == "code":
        torch.save({"weights": _RunsCode()}, ckpt)
    elif problem == "truncated":
        torch.save({"image_encoder.pos_embed": torch.zeros(1, 4, 4, 8)}, ckpt)
        ckpt.write_bytes(ckpt.read_bytes()[:200])
    raw = deep_update(real_params_raw(), SHRINK)
    raw["models"] = {"sam_box": raw_entry("sam_box", checkpoint=str(ckpt), **TINY)}
    raw["ensembles"] = {}
    raw["sweep"]["enabled"] = False  # it sweeps sam_lora, which is not here
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    out = tmp_path / "models" / "sam_box"
    argv = ["train", "sam_box", "--tiles", str(tiles), "--out", str(out)]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--params", str(params_file)])
    captured = capsys.readouterr()
    assert info.value.code == 2
    assert str(ckpt) in captured.err and "Traceback" not in captured.err
    assert "this pickle ran code" not in captured.out + captured.err
    assert {"missing": "does not exist", "code": "refused", "truncated": "cannot be read"}[
        problem
    ] in captured.err
    assert not out.exists()
