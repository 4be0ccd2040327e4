"""Seeded synthetic SEM-like micrographs of grains of two phases, with exact 3-class masks.

Each sample imitates a backscattered-electron micrograph of a two-phase powder or sintered
deposit: grains (the particle shapes, placement and agglomeration of
:mod:`segbench.data.synthetic`) of two phases on a textured substrate, under the same uneven
illumination, clutter, blur, scan-line jitter and shot/read noise.

* ``phase_a`` (class 1): smooth, moderately bright grains with a bright edge rim.
* ``phase_b`` (class 2): somewhat brighter on average, with an internal lamellar (eutectoid-
  like) texture: parallel plates a few px apart, at a random orientation per grain.

The mean brightness ranges of the two phases overlap, and the illumination varies across the
frame by more than their difference, so one global set of grey-level thresholds (multi-Otsu)
confuses dim ``phase_b`` with bright ``phase_a`` and bright substrate with dim grains.  The
texture and the contrast to the nearby substrate stay locally obvious: that is what a learned
segmenter should exploit.  The mask holds the exact drawn grain shapes (later grains occlude
earlier ones), before any blur: 0 substrate, 1 phase_a, 2 phase_b.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from segbench.data.synthetic import (
    _acquire,
    _clutter,
    _illumination,
    _Particle,
    _place_particles,
    cast_shadow,
    footprint,
    _smooth_noise,
    _substrate_texture,
    _validate,
)

SUBSTRATE, PHASE_A, PHASE_B = 0, 1, 2


def generate_phases(
    seed: int | np.random.SeedSequence,
    *,
    height: int = 768,
    width: int = 1024,
    n_particles: tuple[int, int] = (40, 140),
    radius: tuple[float, float] = (6.0, 60.0),
    noise: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (image, mask): image (H, W) uint8 grey in [0, 255]; mask (H, W) uint8 in {0, 1, 2}.

    Mask classes: 0 substrate, 1 phase_a (smooth grains), 2 phase_b (lamellar grains).
    ``n_particles`` is an inclusive (min, max) grain count and ``radius`` a (min, max) nominal
    grain radius in px (log-uniform), both absolute as in
    :func:`segbench.data.synthetic.generate_sample`.  A frame with two or more grains holds
    both phases (one may still end up hidden under later grains or cut by the border).
    ``noise`` (>= 0) multiplies the sigma of the shot + read noise and changes no random draw.
    """
    if int(height) != height or int(width) != width:
        raise ValueError(f"height and width must be integers, got {height}x{width}")
    if not 0.0 <= noise < np.inf:  # also rejects NaN
        raise ValueError(f"noise must be a finite number >= 0, got {noise}")
    _validate(height, width, n_particles, radius, noise)
    rng = np.random.default_rng(seed)
    shape = (height, width)
    grains = _place_particles(rng, shape, n_particles, radius)
    phases = _assign_phases(rng, len(grains))
    layer = np.zeros(shape, np.float32)
    mask = np.zeros(shape, np.uint8)
    shadow = np.ones(shape, np.float32)
    light = rng.uniform(0.0, 2.0 * np.pi)  # detector direction, shared by all grains
    for p, phase in zip(grains, phases, strict=True):
        _paint_grain(rng, _restyle(rng, p, phase), phase, light, layer, mask, shadow)
    substrate = (1.0 + _substrate_texture(rng, shape)) * shadow
    grain = 1.0 + rng.uniform(0.03, 0.08) * _smooth_noise(rng, shape, 1.5)
    scene = np.where(mask > 0, layer, substrate) * grain + _clutter(rng, shape)
    level = rng.uniform(45.0, 66.0)  # substrate grey level under unit illumination
    image = level * scene * _illumination(rng, shape)
    return _acquire(rng, image, noise), mask


def _assign_phases(rng, n: int) -> np.ndarray:
    """Phase (1 or 2) per grain: a share of phase_b drawn per frame, each phase at least once."""
    share = rng.uniform(0.3, 0.65)
    n_b = int(np.clip(rng.binomial(n, share), 1 if n > 1 else 0, max(n - 1, 1)))
    phases = np.full(n, PHASE_A, np.uint8)
    phases[rng.permutation(n)[:n_b]] = PHASE_B
    return phases


def _restyle(rng, p: _Particle, phase: int) -> _Particle:
    """The grain's shape kept; its brightness and edge rim set by its phase."""
    if phase == PHASE_A:
        return replace(
            p,
            brightness=float(rng.uniform(1.3, 1.75)),
            rim=float(rng.uniform(0.15, 0.45)),
        )
    return replace(
        p,
        brightness=float(rng.uniform(1.55, 2.1)),
        rim=float(rng.uniform(0.0, 0.15)),
    )


def _paint_grain(rng, p: _Particle, phase: int, light: float, layer, mask, shadow) -> None:
    """Draw one grain into its bounding box (later grains occlude earlier ones)."""
    # Drawn even when off-frame, so the random stream does not depend on the frame's edges.
    period = rng.uniform(5.5, 9.0)
    orient = rng.uniform(0.0, np.pi)
    offset = rng.uniform(0.0, 2.0 * np.pi)
    depth = rng.uniform(0.22, 0.38)
    f = footprint(p, light, mask.shape)
    if f is None:
        return
    shade = f.shade[f.inside]
    if phase == PHASE_B:
        # Lamellae: a squared-off sinusoid across the grain, plates brighter than the matrix.
        ys, xs = np.nonzero(f.inside)
        across = (xs + (f.x0 - p.cx)) * np.cos(orient) + (ys + (f.y0 - p.cy)) * np.sin(orient)
        plates = np.clip(2.0 * np.sin(2.0 * np.pi * across / period + offset), -1.0, 1.0)
        shade *= (1.0 + depth * plates).astype(np.float32)
    layer[f.box][f.inside] = shade
    mask[f.box][f.inside] = phase
    cast_shadow(f, shadow)
