"""Optimisers and per-epoch learning-rate schedules (with optional linear warm-up).

Schedules step once per epoch, after validation: ``plateau`` needs the validation Dice, and a
per-epoch step keeps a resumed run on exactly the schedule of an uninterrupted one.
"""

from __future__ import annotations

import torch

from segbench.config import TrainConfig


def build_optimizer(cfg: TrainConfig, parameters) -> torch.optim.Optimizer:
    """``adam``, ``adamw`` or ``sgd`` (Nesterov momentum) over the trainable ``parameters``."""
    params = [p for p in parameters if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay
    )


class EpochSchedule:
    """Warm-up for ``warmup_epochs`` (lr rising linearly to ``train.lr``), then the schedule.

    * ``plateau``: x ``plateau.factor`` after ``plateau.patience`` epochs without a better
      validation Dice (the reference studies' choice);
    * ``step``: x ``step.gamma`` every ``step.step_size`` epochs;
    * ``cosine``: cosine annealing to ~0 over the remaining epochs;
    * ``poly``: ``(1 - t / T) ** poly_power``;
    * ``none``: constant.
    """

    def __init__(self, cfg: TrainConfig, optimizer: torch.optim.Optimizer):
        self.optimizer, self.warmup = optimizer, cfg.warmup_epochs
        self.base = [g["lr"] for g in optimizer.param_groups]
        remaining = cfg.epochs - cfg.warmup_epochs
        lr = torch.optim.lr_scheduler
        if cfg.scheduler == "plateau":
            self.main = lr.ReduceLROnPlateau(
                optimizer, mode="max", factor=cfg.plateau.factor, patience=cfg.plateau.patience
            )
        elif cfg.scheduler == "step":
            self.main = lr.StepLR(optimizer, step_size=cfg.step.step_size, gamma=cfg.step.gamma)
        elif cfg.scheduler == "cosine":
            self.main = lr.CosineAnnealingLR(optimizer, T_max=remaining)
        elif cfg.scheduler == "poly":
            power = cfg.poly_power
            self.main = lr.LambdaLR(optimizer, lambda t: max(0.0, 1 - t / remaining) ** power)
        else:
            self.main = None
        self.epochs_done = 0
        if self.warmup:
            self._scale(1 / (self.warmup + 1))

    def _scale(self, factor: float) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base, strict=True):
            group["lr"] = base * factor

    def step(self, val_dice: float) -> None:
        """Call once at the end of every epoch, after validation."""
        self.epochs_done += 1
        if self.epochs_done < self.warmup:
            self._scale((self.epochs_done + 1) / (self.warmup + 1))
        elif self.epochs_done == self.warmup:
            self._scale(1.0)
        elif isinstance(self.main, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.main.step(val_dice)
        elif self.main is not None:
            self.main.step()

    def state_dict(self) -> dict:
        main = self.main.state_dict() if self.main is not None else {}
        return {"epochs_done": self.epochs_done, "main": main}

    def load_state_dict(self, state: dict) -> None:
        self.epochs_done = int(state["epochs_done"])
        if self.main is not None and state["main"]:
            self.main.load_state_dict(state["main"])
