"""Seeded synthetic SEM-like particle micrographs with exact binary masks.

Each sample imitates a secondary-electron micrograph of a powder or nanoparticle
deposit: dozens of bright particles (ellipses, Fourier-perturbed blobs, rounded
polygons) with an edge-effect rim, detector-side shading and a faint shadow, on a
textured substrate under uneven illumination, with non-particle clutter, blur,
scan-line jitter and shot/read noise.  The mask is the exact union of the particle
shapes before any blur, so it is the ground truth of what was drawn; on request it names
each particle where it is visible (an instance label image), later particles hiding earlier
ones as they do in the image.

The image is deliberately hard for one global threshold (illumination varies more
than the contrast of dim particles) but stays locally obvious, which is what a
learned segmenter should exploit and an Otsu baseline cannot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

_MIN_SIDE = 64
_KINDS = ("ellipse", "blob", "polygon")
_KIND_P = (0.35, 0.45, 0.20)
_TABLE = 721  # boundary samples per particle (half-degree steps)
_N_HARM = 5  # harmonics 2..6 of the polar radius; order 1 would only shift the centre


@dataclass(frozen=True)
class _Particle:
    cy: float
    cx: float
    radius: float  # nominal radius in px
    kind: str
    aspect: float  # ellipse axis ratio (>= 1)
    angle: float  # orientation of the ellipse / polygon, radians
    sides: int  # polygon side count
    harm: np.ndarray  # (_N_HARM, 2): amplitude and phase of each radius harmonic
    brightness: float  # relative to the substrate level (1.0)
    rim: float  # edge-effect gain at the boundary
    rim_power: float  # how thin the bright rim is
    tilt: float  # detector-side shading gain


def sample_seed(dataset_seed: int, index: int) -> np.random.SeedSequence:
    """Independent per-image seed: image i is the same whatever the number of images generated.

    Equivalent to ``SeedSequence(dataset_seed).spawn(n)[index]`` for any n > index.
    """
    if dataset_seed < 0 or index < 0:
        raise ValueError("dataset_seed and index must be non-negative")
    return np.random.SeedSequence(int(dataset_seed), spawn_key=(int(index),))


def generate_sample(
    seed: int | np.random.SeedSequence,
    *,
    height: int = 768,
    width: int = 1024,
    n_particles: tuple[int, int] = (40, 140),
    radius: tuple[float, float] = (6.0, 60.0),
    noise: float = 1.0,
    instances: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (image, mask): image (H, W) uint8 grayscale in [0, 255]; mask (H, W) uint8 in {0, 1}.

    ``n_particles`` is an inclusive (min, max) count range and ``radius`` a (min, max)
    nominal radius range in px (sampled log-uniformly).  Both are absolute, not scaled
    with the image size: the defaults suit ~1024x768; scale them down for small images or
    the particles will cover most of the frame.  Particles may touch, overlap (the mask is
    their union) and be cut by the image border.

    ``noise`` (>= 0) is a difficulty knob that multiplies the sigma of the shot + read
    noise: 1.0 is the nominal acquisition (and reproduces earlier output exactly), 0 leaves
    only blur and scan-line jitter, 2-3 imitates a fast, low-dose scan.  It changes no random
    draw, so the same seed gives the same scene at every noise level.

    ``instances``: the mask is instead an instance label image, (H, W) uint16 (uint32 beyond
    65535 particles), 0 background and each particle's id (1.., in drawing order) where it is
    visible; ``mask > 0`` is the {0, 1} mask exactly, and the image is the same.  A particle
    hidden by later ones, or off the frame, leaves its id unused.
    """
    _validate(height, width, n_particles, radius, noise)
    rng = np.random.default_rng(seed)
    shape = (height, width)
    particles = _place_particles(rng, shape, n_particles, radius)
    layer = np.zeros(shape, np.float32)
    ids = np.zeros(shape, np.uint16 if len(particles) <= 65535 else np.uint32)
    shadow = np.ones(shape, np.float32)
    light = rng.uniform(0.0, 2.0 * np.pi)  # detector direction, shared by all particles
    for pid, p in enumerate(particles, start=1):
        _paint(p, light, layer, ids, pid, shadow)
    mask = ids > 0
    substrate = (1.0 + _substrate_texture(rng, shape)) * shadow
    # Fine grain shared by substrate and particles (surface roughness at the pixel scale).
    grain = 1.0 + rng.uniform(0.03, 0.08) * _smooth_noise(rng, shape, 1.5)
    scene = np.where(mask, layer, substrate) * grain + _clutter(rng, shape)
    level = rng.uniform(55.0, 90.0)  # grey level of the substrate under unit illumination
    image = level * scene * _illumination(rng, shape)
    return _acquire(rng, image, noise), ids if instances else mask.astype(np.uint8)


def _validate(height, width, n_particles, radius, noise) -> None:
    if height < _MIN_SIDE or width < _MIN_SIDE:
        raise ValueError(f"height and width must be at least {_MIN_SIDE}, got {height}x{width}")
    for name, (lo, hi) in (("n_particles", n_particles), ("radius", radius)):
        if lo <= 0 or hi <= 0:
            raise ValueError(f"{name} bounds must be positive, got ({lo}, {hi})")
        if lo > hi:
            raise ValueError(f"{name} range is inverted: ({lo}, {hi})")
    if not noise >= 0.0:  # also rejects NaN
        raise ValueError(f"noise must be >= 0, got {noise}")


def _place_particles(rng, shape, n_particles, radius) -> list[_Particle]:
    h, w = shape
    n = int(rng.integers(n_particles[0], n_particles[1] + 1))
    radii = np.exp(rng.uniform(np.log(radius[0]), np.log(radius[1]), n))
    out: list[_Particle] = []
    for r in radii:
        if out and rng.random() < 0.4:
            # Powders agglomerate: attach to an earlier particle so they touch or overlap.
            host = out[int(rng.integers(len(out)))]
            a = rng.uniform(0.0, 2.0 * np.pi)
            dist = (host.radius + r) * rng.uniform(0.65, 1.05)
            cy, cx = host.cy + dist * np.sin(a), host.cx + dist * np.cos(a)
        else:
            cy, cx = rng.uniform(-0.3 * r, h + 0.3 * r), rng.uniform(-0.3 * r, w + 0.3 * r)
        out.append(_make_particle(rng, cy, cx, r))
    return out


def _make_particle(rng, cy: float, cx: float, r: float) -> _Particle:
    kind = _KINDS[int(rng.choice(3, p=_KIND_P))]
    scale = {"ellipse": 0.02, "blob": 0.35, "polygon": 0.04}[kind]
    amps = scale * rng.uniform(0.0, 1.0, _N_HARM) / np.arange(2, 2 + _N_HARM)
    harm = np.stack([amps, rng.uniform(0.0, 2.0 * np.pi, _N_HARM)], axis=1)
    dim = rng.random() < 0.25  # low-contrast particles, barely above the substrate
    return _Particle(
        cy=float(cy),
        cx=float(cx),
        radius=float(r),
        kind=kind,
        aspect=float(rng.uniform(1.0, 2.2) if kind == "ellipse" else 1.0),
        angle=float(rng.uniform(0.0, 2.0 * np.pi)),
        sides=int(rng.integers(4, 9)),
        harm=harm,
        brightness=float(1.0 + (rng.uniform(0.08, 0.22) if dim else rng.uniform(0.3, 1.1))),
        rim=float(rng.uniform(0.15, 0.7)),
        rim_power=float(rng.uniform(3.0, 9.0)),
        tilt=float(rng.uniform(0.05, 0.25)),
    )


def _polar_radius(p: _Particle, theta: np.ndarray) -> np.ndarray:
    """Boundary radius (px) of a star-shaped particle along direction ``theta`` (radians)."""
    t = theta - p.angle
    if p.kind == "ellipse":
        a, b = p.radius * np.sqrt(p.aspect), p.radius / np.sqrt(p.aspect)
        base = a * b / np.sqrt((b * np.cos(t)) ** 2 + (a * np.sin(t)) ** 2)
    elif p.kind == "polygon":
        sector = 2.0 * np.pi / p.sides
        base = p.radius * np.cos(np.pi / p.sides) / np.cos(np.mod(t, sector) - sector / 2)
    else:
        base = np.full_like(theta, p.radius)
    k = np.arange(2, 2 + _N_HARM)[:, None]
    wobble = (p.harm[:, :1] * np.cos(k * theta[None, :] + p.harm[:, 1:])).sum(0)
    return base * np.maximum(1.0 + wobble, 0.3)


@dataclass(frozen=True)
class Footprint:
    """Where one particle lies in the frame: its bounding ``box`` (slices), and over the box
    ``d`` (distance from the centre, 1 on the boundary), ``inside`` (d <= 1), ``facing`` (cosine
    to the detector side) and the shading of an SE micrograph, ``shade``; ``y0``, ``x0``: the
    box's corner."""

    box: tuple[slice, slice]
    y0: int
    x0: int
    d: np.ndarray
    inside: np.ndarray
    facing: np.ndarray
    shade: np.ndarray


def footprint(p: _Particle, light: float, shape: tuple[int, int]) -> Footprint | None:
    """The :class:`Footprint` of ``p`` in a frame of ``shape``, or None when it is off-frame."""
    # The boundary is tabulated once and interpolated: cheaper than evaluating every pixel.
    table_theta = np.linspace(-np.pi, np.pi, _TABLE)
    table = _polar_radius(p, table_theta)
    ext = float(table.max()) * 1.35 + 3.0
    h, w = shape
    y0, y1 = max(int(p.cy - ext), 0), min(int(p.cy + ext) + 2, h)
    x0, x1 = max(int(p.cx - ext), 0), min(int(p.cx + ext) + 2, w)
    if y0 >= y1 or x0 >= x1:
        return None
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(p.cy)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(p.cx)
    theta = np.arctan2(dy, dx)
    bound = np.interp(theta, table_theta, table).astype(np.float32)
    d = np.hypot(dy, dx) / bound  # 1 on the boundary
    facing = np.cos(theta - light)
    # SE yield rises with surface tilt, so the rim is bright; the detector side is brighter.
    shade = p.brightness * (1.0 + p.rim * d**p.rim_power + p.tilt * d * facing)
    box = (slice(y0, y1), slice(x0, x1))
    return Footprint(box, y0, x0, d, d <= 1.0, facing, shade)


def cast_shadow(f: Footprint, shadow: np.ndarray) -> None:
    """A faint shadow just outside the particle, strongest on the side away from the detector."""
    fall = np.clip(1.0 - (f.d - 1.0) / 0.3, 0.0, 1.0) * (~f.inside)
    dark = 1.0 - 0.18 * fall * (0.35 + 0.65 * (1.0 - f.facing) / 2.0)
    np.minimum(shadow[f.box], dark.astype(np.float32), out=shadow[f.box])


def _paint(p: _Particle, light: float, layer, ids, pid: int, shadow) -> None:
    """Draw particle ``pid`` into its bounding box only: its shading into ``layer`` and its
    id into ``ids`` where it lies (later particles occlude earlier ones)."""
    f = footprint(p, light, ids.shape)
    if f is None:
        return
    layer[f.box][f.inside] = f.shade[f.inside]
    ids[f.box][f.inside] = pid
    cast_shadow(f, shadow)


def _smooth_noise(rng, shape, scale: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with correlation length ~``scale`` px."""
    h, w = shape
    if scale <= 3.0:
        field = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), scale)
    else:
        # Gaussian-kernel upsampling of coarse white noise, done as two small matrix
        # products: far cheaper than a wide full-size filter or spline zoom.
        up_y, up_x = _upsampler(h, scale), _upsampler(w, scale)
        coarse = rng.standard_normal((up_y.shape[1], up_x.shape[1]), dtype=np.float32)
        field = up_y @ coarse @ up_x.T
    return (field - field.mean()) / (field.std() + 1e-6)


def _upsampler(n: int, scale: float) -> np.ndarray:
    """(n, m) float32 weights mapping an m-node coarse grid (spacing ``scale``) to n pixels."""
    nodes = np.arange(int(n / scale) + 8, dtype=np.float32)
    pos = np.arange(n, dtype=np.float32) / np.float32(scale) + 4.0
    return np.exp(-0.5 * (pos[:, None] - nodes[None, :]) ** 2)


def _substrate_texture(rng, shape) -> np.ndarray:
    """Multi-scale substrate roughness, (H, W) float32 around 0 (relative units)."""
    out = np.zeros(shape, np.float32)
    for scale, amp in ((8.0, 0.07), (30.0, 0.08), (110.0, 0.06)):
        out += rng.uniform(0.5, 1.5) * amp * _smooth_noise(rng, shape, scale)
    return out


def _clutter(rng, shape) -> np.ndarray:
    """Additive specks and short streaks that are not particles, (H, W) float32 >= ~0."""
    h, w = shape
    sparse = np.zeros(shape, np.float32)
    n = int(rng.integers(150, 600) * h * w / (768 * 1024)) + 1
    sparse[rng.integers(0, h, n), rng.integers(0, w, n)] = rng.uniform(0.1, 0.5, n) * 6.0
    for _ in range(int(rng.integers(3, 12))):
        length, a = rng.uniform(15.0, 120.0), rng.uniform(0.0, np.pi)
        t = np.linspace(0.0, length, int(length * 2))
        ys = (rng.uniform(0, h) + t * np.sin(a)).astype(int)
        xs = (rng.uniform(0, w) + t * np.cos(a)).astype(int)
        keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        sparse[ys[keep], xs[keep]] = rng.uniform(0.05, 0.2) * 2.5
    return ndi.gaussian_filter(sparse, 1.0)


def _illumination(rng, shape) -> np.ndarray:
    """Smooth gain field (H, W) float32, roughly 0.45-1.55: gradient, vignetting, drift."""
    h, w = shape
    yn = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]
    xn = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
    a = rng.uniform(0.0, 2.0 * np.pi)
    ramp = np.cos(a) * xn + np.sin(a) * yn
    cy, cx = rng.uniform(-0.5, 0.5, 2)
    vignette = ((yn - cy) ** 2 + (xn - cx) ** 2) / 2.0
    drift = _smooth_noise(rng, shape, max(h, w) / 4.0)
    gain = 1.0 + rng.uniform(0.2, 0.35) * ramp - rng.uniform(0.1, 0.3) * vignette
    return np.clip(gain + 0.07 * drift, 0.3, None).astype(np.float32)


def _acquire(rng, image: np.ndarray, noise: float = 1.0) -> np.ndarray:
    """Detector blur, scan-line jitter, shot and read noise; float (H, W) -> uint8.

    ``noise`` scales the shot + read sigma only; the draws are the same for any value.
    """
    image = ndi.gaussian_filter(image, rng.uniform(0.5, 1.5))
    # The beam is rastered line by line, so each scan line carries its own small offset.
    jitter = rng.normal(0.0, rng.uniform(0.5, 2.0), (image.shape[0], 1)).astype(np.float32)
    image = image + jitter
    # Shot noise (variance proportional to signal, Gaussian approximation of Poisson, which
    # is much cheaper to draw) plus signal-independent read noise, in one draw.
    photons, read = rng.uniform(0.4, 1.5), rng.uniform(2.0, 6.0)  # fewer photons: noisier
    sigma = np.sqrt(np.clip(image, 0.0, None) / photons + read**2)
    if noise != 1.0:  # skipped at 1.0 so the nominal output stays bit-identical
        sigma = sigma * np.float32(noise)
    image = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
