"""Which device a process computes on: one rule for training, evaluation and prediction."""

from __future__ import annotations

import torch

from segbench.config import TrainConfig
from segbench.config.models import Entry
from segbench.errors import SegbenchError

NO_CUDA = "cuda requested but no CUDA device is visible; use auto"


def resolve_device(name: str = "auto", *, index: int = 0) -> torch.device:
    """``auto`` -> CUDA device ``index`` when CUDA is present, else the CPU; ``cpu`` -> the CPU;
    ``cuda`` without a visible CUDA device is a user error (``train.device``)."""
    if name not in ("auto", "cpu", "cuda"):
        raise SegbenchError(f"device: {name!r} is not one of auto, cpu, cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise SegbenchError(f"train.device: {NO_CUDA}")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", index)


def devices_problem(name: str, entry: Entry, train: TrainConfig) -> str | None:
    """Why ``models.<name>`` cannot start its ``devices`` training processes on this machine
    (one line naming the key that sets the value), or None.

    On CUDA each process takes a GPU of its own (``LOCAL_RANK``), so more processes than GPUs
    cannot start; on the CPU ``devices > 1`` is that many Gloo processes, any number of them.
    """
    cfg = entry.train_config(train)
    own = getattr(entry, "train", None) or {}
    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        return None
    present = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if present == 0:  # device: cuda on a machine without one
        key = f"models.{name}.train.device" if "device" in own else "train.device"
        return f"{key}: {NO_CUDA}"
    if cfg.devices <= present:
        return None
    key = f"models.{name}.train.devices" if "devices" in own else "train.devices"
    gpus = f"{present} CUDA GPU{'s' if present > 1 else ''}"
    return (
        f"{key}: {cfg.devices}, but this machine has {gpus}; set it to {present} or fewer "
        "(one training process per GPU), or train where more GPUs are visible"
    )


def check_devices(name: str, entry: Entry, train: TrainConfig) -> None:
    """Raise :func:`devices_problem`'s line as a :class:`SegbenchError`, if any."""
    problem = devices_problem(name, entry, train)
    if problem is not None:
        raise SegbenchError(problem)
