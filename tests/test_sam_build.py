"""segbench.sam: variants match segment_anything, tiny SAM runs at 512, checkpoints load safely."""

from __future__ import annotations

import hashlib
import pathlib
import pickle

import pytest
import torch
import torch.nn.functional as F
from segment_anything import sam_model_registry
from segment_anything.modeling.image_encoder import get_rel_pos

from segbench.errors import SegbenchError
from segbench.sam import (
    SAM_VARIANTS,
    adapt_to_image_size,
    build_sam,
    checkpoint_variant,
    load_checkpoint,
)

PUBLISHED = ["vit_b", "vit_l", "vit_h"]


def tiny_state(image_size: int = 1024) -> dict[str, torch.Tensor]:
    """A tiny SAM's state dict whose position tables are random (they start as zeros, and
    resizing zeros would prove nothing)."""
    torch.manual_seed(0)
    state = build_sam("tiny", image_size=image_size).state_dict()
    for key, value in state.items():
        if "pos_embed" in key or "rel_pos" in key:
            state[key] = torch.randn_like(value)
    return state


@pytest.fixture
def tiny_ckpt(tmp_path) -> pathlib.Path:
    path = tmp_path / "tiny_1024.pth"
    torch.save(tiny_state(), path)
    return path


class Payload:
    """Unpickling this object creates the marker file: what a malicious checkpoint would do."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


# --- the registry ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_variants_are_segment_anythings(name):
    # On the meta device nothing is allocated, so even vit_h (630M parameters) builds in a blink.
    with torch.device("meta"):
        ours = build_sam(name)
        theirs = sam_model_registry[name]()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }
    assert repr(ours) == repr(theirs)  # layer norms' eps, activations, conv settings
    assert [b.window_size for b in ours.image_encoder.blocks] == [
        b.window_size for b in theirs.image_encoder.blocks
    ]
    for attr in ("image_embedding_size", "input_image_size", "mask_input_size"):
        assert getattr(ours.prompt_encoder, attr) == getattr(theirs.prompt_encoder, attr)
    assert ours.image_encoder.img_size == theirs.image_encoder.img_size == 1024
    assert torch.equal(ours.pixel_mean, theirs.pixel_mean)
    assert torch.equal(ours.pixel_std, theirs.pixel_std)
    assert ours.training == theirs.training


@pytest.mark.parametrize("name", list(SAM_VARIANTS))
def test_every_variant_builds_at_512_and_is_recognised(name):
    with torch.device("meta"):
        sam = build_sam(name, image_size=512)
    assert sam.image_encoder.pos_embed.shape[1:3] == (32, 32)
    assert sam.prompt_encoder.image_embedding_size == (32, 32)
    assert sam.prompt_encoder.input_image_size == (512, 512)
    assert checkpoint_variant(sam.state_dict()) == name


def test_unknown_variant_lists_the_valid_ones():
    with pytest.raises(SegbenchError, match="unknown SAM variant 'vit_x'") as err:
        build_sam("vit_x")
    for name in SAM_VARIANTS:
        assert name in str(err.value)


@pytest.mark.parametrize("size", [500, 0, -512, 2048, 512.0])
def test_image_size_must_be_a_multiple_of_16_up_to_1024(size):
    with pytest.raises(SegbenchError, match=r"multiple of its patch size 16 from 16 to 1024"):
        build_sam("tiny", image_size=size)


# --- tiny SAM runs -------------------------------------------------------------------------


@pytest.mark.parametrize("multimask, n_masks", [(True, 3), (False, 1)])
def test_tiny_sam_at_512_runs_forward_and_backward(multimask, n_masks):
    torch.manual_seed(0)
    sam = build_sam("tiny", image_size=512)
    embedding = sam.image_encoder(torch.randn(1, 3, 512, 512))
    assert embedding.shape == (1, 32, 32, 32)
    sparse, dense = sam.prompt_encoder(
        points=(torch.tensor([[[256.0, 256.0]]]), torch.tensor([[1]])),
        boxes=torch.tensor([[100.0, 100.0, 400.0, 400.0]]),
        masks=None,
    )
    low_res, iou = sam.mask_decoder(
        image_embeddings=embedding,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )
    assert low_res.shape == (1, n_masks, 128, 128)
    assert iou.shape == (1, n_masks)
    low_res.sum().backward()
    assert sam.image_encoder.patch_embed.proj.weight.grad.abs().sum() > 0


def test_tiny_sam_end_to_end_call_at_512():
    torch.manual_seed(0)
    sam = build_sam("tiny", image_size=512)
    image = torch.randint(0, 256, (3, 512, 384)).float()  # CHW, RGB in [0, 255], long side 512
    (out,) = sam(
        [
            {
                "image": image,
                "original_size": (512, 384),
                "boxes": torch.tensor([[10, 10, 300, 300]]),
            }
        ],
        multimask_output=False,
    )
    assert out["masks"].shape == (1, 1, 512, 384)
    assert out["low_res_logits"].shape == (1, 1, 128, 128)


# --- loading checkpoints -------------------------------------------------------------------


def test_1024_checkpoint_loads_into_512_model(tiny_ckpt):
    saved = torch.load(tiny_ckpt, weights_only=True)
    sam = build_sam("tiny", image_size=512, checkpoint=tiny_ckpt)
    encoder = sam.image_encoder
    assert encoder.pos_embed.shape == (1, 32, 32, 64)
    window, glob = encoder.blocks  # tiny: block 0 windowed (14), block 1 global
    assert window.window_size == 14 and glob.window_size == 0
    assert glob.attn.rel_pos_h.shape == glob.attn.rel_pos_w.shape == (63, 32)
    assert window.attn.rel_pos_h.shape == window.attn.rel_pos_w.shape == (27, 32)
    assert torch.equal(window.attn.rel_pos_h, saved["image_encoder.blocks.0.attn.rel_pos_h"])
    assert torch.equal(
        encoder.patch_embed.proj.weight, saved["image_encoder.patch_embed.proj.weight"]
    )
    with torch.no_grad():
        assert encoder(torch.randn(1, 3, 512, 512)).shape == (1, 32, 32, 32)


def test_resized_rel_pos_equals_segment_anythings_on_the_fly_resize():
    state = tiny_state()
    table = state["image_encoder.blocks.1.attn.rel_pos_h"]  # (127, head_dim): global, 64 tokens
    small = adapt_to_image_size(state, 512)["image_encoder.blocks.1.attn.rel_pos_h"]
    # get_rel_pos interpolates a too-long table at every forward; resizing it once must agree.
    assert torch.allclose(get_rel_pos(32, 32, small), get_rel_pos(32, 32, table), atol=1e-6)


def test_pos_embed_resize_keeps_channels_apart():
    state = tiny_state()
    channel = torch.arange(64, dtype=torch.float32)
    state["image_encoder.pos_embed"] = channel.expand(1, 64, 64, 64).clone()
    pos = adapt_to_image_size(state, 256)["image_encoder.pos_embed"]
    assert pos.shape == (1, 16, 16, 64)
    # Bicubic weights sum to one: a field constant in space stays so, channel by channel.
    assert torch.allclose(pos, channel.expand(1, 16, 16, 64), atol=1e-4)


def test_pos_embed_resize_is_bicubic_over_the_grid():
    state = tiny_state()
    pos = state["image_encoder.pos_embed"]
    expected = F.interpolate(
        pos.permute(0, 3, 1, 2), size=(32, 32), mode="bicubic", align_corners=False
    ).permute(0, 2, 3, 1)
    assert torch.allclose(adapt_to_image_size(state, 512)["image_encoder.pos_embed"], expected)


def test_adapting_to_own_size_changes_nothing():
    state = tiny_state()
    same = adapt_to_image_size(state, 1024)
    assert same is not state
    assert same.keys() == state.keys()
    assert all(same[k] is state[k] for k in state)


def test_half_precision_checkpoint_is_adapted_and_loaded(tmp_path):
    path = tmp_path / "tiny_half.pth"
    state = {k: v.half() for k, v in tiny_state().items()}
    torch.save(state, path)
    assert adapt_to_image_size(state, 512)["image_encoder.pos_embed"].dtype == torch.float16
    sam = build_sam("tiny", image_size=512, checkpoint=path)
    assert sam.image_encoder.pos_embed.dtype == torch.float32


def test_larger_than_checkpoint_is_refused(tmp_path):
    path = tmp_path / "tiny_512.pth"
    torch.save(tiny_state(512), path)
    with pytest.raises(SegbenchError, match=r"image_size 1024 .* from 16 to 512"):
        build_sam("tiny", image_size=1024, checkpoint=path)


def test_sha256_match_loads_and_mismatch_names_the_file(tiny_ckpt):
    digest = hashlib.sha256(tiny_ckpt.read_bytes()).hexdigest()
    assert build_sam("tiny", checkpoint=tiny_ckpt, sha256=digest.upper()) is not None
    with pytest.raises(SegbenchError, match="sha256") as err:
        load_checkpoint(tiny_ckpt, sha256="0" * 64)
    assert str(tiny_ckpt) in str(err.value) and digest in str(err.value)


def test_sha256_without_checkpoint_is_an_error():
    with pytest.raises(SegbenchError, match="checkpoint is not"):
        build_sam("tiny", sha256="0" * 64)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(SegbenchError, match="does not exist") as err:
        build_sam("tiny", checkpoint=tmp_path / "nope.pth")
    assert str(tmp_path / "nope.pth") in str(err.value)


@pytest.mark.parametrize("damage", ["truncated", "empty", "text"])
def test_damaged_file_is_one_clear_error(tiny_ckpt, damage):
    data = tiny_ckpt.read_bytes()
    bad = {"truncated": data[: len(data) // 2], "empty": b"", "text": b"not a checkpoint\n"}
    tiny_ckpt.write_bytes(bad[damage])
    with pytest.raises(SegbenchError, match="cannot be read") as err:
        build_sam("tiny", checkpoint=tiny_ckpt)
    assert str(tiny_ckpt) in str(err.value)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch, on the protocol-5 file
@pytest.mark.parametrize("writer", ["pickle2", "pickle5", "torch.save"])
def test_malicious_pickle_is_refused_and_never_run(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    if writer == "torch.save":  # the payload inside an otherwise ordinary checkpoint
        torch.save({"image_encoder.pos_embed": torch.zeros(1), "x": Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(Payload(marker), protocol=int(writer[-1])))
    with pytest.raises(SegbenchError, match="was refused") as err:
        load_checkpoint(path)
    assert "never runs a checkpoint's code" in str(err.value)
    assert str(path) in str(err.value)
    assert not marker.exists()
    if writer != "torch.save":  # the file really is hostile: an ordinary unpickle runs it
        pickle.loads(path.read_bytes())
        assert marker.exists()


@pytest.mark.parametrize(
    "obj", [torch.zeros(3), [torch.zeros(3)], {}, {"epoch": 3}, {"a": torch.zeros(1), "b": 2}]
)
def test_not_a_state_dict_is_refused(tmp_path, obj):
    path = tmp_path / "odd.pth"
    torch.save(obj, path)
    with pytest.raises(SegbenchError, match="not a state dict") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("key", ["model", "state_dict"])
def test_wrapped_state_dict_is_unwrapped(tmp_path, key):
    path = tmp_path / "wrapped.pth"
    state = tiny_state(512)
    torch.save({key: state, "epoch": 7, "optimizer": {"lr": 1e-4}}, path)
    assert load_checkpoint(path).keys() == state.keys()
    assert build_sam("tiny", image_size=512, checkpoint=path) is not None


def test_checkpoint_of_another_variant_names_both(tiny_ckpt):
    # Refused before vit_b is built: no 90M-parameter allocation for a doomed load.
    with pytest.raises(SegbenchError, match=r"is a tiny checkpoint but .* is vit_b") as err:
        build_sam("vit_b", image_size=512, checkpoint=tiny_ckpt)
    assert str(tiny_ckpt) in str(err.value)


def test_checkpoint_variant_reads_the_encoder_shape():
    with torch.device("meta"):  # a vit_l's shapes, not its 1.2 GB
        state = {"image_encoder.patch_embed.proj.weight": torch.empty(1024, 3, 16, 16)}
        state |= {f"image_encoder.blocks.{i}.norm1.weight": torch.empty(1024) for i in range(24)}
    assert checkpoint_variant(state) == "vit_l"
    del state["image_encoder.blocks.23.norm1.weight"]
    with pytest.raises(SegbenchError, match="unknown variant: embed dim 1024 with 23"):
        checkpoint_variant(state)
    with pytest.raises(SegbenchError, match="not a SAM state dict"):
        checkpoint_variant({"decoder.weight": torch.zeros(1)})


def test_state_dict_that_does_not_fit_is_one_clear_error(tmp_path):
    path = tmp_path / "extra.pth"
    torch.save({**tiny_state(), "extra.weight": torch.zeros(1)}, path)
    with pytest.raises(SegbenchError, match="does not fit a tiny SAM") as err:
        build_sam("tiny", checkpoint=path)
    assert "extra.weight" in str(err.value)


def test_a_decoder_trained_from_scratch_is_reinitialised_and_the_encoders_kept(tiny_ckpt):
    """``decoder_init: scratch`` (a reference study trained SAM's mask decoder from scratch):
    the decoder's weights are fresh and seeded, the image and prompt encoders the checkpoint's."""
    from segbench.models import build_model
    from tests.conftest import shipped_entry

    def build(init: str, seed: int = 0):
        entry = shipped_entry(
            "sam_decoder",
            checkpoint=str(tiny_ckpt),
            image_size=1024,
            decoder_init=init,
            init_seed=seed,
            embedding_cache=None,
        )
        return build_model(entry, name="sam_decoder").sam.state_dict()

    ckpt, scratch = torch.load(tiny_ckpt, weights_only=True), build("scratch")
    decoder = [k for k in scratch if k.startswith("mask_decoder.")]
    assert all(torch.equal(build("checkpoint")[k], ckpt[k]) for k in decoder)
    changed = [k for k in decoder if not torch.equal(scratch[k], ckpt[k])]
    assert len(changed) > len(decoder) // 2  # every weight matrix, not the 1/0 norms
    assert all(torch.equal(scratch[k], ckpt[k]) for k in scratch if k.startswith("image_encoder."))
    again, other = build("scratch"), build("scratch", seed=1)
    assert all(torch.equal(scratch[k], again[k]) for k in decoder)  # seeded
    assert any(not torch.equal(scratch[k], other[k]) for k in decoder)
