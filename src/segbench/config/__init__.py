"""``params.yaml`` loaded once into validated, typed, frozen objects.

Every section is a pydantic model with ``extra="forbid"`` and no defaults of its own:
``params.yaml`` holds every value, an unknown key, a missing key, a wrong type or an impossible
value stops at load time with a one-line message naming the dotted key, e.g.
``params.yaml: train.lr: Input should be greater than 0 (got -0.1)``.

One module per section (``data``, ``prepare``, ``training``, ``evaluate``, ``sweep``,
``deploy``), the typed model entries (``models``), and the whole file (``params``).
"""

from segbench.config.base import Section
from segbench.config.data import DataConfig
from segbench.config.deploy import DeployConfig
from segbench.config.evaluate import EvaluateConfig, ReportConfig
from segbench.config.models import (
    ENTRY_CLASSES,
    AutoMaskConfig,
    EnsembleEntry,
    Entry,
    ModelEntry,
)
from segbench.config.params import Params, load_params, load_raw, not_applicable, parse_params
from segbench.config.prepare import AugmentConfig, NormalizeConfig, PrepareConfig
from segbench.config.sweep import SweepConfig
from segbench.config.training import TrainConfig

__all__ = [
    "ENTRY_CLASSES",
    "AugmentConfig",
    "AutoMaskConfig",
    "DataConfig",
    "DeployConfig",
    "EnsembleEntry",
    "Entry",
    "EvaluateConfig",
    "ModelEntry",
    "NormalizeConfig",
    "Params",
    "PrepareConfig",
    "ReportConfig",
    "Section",
    "SweepConfig",
    "TrainConfig",
    "load_params",
    "load_raw",
    "not_applicable",
    "parse_params",
]
