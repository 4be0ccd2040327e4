"""LoRA on SAM's encoder: starts as the base, saves only what it trained, merges losslessly."""

import copy

import pytest
import torch

from segbench.errors import SegbenchError
from segbench.sam import build_sam
from segbench.sam.lora import apply_lora, lora_modules, merge_lora
from segbench.sam.segmenter import SamSegmenter


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return build_sam("tiny", image_size=256).eval()


def _embed(sam, x):
    with torch.no_grad():
        return sam.image_encoder(x)


def _adapted(base, **kw) -> SamSegmenter:
    """A fine-tunable SAM around a copy of ``base``, its encoder adapted with LoRA ``kw``."""
    model = SamSegmenter(copy.deepcopy(base))
    apply_lora(model.sam, **kw)
    return model


def _trained(base, **kw) -> SamSegmenter:
    """An adapted copy whose B factors are no longer zero, as after some training."""
    model = _adapted(base, **kw)
    torch.manual_seed(1)
    with torch.no_grad():
        for m in lora_modules(model.sam).values():
            for b in m.lora_b.values():
                b.normal_(std=0.05)
    return model


def test_an_adapted_model_starts_as_its_base(base):
    x = torch.randn(1, 3, 256, 256)
    sam = copy.deepcopy(base)
    assert apply_lora(sam, rank=4) == [0, 1]
    torch.testing.assert_close(_embed(sam, x), _embed(base, x))


def test_only_the_adapters_and_the_decoder_train(base):
    sam = copy.deepcopy(base)
    apply_lora(sam, rank=4, targets=("q", "v"), blocks=[1])
    trainable = {n for n, p in sam.named_parameters() if p.requires_grad}
    assert all(
        ".lora_" in n or n.startswith(("mask_decoder.", "prompt_encoder.")) for n in trainable
    )
    width = sam.image_encoder.blocks[1].attn.qkv.width  # 64 for tiny
    lora = sum(p.numel() for n, p in sam.named_parameters() if ".lora_" in n)
    assert lora == 1 * 2 * (4 * width + width * 4)  # one block, q and v, A and B
    with_k = copy.deepcopy(base)
    apply_lora(with_k, rank=4, targets=("q", "k", "v"))
    assert sum(p.numel() for n, p in with_k.named_parameters() if ".lora_" in n) == 2 * 3 * 512


def test_adapters_reload_onto_the_base_and_merge_without_changing_outputs(base, tmp_path):
    x = torch.randn(1, 3, 256, 256)
    trained = _trained(base, rank=8, alpha=16, targets=("q", "v"))
    expected = _embed(trained.sam, x)
    assert not torch.allclose(expected, _embed(base, x))  # the adapters do something

    path = tmp_path / "adapter.pt"
    torch.save(trained.trained_state_dict(), path)
    state = torch.load(path, weights_only=True)
    assert all(".lora_" in k or k.startswith("sam.mask_decoder.") for k in state)

    reloaded = _adapted(base, rank=8, alpha=16, targets=("q", "v"))  # base + adapter
    reloaded.load_trained_state_dict(state)
    torch.testing.assert_close(_embed(reloaded.sam, x), expected)

    assert merge_lora(reloaded.sam) == 2
    torch.testing.assert_close(_embed(reloaded.sam, x), expected, atol=1e-5, rtol=1e-4)


def test_an_adapter_of_another_rank_does_not_load(base):
    state = _trained(base, rank=8).trained_state_dict()
    with pytest.raises(SegbenchError, match=r"differently configured model.*other shapes"):
        _adapted(base, rank=4).load_trained_state_dict(state)
    with pytest.raises(SegbenchError, match=r"differently configured model.*unknown keys"):
        _adapted(base, rank=8, blocks=[0]).load_trained_state_dict(state)


def test_bad_lora_params_are_clear_errors(base):
    sam = copy.deepcopy(base)
    with pytest.raises(SegbenchError, match=r"lora\.rank: must be at least 1"):
        apply_lora(sam, rank=0)
    with pytest.raises(SegbenchError, match=r"lora\.targets"):
        apply_lora(sam, rank=4, targets=("q", "o"))
    with pytest.raises(SegbenchError, match=r"lora\.blocks: the image encoder has blocks 0\.\.1"):
        apply_lora(sam, rank=4, blocks=[5])
    with pytest.warns(UserWarning, match="no longer low-rank"):
        apply_lora(sam, rank=64)  # tiny's width is 64
