"""Losses fall on a toy problem; optimisers and schedules do what their names say."""

import math

import pytest
import torch
from torch import nn

from segbench.config import TrainConfig
from segbench.errors import SegbenchError
from segbench.losses import LOSSES, build_loss
from segbench.optim import EpochSchedule, build_optimizer
from tests.conftest import shipped_section


def train_cfg(**changes) -> TrainConfig:
    return shipped_section("train", **changes)


def toy_batch(seed=0):
    """Bright discs on noise: the foreground is where the image is bright."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(8, 1, 32, 32, generator=g) > 0.7).float()
    x = y * 2.0 + 0.5 * torch.randn(8, 1, 32, 32, generator=g)
    return x, y


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_falls_on_a_toy_problem(name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 1))
    loss_fn = build_loss(name, alpha=0.3, beta=0.7)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    x, y = toy_batch()
    with torch.no_grad():
        first = float(loss_fn(model(x), y))
    for _ in range(60):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = float(loss_fn(model(x), y))
    assert math.isfinite(last) and last < 0.7 * first, (name, first, last)


def test_focal_dice_is_twenty_to_one_and_tversky_weights_errors():
    _, y = toy_batch()
    logits = torch.randn_like(y)
    focal, dice = build_loss("focal")(logits, y), build_loss("dice")(logits, y)
    assert float(build_loss("focal_dice")(logits, y)) == pytest.approx(float(20 * focal + dice))
    only_fp = torch.full_like(y, 5.0)  # predicts foreground everywhere: errors are all FP
    heavy_fp = build_loss("tversky", alpha=0.9, beta=0.1)(only_fp, y)
    light_fp = build_loss("tversky", alpha=0.1, beta=0.9)(only_fp, y)
    assert float(heavy_fp) > float(light_fp)


def test_unknown_loss_lists_the_valid_ones():
    with pytest.raises(SegbenchError, match="valid: bce, dice, dice_bce, focal"):
        build_loss("hinge")


def lrs(cfg: TrainConfig, dice=None):
    model = nn.Linear(2, 1)
    opt = build_optimizer(cfg, model.parameters())
    sched = EpochSchedule(cfg, opt)
    out = []
    for e in range(cfg.epochs):
        out.append(opt.param_groups[0]["lr"])
        sched.step(dice[e] if dice else 0.5)
    return out, opt, sched


def test_schedules():
    cosine, _, _ = lrs(train_cfg(epochs=5, lr=1.0, scheduler="cosine"))
    assert cosine[0] == 1.0 and cosine == sorted(cosine, reverse=True) and cosine[-1] < 0.2
    warm, _, _ = lrs(train_cfg(epochs=6, lr=1.0, scheduler="cosine", warmup_epochs=2))
    assert warm[:3] == pytest.approx([1 / 3, 2 / 3, 1.0]) and warm[3] < 1.0
    step, _, _ = lrs(train_cfg(epochs=5, lr=1.0, scheduler="step", step={"step_size": 2}))
    assert step == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    poly, _, _ = lrs(train_cfg(epochs=4, lr=1.0, scheduler="poly", poly_power=1.0))
    assert poly == pytest.approx([1, 0.75, 0.5, 0.25])
    dice = [0.5, 0.6, 0.6, 0.6, 0.6, 0.6]
    cfg = train_cfg(epochs=6, lr=1.0, scheduler="plateau", plateau={"patience": 1})
    plateau, _, _ = lrs(cfg, dice)
    assert plateau == pytest.approx([1, 1, 1, 1, 0.1, 0.1])  # 2 epochs without a better Dice
    none, _, _ = lrs(train_cfg(epochs=3, lr=0.5, scheduler="none"))
    assert none == [0.5, 0.5, 0.5]


def test_schedule_state_round_trips():
    cfg = train_cfg(epochs=6, lr=1.0, scheduler="poly", warmup_epochs=1)
    _, _, sched = lrs(cfg)
    model = nn.Linear(2, 1)
    opt2 = build_optimizer(cfg, model.parameters())
    again = EpochSchedule(cfg, opt2)
    again.load_state_dict(sched.state_dict())
    assert again.epochs_done == 6


@pytest.mark.parametrize(
    ("name", "cls"),
    [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)],
)
def test_optimizers(name, cls):
    opt = build_optimizer(
        train_cfg(optimizer=name, weight_decay=0.01), nn.Linear(2, 1).parameters()
    )
    assert isinstance(opt, cls) and opt.param_groups[0]["weight_decay"] == 0.01


def test_impossible_training_params_name_the_key():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="warmup_epochs"):
        train_cfg(epochs=2, warmup_epochs=2)
    with pytest.raises(ValidationError, match="optimizer"):
        train_cfg(optimizer="lion")
