"""Losses for several classes: every registry name falls, skips ignored pixels, honours class
weights; the binary losses stay the modules (and values) they always were."""

import math

import pytest
import torch
from segmentation_models_pytorch import losses as smp
from torch import nn

from segbench.errors import SegbenchError
from segbench.losses import LOSSES, build_loss

IGNORE = 255
NAMES = sorted(LOSSES)


def binary_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(4, 1, 16, 16, generator=g) > 0.6).float()
    return torch.randn(4, 1, 16, 16, generator=g), y


def three_bands(seed=0):
    """(8, 1, 16, 16) images whose class (0, 1, 2) is the intensity band, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (8, 16, 16), generator=g)
    x = (y.float() - 1.0)[:, None] * 2.0 + 0.3 * torch.randn(8, 1, 16, 16, generator=g)
    return x, y


def old_binary(name, alpha=0.3, beta=0.7):
    """The binary modules segbench built before several classes existed."""
    dice = smp.DiceLoss(mode="binary", from_logits=True)
    bce = smp.SoftBCEWithLogitsLoss()
    focal = smp.FocalLoss(mode="binary", gamma=2.0)
    return {
        "dice": lambda x, y: dice(x, y),
        "bce": lambda x, y: bce(x, y),
        "dice_bce": lambda x, y: 1.0 * dice(x, y) + 1.0 * bce(x, y),
        "focal": lambda x, y: focal(x, y),
        "focal_dice": lambda x, y: 20.0 * focal(x, y) + 1.0 * dice(x, y),
        "tversky": smp.TverskyLoss(mode="binary", from_logits=True, alpha=alpha, beta=beta),
    }[name]


@pytest.mark.parametrize("name", NAMES)
def test_binary_losses_are_bit_identical_to_the_old_modules(name):
    x, y = binary_batch()
    old = old_binary(name)(x, y)
    assert torch.equal(build_loss(name, alpha=0.3, beta=0.7)(x, y), old)
    assert torch.equal(build_loss(name, num_classes=2, alpha=0.3, beta=0.7)(x, y), old)
    # ignore_index set but nothing ignored: the same bits, so callers may always pass it
    assert torch.equal(build_loss(name, ignore_index=IGNORE, alpha=0.3, beta=0.7)(x, y), old)


@pytest.mark.parametrize("name", NAMES)
def test_binary_ignored_pixels_get_no_gradient(name):
    x, y = binary_batch()
    y[..., 8:] = IGNORE
    x = x.clone().requires_grad_(True)
    build_loss(name, ignore_index=IGNORE, alpha=0.3, beta=0.7)(x, y).backward()
    assert torch.all(x.grad[..., 8:] == 0) and x.grad[..., :8].abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_every_multiclass_loss_falls_on_a_toy_problem(name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1))
    loss_fn = build_loss(name, num_classes=3, ignore_index=IGNORE, alpha=0.3, beta=0.7)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    x, y = three_bands()
    y[:, :2] = IGNORE  # a few unannotated rows
    with torch.no_grad():
        first = float(loss_fn(model(x), y))
    for _ in range(40):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        last = float(loss_fn(model(x), y))
    assert math.isfinite(last) and last < 0.7 * first, (name, first, last)


@pytest.mark.parametrize("name", NAMES)
def test_ignored_pixels_count_for_nothing(name):
    torch.manual_seed(1)
    logits, y = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    y[..., 4:] = IGNORE
    loss_fn = build_loss(name, num_classes=3, ignore_index=IGNORE, class_weights=[1, 2, 3])
    full = loss_fn(logits, y)
    # the same as the loss of the annotated half alone, whatever the logits elsewhere
    assert float(full) == pytest.approx(float(loss_fn(logits[..., :4], y[..., :4])), rel=1e-6)
    other = logits.clone()
    other[..., 4:] = 10 * torch.randn(2, 3, 8, 4)
    assert float(loss_fn(other, y)) == pytest.approx(float(full), rel=1e-6)
    # a batch with no annotated pixel: 0, not NaN
    nothing = torch.full_like(y, IGNORE)
    x = logits.clone().requires_grad_(True)
    empty = loss_fn(x, nothing)
    empty.backward()
    assert float(empty.detach()) == 0.0 and torch.all(x.grad == 0)


def confident(labels: torch.Tensor, num_classes=3) -> torch.Tensor:
    return 8.0 * nn.functional.one_hot(labels, num_classes).permute(0, 3, 1, 2).float() - 4.0


@pytest.mark.parametrize("name", NAMES)
def test_class_weights_weigh_the_class_they_name(name):
    y = torch.zeros(2, 8, 8, dtype=torch.long)
    y[:, :3], y[:, 3:5] = 1, 2
    guess = y.clone()
    guess[y == 2] = 0  # class 1 right, class 2 missed (called background)
    logits = confident(guess)
    build = lambda w: build_loss(name, num_classes=3, class_weights=w)  # noqa: E731
    on_missed, on_right = float(build([1, 1, 5])(logits, y)), float(build([1, 5, 1])(logits, y))
    assert on_missed > on_right, (name, on_missed, on_right)
    # scale does not matter
    assert float(build([2, 2, 10])(logits, y)) == pytest.approx(on_missed, rel=1e-6)


@pytest.mark.parametrize("name", ["bce", "dice_bce", "focal", "focal_dice"])
def test_binary_class_weights_weigh_pixels_by_their_class(name):
    x, y = binary_batch()
    missed = torch.full_like(y, -3.0)  # everything called background: only FN errors
    heavy_fg = float(build_loss(name, class_weights=[1, 5])(missed, y))
    heavy_bg = float(build_loss(name, class_weights=[5, 1])(missed, y))
    assert heavy_fg > heavy_bg
    even = float(build_loss(name, class_weights=[2, 2])(x, y))
    assert even == pytest.approx(float(build_loss(name)(x, y)), rel=1e-5)


def test_bad_weights_name_the_key():
    with pytest.raises(SegbenchError, match=r"train\.class_weights: the binary dice"):
        build_loss("dice", class_weights=[1, 2])
    with pytest.raises(SegbenchError, match=r"train\.class_weights: the binary tversky"):
        build_loss("tversky", class_weights=[1, 2])
    with pytest.raises(SegbenchError, match=r"train\.class_weights: 2 weight"):
        build_loss("bce", num_classes=3, class_weights=[1, 2])


def test_multiclass_modes_and_focal_dice_weighting():
    torch.manual_seed(2)
    logits, y = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    ce = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0]))(logits, y)
    got = build_loss("bce", num_classes=3, class_weights=[1, 2, 3])(logits, y)
    assert float(got) == pytest.approx(float(ce), rel=1e-6)
    dice = smp.DiceLoss(mode="multiclass", from_logits=True)(logits, y)
    assert float(build_loss("dice", num_classes=3)(logits, y)) == pytest.approx(float(dice))
    focal = smp.FocalLoss(mode="multiclass", gamma=2.0)(logits, y)
    fd = build_loss("focal_dice", num_classes=3)(logits, y)
    assert float(fd) == pytest.approx(float(20 * focal + dice), rel=1e-6)
