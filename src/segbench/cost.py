"""What a model costs: parameter counts, peak memory and SAM's embedding caches, as every
stage reports them."""

from __future__ import annotations

import resource
import sys

import torch


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated on CUDA, else the process's peak resident set size (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """``{"params_total": ..., "params_trainable": ...}`` of a module."""
    return {
        "params_total": sum(p.numel() for p in model.parameters()),
        "params_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def embedding_caches(model: object) -> list:
    """The SAM embedding caches (:class:`segbench.sam.cache.EmbeddingCache`) ``model`` reads,
    its submodules' included (see :func:`segbench.sam.cache.caches_in`); [] for other models."""
    # Only SAM models hold a cache, and building one imports its module: while that is not
    # loaded there is none, and importing it (segment_anything with it) would take a second.
    module = sys.modules.get("segbench.sam.cache")
    return [] if module is None else module.caches_in(model)


def cache_fill_seconds(model: object) -> float:
    """Seconds ``model``'s embedding caches spent being filled in this process (encoder
    passes and writes on misses); 0.0 without a cache."""
    return float(sum(cache.fill_seconds for cache in embedding_caches(model)))
