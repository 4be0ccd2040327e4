"""Cost figures that do not depend on what ran before: SAM's embedding cache bypassed while
inference is timed (:meth:`Predictor.cache_off`), and the time spent filling it during training
reported apart (``TrainingSummary.cache_seconds``)."""

import mlflow
import numpy as np
import pytest
import torch

from segbench.config import parse_params
from segbench.cost import cache_fill_seconds, embedding_caches
from segbench.modelcard import ModelCard
from segbench.models.ensemble import Ensemble
from segbench.predict import Predictor, build_from_card
from segbench.training import train
from segbench.training.fit import model_card
from tests.conftest import SHRINK, deep_update, raw_entry, real_params_raw

TINY = {"variant": "tiny", "image_size": 64}
CPU = torch.device("cpu")


def _params(models: dict, **train_changes):
    """The shrunk params with only ``models`` (``{name: (shipped entry, changes)}``)."""
    raw = deep_update(real_params_raw(), SHRINK)
    raw["models"] = {name: raw_entry(base, **TINY, **kw) for name, (base, kw) in models.items()}
    raw["ensembles"] = {}
    raw["sweep"]["enabled"] = False
    raw["train"].update(train_changes)
    return parse_params(raw)


def _predictor(base: str, cache_dir, **changes) -> Predictor:
    """An untrained Predictor of the shipped ``base`` SAM entry (tiny, 64 px) on the CPU, its
    embeddings cached under ``cache_dir``; the random weights are seeded."""
    params = _params({base: (base, {"embedding_cache": str(cache_dir), **changes})})
    card = model_card(base, params, "test")
    torch.manual_seed(0)
    model = build_from_card(card).to(CPU)
    if card.kind == "torch":
        model.eval()
    return Predictor(model, card, overlap=0.5, batch_size=4, device=CPU)


def _image_and_reference(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A (96, 128) uint8 image with two bright blobs, and their (96, 128) {0, 1} mask."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((96, 128), dtype=np.uint8)
    mask[20:50, 30:70] = 1
    mask[60:80, 90:120] = 1
    image = (rng.integers(0, 60, mask.shape) + 150 * mask).astype(np.uint8)
    return image, mask


def _files(root) -> list:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _encoder_calls(sam) -> list:
    calls: list = []
    sam.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    return calls


def test_zero_shot_sam_bypasses_its_cache_inside_cache_off_and_uses_it_after(tmp_path):
    root = tmp_path / "cache"
    predictor = _predictor("sam_points", root)  # points_curve: the clicks curve too
    (cache,) = embedding_caches(predictor.model)
    calls = _encoder_calls(predictor.model.sam)
    image, mask = _image_and_reference()

    predictor.warmup()  # a real forward, and its synthetic image never enters the cache
    assert len(calls) == 1 and (cache.hits, cache.misses) == (0, 0) and not _files(root)
    with predictor.cache_off():
        off = predictor.predict_proba(image, mask, image_id="a")
        curve = predictor.predict_points_curve(image, mask, image_id="a")  # same embedding
        again = predictor.predict_proba(image, mask, image_id="a")  # embedded afresh
    assert len(calls) == 3
    assert (cache.hits, cache.misses) == (0, 0) and not _files(root)
    assert len(curve) == 3 and off.shape == mask.shape and 0 < off.mean() < 1

    cold = predictor.predict_proba(image, mask, image_id="a")
    warm = predictor.predict_proba(image, mask, image_id="a")
    assert (cache.hits, cache.misses) == (1, 1) and len(_files(root)) == 1
    assert len(calls) == 4  # the warm prediction read the embedding from disk
    for with_cache in (cold, warm, again):
        np.testing.assert_array_equal(with_cache, off)


def test_a_cached_sam_segmenter_predicts_the_same_with_its_cache_off(tmp_path):
    root = tmp_path / "cache"
    predictor = _predictor("sam_decoder", root)
    (cache,) = embedding_caches(predictor.model)
    calls = _encoder_calls(predictor.model.sam)
    image, _ = _image_and_reference()

    predictor.warmup()
    with predictor.cache_off():
        off = predictor.predict_proba(image)
    assert (cache.hits, cache.misses) == (0, 0) and not _files(root)
    n_windows = len(calls) - 1  # the encoder ran on this image's windows, once each batch
    assert n_windows >= 1 and cache.fill_seconds == 0

    cold = predictor.predict_proba(image)
    misses = cache.misses
    assert misses >= 1 and cache.hits == 0 and len(_files(root)) == misses
    assert cache.fill_seconds > 0
    warm = predictor.predict_proba(image)
    assert (cache.hits, cache.misses) == (misses, misses)
    assert len(calls) == 2 * n_windows + 1  # the warm one ran no encoder
    # Probabilities, not 0/1 masks: equal to float precision whichever way they came.
    assert off.std() > 0
    np.testing.assert_allclose(cold, off, atol=1e-6)
    np.testing.assert_allclose(warm, off, atol=1e-6)


def test_cache_off_reaches_an_ensembles_members_and_ignores_models_without_a_cache(tmp_path):
    first = _predictor("sam_decoder", tmp_path / "a").model
    second = _predictor("sam_decoder", tmp_path / "b").model
    mix = Ensemble({"a": first, "b": second}, [0.5, 0.5])
    assert embedding_caches(mix) == [first.cache, second.cache]
    assert embedding_caches(torch.nn.Conv2d(1, 1, 3)) == [] and cache_fill_seconds(mix) == 0.0
    first.cache.enabled = False  # already off: cache_off leaves it as it found it
    predictor = Predictor(mix, _card_of(), overlap=0.5, batch_size=4, device=CPU)
    with predictor.cache_off():
        assert not first.cache.enabled and not second.cache.enabled
    assert (first.cache.enabled, second.cache.enabled) == (False, True)


def _card_of() -> ModelCard:
    params = _params({"sam_decoder": ("sam_decoder", {"embedding_cache": None})})
    return model_card("sam_decoder", params, "test")


@pytest.mark.parametrize("cached", [True, False])
def test_training_reports_the_time_spent_filling_the_cache(tiny_data, tmp_path, cached):
    _, tiles, _ = tiny_data
    cache = str(tmp_path / "cache") if cached else None
    params = _params(
        {"sam_decoder": ("sam_decoder", {"embedding_cache": cache})},
        epochs=1,
        optimizer="adamw",
        lr=1e-3,
    )
    out = tmp_path / "model"
    metrics = train("sam_decoder", params, tiles, out)
    summary = ModelCard.read(out).training
    assert summary.cache_seconds == metrics["cache_seconds"]
    if cached:
        assert 0 < summary.cache_seconds <= summary.seconds
    else:
        assert summary.cache_seconds == 0
    run = mlflow.MlflowClient().get_run(ModelCard.read(out).mlflow_run_id)
    assert run.data.metrics["cache_seconds"] == pytest.approx(summary.cache_seconds)
