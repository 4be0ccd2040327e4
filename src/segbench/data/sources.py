"""Data sources: a registry from ``data.source`` to a function yielding (id, image, mask).

Every source yields ``(image_id, image, mask)`` with image (H, W) uint8 grayscale in [0, 255]
and mask (H, W) uint8 in {0, 1} of the same size, ids unique and file-name safe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from segbench.config import DataConfig
from segbench.errors import SegbenchError

Sample = tuple[str, np.ndarray, np.ndarray]


def synthetic_source(cfg: DataConfig) -> tuple[int, Iterator[Sample]]:
    """The embedded SEM-like particle images (no network, no files needed)."""
    from segbench.data.synthetic import generate_sample, sample_seed

    syn = cfg.synthetic
    # n_particles is given per 1024x768 frame: scale it with the area so that smaller or larger
    # frames keep the same particle density (radius stays in pixels, like a fixed magnification).
    area = syn.height * syn.width / (1024 * 768)
    n_particles = tuple(max(1, round(n * area)) for n in syn.n_particles)

    def samples() -> Iterator[Sample]:
        for i in range(syn.n_images):
            image, mask = generate_sample(
                sample_seed(cfg.seed, i),
                height=syn.height,
                width=syn.width,
                n_particles=n_particles,
                radius=tuple(syn.radius),
            )
            yield f"synthetic_{i:04d}", image, mask

    return syn.n_images, samples()


SOURCES: dict[str, Callable[[DataConfig], tuple[int, Iterator[Sample]]]] = {
    "synthetic": synthetic_source,
}


def open_source(cfg: DataConfig) -> tuple[int, Iterator[Sample]]:
    """``(count, samples)`` for the configured source; an unknown name lists the valid ones."""
    try:
        factory = SOURCES[cfg.source]
    except KeyError:
        valid = ", ".join(sorted(SOURCES))
        raise SegbenchError(f"data.source: unknown source {cfg.source!r}; valid: {valid}") from None
    return factory(cfg)
