"""Model registry: ``build_model(entry)``; see :mod:`segbench.models.registry`."""

from segbench.models.registry import MODELS, build_ensemble, build_model

__all__ = ["MODELS", "build_ensemble", "build_model"]
