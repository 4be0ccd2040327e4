"""Model registry: ``build_model(name, **params)``; see :mod:`segbench.models.registry`."""

from segbench.models.registry import MODELS, ModelSpec, build_model, get_spec

__all__ = ["MODELS", "ModelSpec", "build_model", "get_spec"]
