"""Training: :func:`train` (one entry of ``models``), the epoch loop, and DDP processes."""

from segbench.training.fit import train

__all__ = ["train"]
