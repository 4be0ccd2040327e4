"""SAM as a promptless segmenter: segbench's network convention, decoder-only or with LoRA."""

import pytest
import torch

from segbench.errors import SegbenchError
from segbench.models import build_model


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_decoder_only_trains_the_mask_decoder_and_nothing_else():
    torch.manual_seed(0)
    model = build_model("sam_decoder", image_size=256, embedding_cache=None)
    names = _trainable(model)
    assert names and all(n.startswith("sam.mask_decoder.") for n in names)
    assert not any("iou_prediction_head" in n for n in names)  # no IoU without a prompt


def test_lora_trains_its_factors_and_the_decoder():
    torch.manual_seed(0)
    model = build_model("sam_lora", image_size=256, rank=2, blocks=[1])
    names = _trainable(model)
    lora = {n for n in names if ".lora_" in n}
    assert lora == {
        f"sam.image_encoder.blocks.1.attn.qkv.lora_{ab}.{p}" for ab in "ab" for p in "qv"
    }
    assert all(n in lora or n.startswith("sam.mask_decoder.") for n in names)


def test_batches_decode_like_single_images_at_any_tile_shape():
    torch.manual_seed(0)
    model = build_model("sam_decoder", image_size=256, embedding_cache=None).eval()
    x = torch.randn(3, 1, 64, 96)
    with torch.no_grad():
        batch = model(x)
        single = model(x[1:2])
    assert batch.shape == (3, 1, 64, 96)
    torch.testing.assert_close(batch[1:2], single, atol=1e-5, rtol=1e-4)


def test_the_decoder_learns_a_toy_mask():
    """A random-weight encoder's features still carry position (SAM adds a positional
    encoding), so the decoder alone can learn a fixed square."""
    torch.manual_seed(0)
    model = build_model("sam_decoder", image_size=128, embedding_cache=None).train()
    x = torch.randn(2, 1, 64, 64)
    target = torch.zeros(2, 1, 64, 64)
    target[:, :, 16:48, 16:48] = 1
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # 0.56 is the loss of predicting the foreground fraction everywhere: below it, the decoder
    # has learned where the square is, not just how big it is.
    assert losses[-1] < 0.45 < losses[0]


@pytest.mark.parametrize(
    ("name", "params", "key"),
    [
        ("sam_decoder", {"image_size": 500}, r"models\.sam_decoder\.image_size.*multiple of"),
        ("sam_decoder", {"variant": "vit_x"}, r"models\.sam_decoder\.variant"),
        ("sam_lora", {"rank": 0}, r"models\.sam_lora\.rank"),
        ("sam_lora", {"targets": ["q", "o"]}, r"models\.sam_lora\.targets"),
        ("sam_lora", {"embedding_cache": "c"}, r"models\.sam_lora\.embedding_cache.*LoRA trains"),
        (
            "sam_decoder",
            {"checkpoint": "/no/such/sam.pth", "embedding_cache": None},
            r"/no/such/sam\.pth does not exist",
        ),
    ],
)
def test_bad_sam_params_name_the_key(name, params, key):
    with pytest.raises(SegbenchError, match=key):
        build_model(name, **params)


def test_cached_embeddings_skip_the_encoder_and_change_nothing(tmp_path):
    from segbench.sam.cache import EmbeddingCache

    torch.manual_seed(0)
    plain = build_model("sam_decoder", image_size=128, embedding_cache=None).eval()
    cached = build_model("sam_decoder", image_size=128, embedding_cache=None).eval()
    cached.load_state_dict(plain.state_dict())
    cached.use_cache(tmp_path / "cache")
    calls = []
    cached.sam.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        expected = plain(x)
        first, second = cached(x), cached(x)
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(second, expected)
    assert len(calls) == 1 and (cached.cache.hits, cached.cache.misses) == (2, 2)
    # Other encoder weights (another checkpoint, another seed) never read these files.
    torch.manual_seed(1)
    other = build_model("sam_decoder", image_size=128, embedding_cache=None)
    assert EmbeddingCache(tmp_path / "cache", other.sam.image_encoder).dir != cached.cache.dir
    # A damaged file is recomputed, not trusted.
    victim = next(cached.cache.dir.glob("*.pt"))
    victim.write_bytes(b"truncated")
    with torch.no_grad():
        torch.testing.assert_close(cached(x), expected)
    assert len(calls) == 2
    assert not list(cached.cache.dir.glob("*.tmp"))


def test_a_trainable_encoder_refuses_a_cache(tmp_path):
    model = build_model("sam_lora", image_size=128, rank=2)
    with pytest.raises(ValueError, match="frozen image encoder"):
        model.use_cache(tmp_path)


@pytest.mark.slow
def test_trains_evaluates_and_predicts_through_the_pipeline_functions(tiny_data, tmp_path):
    """The promptless SAM goes through segbench's own training loop, sliding-window evaluation
    and predictor like any other network, its embeddings cached across epochs."""
    from segbench.config import parse_params
    from segbench.evaluate import evaluate
    from segbench.predict import load_predictor
    from segbench.train import train
    from tests.conftest import SHRINK, deep_update, real_params_raw

    raw_dir, tiles, _ = tiny_data
    raw = deep_update(real_params_raw(), SHRINK)
    block = {"image_size": 128, "embedding_cache": str(tmp_path / "cache")}
    raw["models"], raw["ensembles"] = {"sam_decoder": block}, {}
    raw["train"].update(epochs=2, lr=1e-3, optimizer="adamw")
    params = parse_params(raw)
    out = tmp_path / "models" / "sam_decoder"
    metrics = train("sam_decoder", params, tiles, out)
    assert metrics["epochs_run"] == 2
    assert 0 < metrics["params_trainable"] < metrics["params_total"]  # the encoder is frozen
    assert list((tmp_path / "cache").rglob("*.pt"))  # epoch 2 read what epoch 1 wrote
    test = evaluate(out, params, raw_dir, tmp_path / "eval")
    assert test["n_images"] >= 1 and 0 <= test["dice"] <= 1
    predictor = load_predictor(out)
    assert predictor.kind == "torch"
