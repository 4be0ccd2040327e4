"""LoRA on SAM's encoder: starts as the base, saves only what it trained, merges losslessly."""

import copy

import pytest
import torch

from segbench.errors import SegbenchError
from segbench.sam import build_sam
from segbench.sam.lora import (
    apply_lora,
    load_lora_state_dict,
    lora_modules,
    lora_state_dict,
    merge_lora,
)


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return build_sam("tiny", image_size=256).eval()


def _embed(sam, x):
    with torch.no_grad():
        return sam.image_encoder(x)


def _trained(base, **kw):
    """An adapted copy whose B factors are no longer zero, as after some training."""
    sam = copy.deepcopy(base)
    apply_lora(sam, **kw)
    torch.manual_seed(1)
    with torch.no_grad():
        for m in lora_modules(sam).values():
            for b in m.lora_b.values():
                b.normal_(std=0.05)
    return sam


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
    expected = _embed(trained, x)
    assert not torch.allclose(expected, _embed(base, x))  # the adapters do something

    path = tmp_path / "adapter.pt"
    torch.save(lora_state_dict(trained), path)
    state = torch.load(path, weights_only=True)
    assert all(".lora_" in k or k.startswith("mask_decoder.") for k in state)

    reloaded = copy.deepcopy(base)  # base checkpoint + adapter
    apply_lora(reloaded, rank=8, alpha=16, targets=("q", "v"))
    load_lora_state_dict(reloaded, state)
    torch.testing.assert_close(_embed(reloaded, x), expected)

    assert merge_lora(reloaded) == 2
    torch.testing.assert_close(_embed(reloaded, x), expected, atol=1e-5, rtol=1e-4)


def test_an_adapter_of_another_rank_does_not_load(base):
    state = lora_state_dict(_trained(base, rank=8))
    other = copy.deepcopy(base)
    apply_lora(other, rank=4)
    with pytest.raises(SegbenchError, match=r"does not fit.*other shapes"):
        load_lora_state_dict(other, state)
    fewer = copy.deepcopy(base)
    apply_lora(fewer, rank=8, blocks=[0])
    with pytest.raises(SegbenchError, match="does not fit"):
        load_lora_state_dict(fewer, state)


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
