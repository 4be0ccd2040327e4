"""What every section of ``params.yaml`` shares.

``params.yaml`` is the one place where values live: a section's schema validates them and never
supplies one of its own. Every key is therefore required (a missing key is an error that names
it), unknown keys are refused (a typo never passes silently) and sections are frozen (a loaded
configuration is the configuration that ran; changes go through
:meth:`segbench.config.params.Params.with_overrides`, which validates them again).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# (low, high) pairs written as two-element lists in params.yaml.
Range = tuple[float, float]


class Section(BaseModel):
    """Base of every section and sub-section of ``params.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_range(section: BaseModel, *keys: str) -> None:
    """Raise ``ValueError("<key>: ...")`` unless each ``[low, high]`` has ``0 < low <= high``."""
    for key in keys:
        lo, hi = getattr(section, key)
        if not 0 < lo <= hi:
            raise ValueError(f"{key}: must be [low, high] with 0 < low <= high, got {[lo, hi]}")
