"""SAM as a promptless segmenter: segbench's network convention, decoder-only or with LoRA."""

import numpy as np
import pytest
import torch

from segbench.config import parse_params
from segbench.errors import SegbenchError
from segbench.models import build_model
from segbench.sam.box_head import to_sam_frame
from segbench.sam.build import build_sam
from segbench.sam.segmenter import EMPTY_LOGIT, SamSegmenter
from tests.conftest import real_params_raw, shipped_entry


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_decoder_only_trains_the_mask_decoder_and_nothing_else():
    torch.manual_seed(0)
    model = build_model(shipped_entry("sam_decoder", image_size=256, embedding_cache=None))
    names = _trainable(model)
    assert names and all(n.startswith("sam.mask_decoder.") for n in names)
    # iou_loss_weight defaults to 1: the IoU head learns the decoder's mask quality too.
    assert any("iou_prediction_head" in n for n in names)


def test_lora_trains_its_factors_and_the_decoder():
    torch.manual_seed(0)
    model = build_model(shipped_entry("sam_lora", image_size=256, rank=2, blocks=[1]))
    names = _trainable(model)
    lora = {n for n in names if ".lora_" in n}
    assert lora == {
        f"sam.image_encoder.blocks.1.attn.qkv.lora_{ab}.{p}" for ab in "ab" for p in "qv"
    }
    assert all(n in lora or n.startswith("sam.mask_decoder.") for n in names)


def test_batches_decode_like_single_images_at_any_tile_shape():
    torch.manual_seed(0)
    model = build_model(shipped_entry("sam_decoder", image_size=256, embedding_cache=None)).eval()
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
    model = build_model(shipped_entry("sam_decoder", image_size=128, embedding_cache=None)).train()
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
    ],
)
def test_bad_sam_params_name_the_key(name, params, key):
    raw = real_params_raw()
    raw["models"][name].update(params)
    with pytest.raises(SegbenchError, match=key):
        parse_params(raw)


def test_a_missing_checkpoint_names_the_file():
    entry = shipped_entry("sam_decoder", checkpoint="/no/such/sam.pth", embedding_cache=None)
    with pytest.raises(SegbenchError, match=r"/no/such/sam\.pth does not exist"):
        build_model(entry)


def test_cached_embeddings_skip_the_encoder_and_change_nothing(tmp_path):
    from segbench.sam.cache import EmbeddingCache

    torch.manual_seed(0)
    plain = build_model(shipped_entry("sam_decoder", image_size=128, embedding_cache=None)).eval()
    cached = build_model(shipped_entry("sam_decoder", image_size=128, embedding_cache=None)).eval()
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
    other = build_sam("tiny", image_size=128, init_seed=1)
    assert EmbeddingCache(tmp_path / "cache", other.image_encoder).dir != cached.cache.dir
    # A damaged file is recomputed, not trusted.
    victim = next(cached.cache.dir.glob("*.pt"))
    victim.write_bytes(b"truncated")
    with torch.no_grad():
        torch.testing.assert_close(cached(x), expected)
    assert len(calls) == 2
    assert not list(cached.cache.dir.glob("*.tmp"))


def test_a_trainable_encoder_refuses_a_cache(tmp_path):
    model = build_model(shipped_entry("sam_lora", image_size=128, rank=2))
    with pytest.raises(ValueError, match="frozen image encoder"):
        model.use_cache(tmp_path)


@pytest.mark.slow
def test_trains_evaluates_and_predicts_through_the_pipeline_functions(tiny_data, tmp_path):
    """The promptless SAM goes through segbench's own training loop, sliding-window evaluation
    and predictor like any other network, its embeddings cached across epochs."""
    from segbench.config import parse_params
    from segbench.evaluate import evaluate
    from segbench.predict import load_predictor
    from segbench.training import train
    from tests.conftest import SHRINK, deep_update, only_models

    raw_dir, tiles, _ = tiny_data
    raw = only_models(deep_update(real_params_raw(), SHRINK), ["sam_decoder"])
    raw["models"]["sam_decoder"].update(image_size=128, embedding_cache=str(tmp_path / "cache"))
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


# --- Built directly (the registry passes only its own params): box prompts, the IoU head,
# trained-weights-only saving.


def _sam(seed: int = 0, image_size: int = 64, **kw) -> SamSegmenter:
    torch.manual_seed(seed)  # the frozen random encoder: the same seed rebuilds it
    return SamSegmenter(build_sam("tiny", image_size=image_size), **kw)


def _guide() -> torch.Tensor:
    """Two 64 px references: tile 0 empty, tile 1 with a 20 x 16 and a smaller 10 x 20 blob."""
    guide = torch.zeros(2, 1, 64, 64)
    guide[1, 0, 10:30, 12:28] = 1
    guide[1, 0, 40:50, 40:60] = 1
    return guide


EXACT_BOXES = [[12, 10, 27, 29], [40, 40, 59, 49]]  # XYXY, inclusive, largest first


def test_box_prompts_segment_prompted_tiles_and_leave_empty_ones_background():
    model = _sam(prompt="box").train()
    x, guide = torch.randn(2, 1, 64, 64), _guide()
    logits = model(x, guide)
    assert logits.shape == (2, 1, 64, 64)
    assert (logits[0] == EMPTY_LOGIT).all()  # no component, no prompt, no foreground
    aux = model.aux_loss
    assert aux.ndim == 0 and torch.isfinite(aux) and aux > 0
    (logits.mean() + aux).backward()
    decoder = model.sam.mask_decoder
    assert decoder.mask_tokens.weight.grad.abs().sum() > 0
    assert decoder.iou_prediction_head.layers[0].weight.grad.abs().sum() > 0
    # A batch with nothing to prompt: background everywhere, no IoU term, still differentiable.
    empty = model(x, torch.zeros_like(guide))
    assert (empty == EMPTY_LOGIT).all() and model.aux_loss.item() == 0
    empty.mean().backward()
    quiet = _sam(prompt="box", iou_loss_weight=0)
    quiet(x, guide)
    assert quiet.aux_loss.item() == 0


def test_a_box_prompt_decodes_like_segment_anythings_own_call():
    """One box per component, scaled from the 64 px tile to the 128 px encoder input, then
    SAM's prompt encoder and decoder; the union is the per-pixel max of the boxes' masks."""
    model = _sam(image_size=128, prompt="box").eval()
    x, guide = torch.randn(2, 1, 64, 64), _guide()
    with torch.no_grad():
        logits = model(x, guide)
        emb = model.embed(x[1:])[0]
        boxes = torch.tensor(EXACT_BOXES, dtype=torch.float32) * 2  # 128 / 64
        low, _ = model.decode(emb, boxes)
    expected = torch.nn.functional.interpolate(low, size=(64, 64), mode="bilinear").amax(0)
    torch.testing.assert_close(logits[1], expected)
    assert to_sam_frame(torch.tensor([[10.0, 20, 30, 40]]), (64, 32), 128).tolist() == [
        [40.0, 40, 120, 80]
    ]


def test_the_promptless_head_scores_its_mask_against_the_whole_reference():
    model = _sam().train()
    x, guide = torch.randn(2, 1, 64, 64), _guide()
    model(x, guide)
    assert torch.isfinite(model.aux_loss) and model.aux_loss > 0
    model(x)  # unlabelled tiles: no IoU to learn from
    assert model.aux_loss.item() == 0


def test_the_box_prompted_sam_needs_a_reference():
    with pytest.raises(SegbenchError, match="prompt"):
        _sam(prompt="box")(torch.randn(1, 1, 64, 64))


def test_boxes_are_jittered_in_training_only_and_reproducibly():
    model = _sam(prompt="box", box_jitter=3)
    x, guide = torch.randn(2, 1, 64, 64), _guide()
    model.eval()
    exact = model.prompt_boxes(guide)
    assert len(exact[0]) == 0 and exact[1].tolist() == EXACT_BOXES
    with torch.no_grad():
        assert torch.equal(model(x, guide), model(x, guide))
    model.train()
    first, second = model.prompt_boxes(guide)[1], model.prompt_boxes(guide)[1]
    assert not np.array_equal(first, second)
    assert np.abs(first - exact[1]).max() <= 3 and np.abs(second - exact[1]).max() <= 3
    again = _sam(prompt="box", box_jitter=3).train()
    np.testing.assert_array_equal(again.prompt_boxes(guide)[1], first)


def test_what_trains():
    for weight, iou_trains in ((1.0, True), (0.0, False)):
        names = _trainable(_sam(prompt="box", iou_loss_weight=weight))
        assert names and all(n.startswith("sam.mask_decoder.") for n in names)
        assert any(".iou_prediction_head." in n for n in names) == iou_trains
    names = _trainable(_sam(train_encoder=True))
    assert any(n.startswith("sam.image_encoder.") for n in names)
    assert not any(n.startswith("sam.prompt_encoder.") for n in names)


def test_trained_weights_round_trip_and_refuse_another_configuration(tmp_path):
    model = _sam(prompt="box").eval()
    with torch.no_grad():  # as if trained: differ from the initial weights
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    state = model.trained_state_dict()
    assert any(k.startswith("sam.mask_decoder.") for k in state)
    assert not any(k.startswith(("sam.image_encoder.", "sam.prompt_encoder.")) for k in state)
    torch.save(state, tmp_path / "weights.pt")
    loaded = torch.load(tmp_path / "weights.pt", weights_only=True)
    fresh = _sam(prompt="box").eval()
    x, guide = torch.randn(2, 1, 64, 64), _guide()
    with torch.no_grad():
        expected = model(x, guide)
        assert not torch.equal(fresh(x, guide), expected)
        fresh.load_trained_state_dict(loaded)
        assert torch.equal(fresh(x, guide), expected)
    with pytest.raises(SegbenchError, match=r"differently configured.*iou_prediction_head"):
        _sam(prompt="box", iou_loss_weight=0).load_trained_state_dict(loaded)
    short = dict(loaded)
    del short["sam.mask_decoder.mask_tokens.weight"]
    with pytest.raises(SegbenchError, match=r"missing keys.*mask_tokens"):
        fresh.load_trained_state_dict(short)
    wrong = {**loaded, "sam.mask_decoder.mask_tokens.weight": torch.zeros(2, 2)}
    with pytest.raises(SegbenchError, match="other shapes"):
        fresh.load_trained_state_dict(wrong)


def test_lora_factors_are_saved_and_merge_without_changing_outputs():
    from segbench.sam.lora import apply_lora

    model = _sam(prompt="box").eval()
    apply_lora(model.sam, rank=2)
    state = model.trained_state_dict()
    encoder_keys = {k for k in state if k.startswith("sam.image_encoder.")}
    assert encoder_keys and all(".lora_a." in k or ".lora_b." in k for k in encoder_keys)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_b." in name:
                p.normal_(0, 0.1)  # zero-initialised: make the update count
    x, guide = torch.randn(2, 1, 64, 64), _guide()
    with torch.no_grad():
        before = model(x, guide)
        assert model.prepare_for_inference() is model
        after = model(x, guide)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    with pytest.raises(SegbenchError, match="before prepare_for_inference"):
        model.load_trained_state_dict(model.trained_state_dict())


def test_cached_embeddings_serve_box_prompts_too(tmp_path):
    plain = _sam(prompt="box").eval()
    cached = _sam(prompt="box").eval()
    cached.use_cache(tmp_path / "cache")
    x, guide = torch.randn(2, 1, 64, 64), _guide()
    with torch.no_grad():
        expected = plain(x, guide)
        torch.testing.assert_close(cached(x, guide), expected)
        torch.testing.assert_close(cached(x, guide), expected)
    assert (cached.cache.hits, cached.cache.misses) == (2, 2)


def test_a_few_box_prompted_steps_reduce_the_sam_loss():
    """20 x focal + Dice (the SAM paper's recipe) plus the IoU term, on one blob tile."""
    from segbench.losses import build_loss

    model = _sam(prompt="box", box_jitter=2).train()
    x = torch.randn(1, 1, 64, 64)
    y = _guide()[1:]
    loss_fn = build_loss("focal_dice")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = loss_fn(model(x, y), y) + model.aux_loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
