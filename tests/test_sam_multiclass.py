"""SAM's promptless decoder with one mask token per class (SAMed), on grey and RGB tiles."""

import copy

import pytest
import torch
from torch.nn import CrossEntropyLoss

from segbench.classes import IGNORE
from segbench.errors import SegbenchError
from segbench.models import build_model
from segbench.sam.build import build_sam, class_token_sources, multiclass_decoder
from segbench.sam.lora import apply_lora, lora_modules
from segbench.sam.segmenter import CLASSES_KEY, SamSegmenter, class_iou
from tests.conftest import shipped_entry

SIZE = 64  # the encoder's input and the tiles' size: a 4 x 4 token grid


@pytest.fixture(scope="module")
def base():
    return build_sam("tiny", image_size=SIZE, init_seed=0)


def _model(base, num_classes: int, **kw) -> SamSegmenter:
    return SamSegmenter(copy.deepcopy(base).train(), num_classes=num_classes, **kw)


def _target(n: int = 2) -> torch.Tensor:
    """(n, 64, 64) int64: class 0 around a square of class 1 beside one of class 2, and a strip
    of ignored pixels."""
    y = torch.zeros(n, SIZE, SIZE, dtype=torch.int64)
    y[:, 8:32, 8:32] = 1
    y[:, 36:56, 30:60] = 2
    y[:, :, :4] = IGNORE
    return y


def test_token_sources_start_from_the_single_mask_token_then_cycle():
    assert class_token_sources(3) == [0, 1, 2]
    assert class_token_sources(6) == [0, 1, 2, 3, 1, 2]


@pytest.mark.parametrize("num_classes", [3, 4])
def test_one_mask_token_per_class_and_logits_per_class(base, num_classes):
    model = _model(base, num_classes).eval()
    dec = model.sam.mask_decoder
    assert dec.mask_tokens.weight.shape[0] == num_classes == dec.num_mask_tokens
    assert len(dec.output_hypernetworks_mlps) == num_classes
    assert dec.iou_prediction_head.layers[-1].out_features == num_classes
    for channels in (1, 3):
        with torch.no_grad():
            out = model(torch.randn(2, channels, 48, SIZE))
        assert out.shape == (2, num_classes, 48, SIZE)
        assert model.aux_loss.item() == 0  # no reference: no IoU loss
    assert all(p.requires_grad for p in dec.parameters())
    # The base (the "checkpoint") keeps its four-token decoder.
    assert base.mask_decoder.num_mask_tokens == 4


def test_class_tokens_start_from_the_loaded_checkpoint(base, tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(base.state_dict(), path)
    sam = build_sam("tiny", image_size=SIZE, checkpoint=path)
    old = base.mask_decoder
    new = SamSegmenter(sam, num_classes=5).sam.mask_decoder
    for c, s in enumerate(class_token_sources(5)):
        torch.testing.assert_close(new.mask_tokens.weight[c], old.mask_tokens.weight[s])
        for a, b in zip(
            new.output_hypernetworks_mlps[c].parameters(),
            old.output_hypernetworks_mlps[s].parameters(),
            strict=True,
        ):
            torch.testing.assert_close(a, b)
        head, old_head = new.iou_prediction_head.layers[-1], old.iou_prediction_head.layers[-1]
        torch.testing.assert_close(head.weight[c], old_head.weight[s])
        torch.testing.assert_close(head.bias[c], old_head.bias[s])
    torch.testing.assert_close(new.transformer.state_dict(), old.transformer.state_dict())


def test_multiclass_decoder_draws_no_random_numbers(base):
    torch.manual_seed(3)
    multiclass_decoder(base.mask_decoder, 7)
    after = torch.rand(1)
    torch.manual_seed(3)
    assert torch.equal(after, torch.rand(1))


def test_a_few_steps_lower_the_multiclass_loss(base):
    torch.manual_seed(0)
    model = _model(base, 3)
    x, y = torch.randn(2, 3, SIZE, SIZE), _target()
    loss_fn = CrossEntropyLoss(ignore_index=IGNORE)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = loss_fn(model(x, y), y) + model.aux_loss
        loss.backward()
        opt.step()
        losses.append(loss_fn(model(x, y), y).item())
    assert losses[-1] < 0.8 * losses[0]


def test_class_iou_leaves_ignored_pixels_out():
    pred = torch.tensor([[[0, 1, 1, 2]]])
    target = torch.tensor([[[0, 1, IGNORE, 0]]])
    # class 0: {0} vs {0, 3}: 1/2; class 1: {1} (pixel 2 ignored) vs {1}: 1; class 2: {3} vs {}.
    iou = class_iou(pred, target, 4)
    torch.testing.assert_close(iou, torch.tensor([[0.5, 1.0, 0.0, 1.0]]))
    torch.testing.assert_close(class_iou(pred, target[:, None], 4), iou)


def test_iou_loss_is_finite_and_ignores_ignored_pixels(base):
    torch.manual_seed(0)
    model = _model(base, 3).eval()
    x = torch.randn(2, 1, SIZE, SIZE)
    with torch.no_grad():
        own = model(x).argmax(1)  # a reference the prediction matches exactly: IoU 1 per class

        def aux(y):
            model(x, y)
            return model.aux_loss.item()

        holes = own.clone()
        holes[:, 10:30, 10:30] = IGNORE
        wrong = own.clone()
        wrong[:, 10:30, 10:30] = (own[:, 10:30, 10:30] + 1) % 3
        assert torch.isfinite(torch.tensor(aux(_target())))
        assert aux(holes) == aux(own) == aux(torch.full_like(own, IGNORE))
        assert aux(wrong) != aux(own)
        model.iou_loss_weight = 0.0
        assert aux(wrong) == 0


def test_rgb_tiles_reach_sam_as_rgb(base):
    torch.manual_seed(0)
    model = _model(base, 3).eval()
    grey = torch.randn(1, 1, SIZE, SIZE)
    rgb = torch.cat([grey, torch.randn(1, 2, SIZE, SIZE)], dim=1)
    sam_in = model.to_sam_input(rgb)
    unit = rgb * 0.25 + 0.5
    expected = (unit * 255 - model.sam.pixel_mean) / model.sam.pixel_std
    torch.testing.assert_close(sam_in, expected)  # channels in order, none dropped
    with torch.no_grad():
        assert not torch.allclose(model(rgb), model(grey))
        torch.testing.assert_close(model(grey.expand(-1, 3, -1, -1)), model(grey))
    with pytest.raises(SegbenchError, match=r"grey or .* RGB"):
        model.to_sam_input(torch.randn(1, 2, SIZE, SIZE))


def test_grey_and_rgb_of_the_same_pixels_are_cached_apart(base, tmp_path):
    model = _model(base, 3).eval()
    model.use_cache(tmp_path)
    grey = torch.randn(1, 1, SIZE, SIZE)
    colour = torch.cat([grey, grey.flip(-1), grey.flip(-2)], dim=1)
    with torch.no_grad():
        first = [model(t) for t in (grey, grey.expand(-1, 3, -1, -1), colour)]
        again = [model(t) for t in (grey, grey.expand(-1, 3, -1, -1), colour)]
    assert (model.cache.misses, model.cache.hits) == (3, 3)
    assert len(list(model.cache.dir.glob("*.pt"))) == 3
    for a, b in zip(first, again, strict=True):
        torch.testing.assert_close(a, b)
    assert not torch.allclose(first[0], first[2])


def test_trained_state_round_trips(base, tmp_path):
    torch.manual_seed(0)
    model = _model(base, 3)
    x, y = torch.randn(1, 3, SIZE, SIZE), _target(1)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    CrossEntropyLoss(ignore_index=IGNORE)(model(x, y), y).backward()
    opt.step()
    state = model.trained_state_dict()
    assert int(state[CLASSES_KEY]) == 3
    assert state["sam.mask_decoder.mask_tokens.weight"].shape[0] == 3
    torch.save(state, tmp_path / "w.pt")
    fresh = _model(base, 3)
    fresh.load_trained_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), model.eval()(x))


@pytest.mark.parametrize(("saved", "asked"), [(2, 3), (3, 2), (2, 4), (4, 3)])
def test_another_class_count_is_named_not_a_size_mismatch(base, saved, asked):
    state = _model(base, saved).trained_state_dict()
    with pytest.raises(SegbenchError, match=f"trained for {saved} classes, asked for {asked}"):
        _model(base, asked).load_trained_state_dict(state)


def test_box_prompts_and_fewer_than_two_classes_are_refused(base):
    with pytest.raises(SegbenchError, match="prompt: none"):
        _model(base, 3, prompt="box")
    with pytest.raises(SegbenchError, match="num_classes"):
        _model(base, 1)


def test_the_registry_builds_multiclass_decoder_and_lora_entries():
    for name, kw in [("sam_decoder", {"embedding_cache": None}), ("sam_lora", {"rank": 2})]:
        model = build_model(shipped_entry(name, image_size=SIZE, **kw), num_classes=3).eval()
        with torch.no_grad():
            assert model(torch.randn(1, 3, SIZE, SIZE)).shape == (1, 3, SIZE, SIZE)


def test_lora_on_a_multiclass_segmenter_trains_and_merges(base):
    torch.manual_seed(0)
    model = _model(base, 4)
    apply_lora(model.sam, rank=2, blocks=[1])
    x, y = torch.randn(2, 3, SIZE, SIZE), _target()
    loss_fn = CrossEntropyLoss(ignore_index=IGNORE)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        (loss_fn(model(x, y), y) + model.aux_loss).backward()
        opt.step()
    factors = [b for m in lora_modules(model.sam).values() for b in m.lora_b.values()]
    assert all(b.abs().sum() > 0 for b in factors)  # the encoder's adapters learned
    state = model.trained_state_dict()
    assert any(".lora_b." in k for k in state) and int(state[CLASSES_KEY]) == 4
    model.eval()
    with torch.no_grad():
        before = model(x)
        after = model.prepare_for_inference()(x)
    assert after.shape == (2, 4, SIZE, SIZE)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
