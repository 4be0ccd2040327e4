"""Which device a process computes on: one rule for training, evaluation and prediction."""

from __future__ import annotations

import torch

from segbench.errors import SegbenchError


def resolve_device(name: str = "auto", *, index: int = 0) -> torch.device:
    """``auto`` -> CUDA device ``index`` when CUDA is present, else the CPU; ``cpu`` -> the CPU;
    ``cuda`` without a visible CUDA device is a user error (``train.device``)."""
    if name not in ("auto", "cpu", "cuda"):
        raise SegbenchError(f"device: {name!r} is not one of auto, cpu, cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise SegbenchError("train.device: cuda requested but no CUDA device is visible; use auto")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", index)
