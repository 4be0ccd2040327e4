"""Seeded synthetic breast-ultrasound-like B-mode frames with an exact lesion mask.

Each sample imitates one frame from a high-frequency linear-array probe held on a breast,
beam pointing down the rows.  From the top: a thin dark coupling-gel gap, the bright
entry echo of the skin and the dermis, a subcutaneous fat layer (mid-grey lobules framed by
thin echogenic septa), fibroglandular tissue (bright, with streaky roughly horizontal
texture that follows the anatomy and fatty islands), retromammary fat and the striated
pectoralis muscle.  Cooper's ligaments show up as bright curvilinear echoes, brightest where
they lie perpendicular to the beam (specular reflection).

The image is formed the way a scanner forms it.  Echogenicity (a linear amplitude map,
glandular tissue ~1) is multiplied by the round-trip attenuation integrated down each beam
line, so a strongly attenuating structure casts a dark column below it and a weakly
attenuating one leaves a bright one; time-gain compensation (TGC) undoes the average
attenuation only approximately.  Fully developed speckle multiplies the amplitude: the
envelope of a complex Gaussian field smoothed by an anisotropic point-spread function is
Rayleigh distributed, with grains elongated laterally and coarser away from the focal depth.
An electronic noise floor is added and the result is log-compressed to a display dynamic
range.

With probability ``lesion_probability`` the frame holds exactly one hypoechoic lesion
(oval, lobulated, irregular or taller-than-wide; low internal echoes; blurred margins;
posterior enhancement or shadowing).  The mask is the exact lesion shape before any blur.
Every frame, with or without a lesion, also holds decoys -- dark elongated ducts, dark fat
lobules, ligament and fibrous-tissue shadows -- that are on average less dark and less
compact than lesions, so an empty frame is not trivially recognisable but the task stays
learnable.

The anatomy, the lesion and the acquisition are drawn from three independent child seeds,
so the same seed with and without a lesion gives the same breast.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

_MIN_SIDE = 64
_REF_AREA = 384.0 * 512.0  # frame size the anatomical sizes below are written for
_TABLE = 721  # boundary samples per star-shaped outline (half-degree steps)
_KINDS = ("oval", "lobulated", "irregular", "tall")
_KIND_P = (0.35, 0.2, 0.3, 0.15)
# Probability that a lesion of each kind enhances (rather than shadows) what lies below it:
# fluid-rich, benign-looking shapes enhance; irregular, taller-than-wide ones shadow.
_ENHANCE_P = {"oval": 0.8, "lobulated": 0.7, "irregular": 0.25, "tall": 0.3}


class _Frame(NamedTuple):
    image: np.ndarray  # (H, W) uint8 display image
    mask: np.ndarray  # (H, W) bool, the lesion
    decoys: np.ndarray  # (H, W) bool, lumens of ducts and dark fat lobules (not the lesion)


class _Anatomy(NamedTuple):
    echo: np.ndarray  # (H, W) float32 echogenicity, linear amplitude, gland ~1
    atten: np.ndarray  # (H, W) float32 round-trip attenuation, nepers per px of depth
    nominal: np.ndarray  # (H,) float32 tissue attenuation per row the TGC is set against
    dermis: np.ndarray  # (W,) float32 row of the dermis / fat boundary
    gland_bottom: np.ndarray  # (W,) float32 row below which the chest wall starts
    decoys: np.ndarray  # (H, W) bool


def generate_ultrasound(
    seed: int | np.random.SeedSequence,
    *,
    height: int = 384,
    width: int = 512,
    lesion_probability: float = 0.8,
    lesion_radius: tuple[float, float] = (20.0, 90.0),
    speckle: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (image, mask): image (H, W) uint8 grayscale in [0, 255]; mask (H, W) uint8 in {0, 1}.

    With probability ``lesion_probability`` the mask holds one hypoechoic lesion (a single
    4-connected component that does not touch the border), otherwise it is all zeros.
    ``lesion_radius`` is the (min, max) nominal radius in px, sampled log-uniformly; like the
    anatomy, the defaults suit a ~512 px wide frame, and a lesion too large for the frame is
    shrunk until it fits.  ``speckle`` scales the speckle strength (the std of the
    log-amplitude): 0 gives a speckle-free frame, 1 fully developed speckle, >1 harsher.
    Use :func:`segbench.data.synthetic.sample_seed` for per-image seeds of a data set.
    """
    frame = _render(seed, height, width, lesion_probability, lesion_radius, speckle)
    return frame.image, frame.mask.astype(np.uint8)


def _render(seed, height, width, lesion_probability, lesion_radius, speckle) -> _Frame:
    _validate(height, width, lesion_probability, lesion_radius, speckle)
    anat_rng, lesion_rng, probe_rng = (np.random.default_rng(s) for s in _children(seed, 3))
    shape = (height, width)
    # Anatomical sizes scale with the frame; speckle grain does not (it is the probe's PSF).
    scale = float(np.sqrt(height * width / _REF_AREA))
    anat = _anatomy(anat_rng, shape, scale)
    mask = np.zeros(shape, bool)
    # The lesion has its own stream: anatomy and acquisition are the same with or without it.
    if lesion_rng.random() < lesion_probability:
        _paint_lesion(lesion_rng, anat, mask, lesion_radius)
    image = _acquire(probe_rng, anat, speckle, scale)
    return _Frame(image, mask, anat.decoys & ~mask)


def _validate(height, width, lesion_probability, lesion_radius, speckle) -> None:
    if height < _MIN_SIDE or width < _MIN_SIDE:
        raise ValueError(f"height and width must be at least {_MIN_SIDE}, got {height}x{width}")
    if not 0.0 <= lesion_probability <= 1.0:  # also rejects NaN
        raise ValueError(f"lesion_probability must be in [0, 1], got {lesion_probability}")
    lo, hi = lesion_radius
    if not 0.0 < lo <= hi < np.inf:
        raise ValueError(f"lesion_radius must satisfy 0 < min <= max, got ({lo}, {hi})")
    if not 0.0 <= speckle < np.inf:
        raise ValueError(f"speckle must be >= 0, got {speckle}")


def _children(seed, n: int) -> list[np.random.SeedSequence]:
    """``n`` independent child seeds, without mutating a SeedSequence the caller passed.

    ``SeedSequence.spawn`` counts its children, so calling it on the caller's object twice
    would give different images; building the children by spawn key gives the same ones.
    """
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return [
        np.random.SeedSequence(
            root.entropy, spawn_key=(*root.spawn_key, k), pool_size=root.pool_size
        )
        for k in range(n)
    ]


# --- random fields -------------------------------------------------------------------------


def _kernel(n: int, scale: float) -> np.ndarray:
    """(n, m) float32 Gaussian weights mapping an m-node coarse grid (spacing ``scale`` px)."""
    scale = max(scale, 1.0)
    nodes = np.arange(int(n / scale) + 8, dtype=np.float32)
    pos = np.arange(n, dtype=np.float32) / np.float32(scale) + 4.0
    weights = np.exp(-0.5 * (pos[:, None] - nodes[None, :]) ** 2)
    # Far tails underflow to float32 denormals, which slow the matrix products ~10x.
    weights[weights < 1e-12] = 0.0
    return weights


def _field(rng, shape, sy: float, sx: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field, correlation ~(``sy``, ``sx``) px; float32.

    Along an axis with a long correlation, coarse white noise is upsampled with Gaussian
    weights (a small matrix product), far cheaper than a wide filter at full size; along a
    short one a plain 1-D Gaussian filter is cheaper than the (dense) weight matrix.
    """
    ky = None if sy <= 4.0 else _kernel(shape[0], sy)
    kx = None if sx <= 4.0 else _kernel(shape[1], sx)
    grid = (shape[0] if ky is None else ky.shape[1], shape[1] if kx is None else kx.shape[1])
    field = rng.standard_normal(grid, dtype=np.float32)
    if ky is None:
        field = ndi.gaussian_filter1d(field, sy, axis=0, truncate=3.0)
    if kx is None:
        field = ndi.gaussian_filter1d(field, sx, axis=1, truncate=3.0)
    if ky is not None:
        field = _matmul(ky, field)
    if kx is not None:
        field = _matmul(field, kx.T)
    return (field - field.mean()) / (field.std() + 1e-6)


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` in row blocks small enough that OpenBLAS runs each one single-threaded.

    These products are tiny; BLAS threads fighting for cores with other work (a busy
    machine, parallel data-loader workers) made them ~4x slower than one thread.
    """
    rows = max(1, 200_000 // (a.shape[1] * b.shape[1]))
    if rows >= a.shape[0]:
        return a @ b
    return np.concatenate([a[i : i + rows] @ b for i in range(0, a.shape[0], rows)])


def _profile(rng, n: int, corr: float) -> np.ndarray:
    """Smooth zero-mean unit-std 1-D random profile of length ``n``, correlation ~``corr`` px."""
    white = rng.standard_normal(n + int(6 * corr) + 2)
    line = ndi.gaussian_filter1d(white, max(corr, 0.5))[int(3 * corr) + 1 :][:n]
    return ((line - line.mean()) / (line.std() + 1e-9)).astype(np.float32)


def _sig(z) -> np.ndarray:
    """Logistic step, 0 -> 1 over a few units of ``z``."""
    return 0.5 + 0.5 * np.tanh(z)


# --- anatomy -------------------------------------------------------------------------------


def _anatomy(rng, shape, s: float) -> _Anatomy:
    """Layered breast echogenicity and attenuation maps plus decoy structures."""
    h, w = shape
    y = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)

    # Layer boundaries, each a row per column; the gland surface rises in peaks where
    # Cooper's ligaments pull it towards the skin.
    skin = rng.uniform(1.0, 6.0) * s + 1.2 * s * _profile(rng, w, 60 * s)
    dermis = skin + rng.uniform(7.0, 14.0) * s * (1.0 + 0.12 * _profile(rng, w, 40 * s))
    fat_t = rng.uniform(0.10, 0.30) * h
    n_lig = max(1, round(rng.uniform(3, 8) * w / 512))
    lig_x = rng.uniform(0, w, n_lig)
    peaks = np.zeros(w, np.float32)
    for x0 in lig_x:
        width_k = rng.uniform(12.0, 35.0) * s
        peaks += rng.uniform(0.1, 0.35) * fat_t * np.exp(-(((xs - x0) / width_k) ** 2))
    gland_top = dermis + fat_t * (1.0 + 0.3 * _profile(rng, w, 90 * s)) - peaks
    gland_top = np.maximum(gland_top, dermis + 3.0 * s)
    gland_bottom = gland_top + rng.uniform(0.4, 0.75) * h * (1 + 0.15 * _profile(rng, w, 120 * s))
    muscle_top = gland_bottom + rng.uniform(0.03, 0.08) * h * (1 + 0.3 * _profile(rng, w, 80 * s))

    inside = _sig((y - skin) / 0.8)
    w_derm = inside * (1.0 - _sig((y - dermis) / 1.2))
    w_gland = _sig((y - gland_top) / (2.0 * s + 0.5)) * (1.0 - _sig((y - gland_bottom) / (4 * s)))
    w_mus = _sig((y - muscle_top) / 1.5)
    w_fat = np.clip(inside - w_derm - w_gland - w_mus, 0.0, None)

    # Fine tissue texture below the speckle scale, shared by the soft-tissue layers.
    grain = _field(rng, shape, 3.0 * s, 6.0 * s)
    fat_level = rng.uniform(0.2, 0.32)
    fat = _fat_texture(rng, shape, s, fat_level, grain)
    gland = _gland_texture(rng, shape, s, gland_top, fat, grain)
    muscle = _muscle_texture(rng, shape, s)
    dermis_level = rng.uniform(0.65, 1.0) * (1.0 + 0.15 * grain)
    echo = 0.015 * (1.0 - inside) + dermis_level * w_derm + fat * w_fat
    echo += gland * w_gland + muscle * w_mus
    # Specular interfaces: skin entry echo (the brightest line), deep dermis, fasciae.
    # Fasciae are discontinuous because they are only specular where locally flat.
    echo += rng.uniform(2.2, 3.5) * np.exp(-(((y - skin) / (1.1 * s + 0.4)) ** 2))
    echo += rng.uniform(0.6, 1.2) * np.exp(-(((y - dermis) / (1.0 * s + 0.4)) ** 2))
    for row, amp in ((gland_top, (0.2, 0.5)), (muscle_top, (0.6, 1.2))):
        patchy = np.clip(0.6 + 0.6 * _profile(rng, w, 30 * s), 0.0, None)
        echo += rng.uniform(*amp) * patchy * np.exp(-(((y - row) / (1.2 * s + 0.4)) ** 2))

    # Round-trip attenuation: gland attenuates more than fat; scaled per px of this frame.
    a_gland = rng.uniform(0.009, 0.015) / s
    a_fat = a_gland * rng.uniform(0.5, 0.8)
    atten = a_fat * w_fat + a_gland * (w_gland + 1.4 * w_derm) + 1.1 * a_gland * w_mus
    nominal = atten.mean(axis=1)  # what the sonographer's TGC is set against

    decoys = np.zeros(shape, bool)
    anat = _Anatomy(echo, atten, nominal, dermis, gland_bottom, decoys)
    _ligaments(rng, anat, s, lig_x, gland_top, gland_bottom)
    for _ in range(int(rng.integers(1, 4))):
        _paint_duct(rng, anat, s, gland_top, gland_bottom)
    for _ in range(int(rng.integers(1, 5))):
        _paint_lobule(rng, anat, s, fat, gland_top, gland_bottom)
    for _ in range(int(rng.integers(0, 3))):
        _paint_fibrous_shadow(rng, anat, s, gland_top, gland_bottom)
    return anat


def _fat_texture(rng, shape, s: float, level: float, grain) -> np.ndarray:
    """Fat: mid-grey lobules framed by thin echogenic septa, (H, W) float32."""
    # The zero level set of a smooth random field is a network of closed curves: septa.
    f = _field(rng, shape, 7.0 * s, 16.0 * s)
    septa = np.exp(-((f / 0.13) ** 2))
    return level * np.exp(0.15 * grain) * (1.0 + rng.uniform(0.6, 1.3) * septa)


def _gland_texture(rng, shape, s: float, gland_top, fat, grain) -> np.ndarray:
    """Fibroglandular tissue: bright, streaky along the gland surface, with fatty islands."""
    h, w = shape
    # Build the streaks in a frame where the gland surface is flat, then shift each column
    # so the strands follow the anatomy instead of running perfectly horizontally.
    shift = np.rint(gland_top - gland_top.min()).astype(int)
    extra = int(shift.max()) + 1
    streak = _field(rng, (h + extra, w), rng.uniform(1.5, 3.0) * s, rng.uniform(14, 35) * s)
    rows = np.arange(h)[:, None] - shift[None, :] + extra - 1
    streak = np.take_along_axis(streak, np.clip(rows, 0, h + extra - 1), axis=0)
    tex = np.exp(rng.uniform(0.3, 0.5) * streak + 0.15 * grain)
    # Fatty islands: amorphous, not compact, mid-grey (diffuse decoys of low contrast).
    islands = _sig((_field(rng, shape, 12 * s, 30 * s) - rng.uniform(1.0, 1.8)) / 0.3)
    return tex * (1.0 - 0.9 * islands) + fat * 0.9 * islands


def _muscle_texture(rng, shape, s: float) -> np.ndarray:
    """Pectoralis: mid-grey with bright, slightly oblique fibro-fatty striations."""
    h, w = shape
    tilt = rng.uniform(-0.12, 0.12)
    offs = np.rint(tilt * np.arange(w)).astype(int)
    offs -= offs.min()
    extra = int(offs.max()) + 1
    f = _field(rng, (h + extra, w), 2.0 * s, 45.0 * s)
    f = np.take_along_axis(f, np.arange(h)[:, None] + offs[None, :], axis=0)
    return rng.uniform(0.35, 0.55) * (1.0 + 1.5 * np.exp(-((f / 0.2) ** 2)))


def _bezier(p0, p1, p2, spacing: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points (ys, xs) along a quadratic Bezier curve ~``spacing`` px apart, and tangent angles."""
    length = np.hypot(*np.subtract(p1, p0)) + np.hypot(*np.subtract(p2, p1))
    t = np.linspace(0.0, 1.0, int(length / spacing) + 2)[:, None]
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * np.asarray(p1) + t**2 * np.asarray(p2)
    tan = 2 * (1 - t) * (np.asarray(p1) - p0) + 2 * t * (np.asarray(p2) - p1)
    return pts[:, 0], pts[:, 1], np.arctan2(tan[:, 0], tan[:, 1])


def _ligaments(rng, anat: _Anatomy, s: float, lig_x, gland_top, gland_bottom) -> None:
    """Cooper's ligaments and intraglandular curvilinear echoes, with thin edge shadows."""
    h, w = anat.echo.shape
    ys, xs, gains, shades = [], [], [], []

    def add(p0, p1, p2, amp, shadow):
        y, x, ang = _bezier(np.asarray(p0, float), p1, p2)
        # Specular: a reflector perpendicular to the beam (horizontal) returns most.
        gains.append(amp * (0.25 + 0.75 * np.cos(ang) ** 2))
        # Steep segments refract the beam away and leave a thin shadow below.
        shades.append(shadow * np.sin(ang) ** 2)
        ys.append(y)
        xs.append(x)

    for x0 in lig_x:  # from a gland peak up through the fat to the dermis
        i0 = int(np.clip(x0, 0, w - 1))
        top = float(gland_top[i0])
        reach = (top - float(anat.dermis[i0])) * rng.uniform(0.5, 1.5)
        x1 = float(np.clip(x0 + rng.choice([-1, 1]) * reach, 0, w - 1))
        y1 = float(anat.dermis[int(x1)])
        mid = ((top + y1) / 2 + rng.uniform(-0.2, 0.2) * reach, (x0 + x1) / 2)
        mid = (mid[0], mid[1] + rng.uniform(-0.3, 0.3) * reach)
        shadow = rng.uniform(0.01, 0.03) if rng.random() < 0.5 else 0.0
        add((top, x0), mid, (y1, x1), rng.uniform(0.8, 1.6), shadow)
    n_in = round(rng.uniform(4, 12) * w / 512)
    for _ in range(n_in):  # arcs inside the gland
        x0 = rng.uniform(0, w)
        i0 = int(np.clip(x0, 0, w - 1))
        y0 = rng.uniform(gland_top[i0], min(float(gland_bottom[i0]), h))
        span = rng.uniform(20.0, 90.0) * s
        x1 = x0 + rng.choice([-1, 1]) * span
        y1 = y0 + rng.uniform(-0.2, 0.2) * span
        mid = ((y0 + y1) / 2 + rng.uniform(-0.15, 0.15) * span, (x0 + x1) / 2)
        shadow = rng.uniform(0.01, 0.03) if rng.random() < 0.3 else 0.0
        add((y0, x0), mid, (y1, x1), rng.uniform(0.4, 0.9), shadow)

    y = np.concatenate(ys)
    x = np.concatenate(xs)
    keep = (y >= 0) & (y <= h - 1) & (x >= 0) & (x <= w - 1)
    iy, ix = np.rint(y[keep]).astype(int), np.rint(x[keep]).astype(int)
    if iy.size == 0:
        return
    # Splat the points, then blur to a thin line, over the rows the curves occupy only.
    r0, r1 = max(int(iy.min()) - 6, 0), min(int(iy.max()) + 7, h)
    idx = (iy - r0) * w + ix
    for weights, target, boost in ((gains, anat.echo, 1.1), (shades, anat.atten, 1.0)):
        splat = np.bincount(idx, np.concatenate(weights)[keep], minlength=(r1 - r0) * w)
        splat = splat.reshape(r1 - r0, w).astype(np.float32)
        target[r0:r1] += boost * ndi.gaussian_filter(splat, (1.2 * s + 0.3, 1.4 * s + 0.3))


def _box(cy, cx, ext, shape) -> tuple[slice, slice]:
    """Slices of the square of half-side ``ext`` px around (cy, cx), clipped to the frame."""
    h, w = shape
    y0, y1 = max(int(cy - ext), 0), min(int(cy + ext) + 2, h)
    x0, x1 = max(int(cx - ext), 0), min(int(cx + ext) + 2, w)
    return slice(y0, y1), slice(x0, x1)


def _paint_duct(rng, anat: _Anatomy, s: float, gland_top, gland_bottom) -> None:
    """Decoy: a dark, elongated, gently curved duct with bright walls, roughly horizontal."""
    h, w = anat.echo.shape
    half = rng.uniform(25.0, 110.0) * s
    cx = rng.uniform(0.1, 0.9) * w
    i = int(cx)
    lo_y = float(gland_top[i]) + 4 * s
    hi_y = min(float(gland_bottom[i]), h - 6 * s)
    cy = rng.uniform(lo_y, max(hi_y, lo_y + 1))
    slope, bend = rng.uniform(-0.3, 0.3), rng.uniform(-1.0, 1.0) * 0.25 / half
    hw0 = rng.uniform(2.0, 5.5) * s
    level = rng.uniform(0.2, 0.45)  # lumen echo relative to the tissue around
    beads = rng.uniform(0, 2 * np.pi, 2)
    box = _box(cy, cx, half + 2, (h, w))
    yy = np.arange(box[0].start, box[0].stop, dtype=np.float32)[:, None]
    xx = np.arange(box[1].start, box[1].stop, dtype=np.float32)[None, :] - np.float32(cx)
    centre = cy + slope * xx + bend * xx**2
    along = np.clip(1.0 - (xx / half) ** 2, 0.0, None)
    hw = hw0 * along**0.4 * (1.0 + 0.2 * np.sin(xx / (9 * s) + beads[0]))
    dist = np.abs(yy - centre) / np.sqrt(1.0 + (slope + 2 * bend * xx) ** 2)
    lumen = _sig((hw - dist) / 0.7) * (hw > 0.5)
    wall = np.exp(-(((dist - hw - 0.8) / (0.9 * s + 0.3)) ** 2)) * (hw > 0.5)
    echo = anat.echo[box]
    echo *= (1.0 - lumen * (1.0 - level)) * (1.0 + rng.uniform(0.3, 0.8) * wall)
    # Fluid attenuates little: a faint brighter trail below.
    anat.atten[box] -= rng.uniform(0.0, 0.04) * lumen / max(hw0, 1.0)
    anat.decoys[box] |= dist < hw


def _star(table_theta, table_r, cy, cx, box) -> tuple[np.ndarray, np.ndarray]:
    """Inside test and radial coordinate (1 on the outline) of a star shape over ``box``."""
    dy = np.arange(box[0].start, box[0].stop, dtype=np.float32)[:, None] - np.float32(cy)
    dx = np.arange(box[1].start, box[1].stop, dtype=np.float32)[None, :] - np.float32(cx)
    bound = np.interp(np.arctan2(dy, dx), table_theta, table_r).astype(np.float32)
    d = np.hypot(dy, dx) / bound
    return d <= 1.0, d


def _outline(rng, radius, aspect, angle, amps, orders) -> tuple[np.ndarray, np.ndarray]:
    """(theta, r) table of a Fourier-perturbed ellipse; ``aspect`` = width / height."""
    theta = np.linspace(-np.pi, np.pi, _TABLE)
    a, b = radius * np.sqrt(aspect), radius / np.sqrt(aspect)
    t = theta - angle
    base = a * b / np.sqrt((b * np.cos(t)) ** 2 + (a * np.sin(t)) ** 2)
    phases = rng.uniform(0, 2 * np.pi, len(orders))
    wobble = (amps[:, None] * np.cos(orders[:, None] * theta[None, :] + phases[:, None])).sum(0)
    return theta, base * np.maximum(1.0 + wobble, 0.35)


def _paint_lobule(rng, anat: _Anatomy, s: float, fat, gland_top, gland_bottom) -> None:
    """Decoy: a fat lobule inside the gland -- dark-ish, flat oval with a thin capsule."""
    h, w = anat.echo.shape
    r = rng.uniform(8.0, 32.0) * s
    orders = np.arange(2, 6)
    theta, table = _outline(
        rng,
        r,
        rng.uniform(1.4, 3.2),
        rng.uniform(-0.3, 0.3),
        rng.uniform(0.02, 0.08, 4) / orders,
        orders,
    )
    cx = rng.uniform(0.05, 0.95) * w
    i = int(cx)
    lo_y = float(gland_top[i])
    hi_y = min(float(gland_bottom[i]), h - 4.0)
    cy = rng.uniform(lo_y, max(hi_y, lo_y + 1))
    box = _box(cy, cx, table.max() + 4, (h, w))
    if box[0].start >= box[0].stop or box[1].start >= box[1].stop:
        return
    inside, d = _star(theta, table, cy, cx, box)
    soft = _sig((1.0 - d) * table.max() / (1.2 * s + 0.4))
    capsule = np.exp(-(((d - 1.0) * table.max() / (1.0 * s + 0.4)) ** 2))
    # Lobule fat is a touch brighter than the fat layer: less dark than lesions on average.
    inner = fat[box] * rng.uniform(0.85, 1.25)
    anat.echo[box] = anat.echo[box] * (1 - soft) + inner * soft
    anat.echo[box] += rng.uniform(0.2, 0.6) * capsule
    anat.decoys[box] |= inside


def _paint_fibrous_shadow(rng, anat: _Anatomy, s: float, gland_top, gland_bottom) -> None:
    """Decoy: a small dense fibrous focus that casts a dark acoustic shadow column."""
    h, w = anat.echo.shape
    cx = rng.uniform(0.05, 0.95) * w
    i = int(cx)
    cy = rng.uniform(float(gland_top[i]) - 10 * s, min(float(gland_bottom[i]), 0.8 * h))
    ry, rx = rng.uniform(1.5, 4.0) * s, rng.uniform(3.0, 14.0) * s
    box = _box(cy, cx, rx + 3, (h, w))
    if box[0].start >= box[0].stop or box[1].start >= box[1].stop:
        return
    yy = np.arange(box[0].start, box[0].stop, dtype=np.float32)[:, None] - np.float32(cy)
    xx = np.arange(box[1].start, box[1].stop, dtype=np.float32)[None, :] - np.float32(cx)
    spot = np.exp(-((yy / ry) ** 2) - (xx / rx) ** 2)
    anat.echo[box] += rng.uniform(0.4, 1.2) * spot
    # Column integral of the spot is ry*sqrt(pi) at its centre: set the shadow factor there.
    anat.atten[box] += -np.log(rng.uniform(0.3, 0.65)) / (ry * np.sqrt(np.pi)) * spot


# --- lesion --------------------------------------------------------------------------------


def _paint_lesion(rng, anat: _Anatomy, mask: np.ndarray, radius_range) -> None:
    """Draw one hypoechoic lesion into the echo / attenuation maps and the mask."""
    h, w = mask.shape
    kind = _KINDS[int(rng.choice(len(_KINDS), p=_KIND_P))]
    lo, hi = radius_range
    radius = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    if kind == "oval":  # wider than tall, parallel to the skin, smooth
        aspect, angle, orders = rng.uniform(1.3, 2.2), rng.uniform(-0.25, 0.25), np.arange(2, 7)
        amps = rng.uniform(0.0, 0.06, orders.size) / orders * 2
        soft = rng.uniform(0.8, 2.0)
    elif kind == "lobulated":  # a few large lobes
        aspect, angle, orders = rng.uniform(1.1, 1.8), rng.uniform(-0.3, 0.3), np.arange(2, 7)
        amps = rng.uniform(0.0, 0.04, orders.size)
        amps[int(rng.integers(1, 4))] = rng.uniform(0.08, 0.16)
        soft = rng.uniform(1.0, 2.5)
    elif kind == "irregular":  # angular / microlobulated, indistinct margin
        aspect, angle, orders = rng.uniform(0.9, 1.6), rng.uniform(-0.7, 0.7), np.arange(2, 15)
        amps = rng.uniform(0.02, 0.12, orders.size) / orders**0.6
        soft = rng.uniform(2.0, 4.5)
    else:  # "tall": taller than wide
        aspect, angle, orders = rng.uniform(0.55, 0.85), rng.uniform(-0.3, 0.3), np.arange(2, 9)
        amps = rng.uniform(0.0, 0.08, orders.size) / orders**0.8
        soft = rng.uniform(1.5, 3.5)
    theta, table = _outline(rng, radius, aspect, angle, amps, orders)

    # Fit below the dermis and inside the frame with a margin for the blurred edge.
    margin = 3.0 + 2.0 * soft
    top_min = float(anat.dermis.max()) + 2.0
    ext_y = table * np.sin(theta)
    ext_x = table * np.cos(theta)
    room_y, room_x = (h - margin) - top_min, w - 2 * margin
    up, down, left, right = -ext_y.min(), ext_y.max(), -ext_x.min(), ext_x.max()
    shrink = min(1.0, 0.95 * room_y / (up + down), 0.95 * room_x / (left + right))
    table, up, down, left, right = (v * shrink for v in (table, up, down, left, right))
    # Prefer the breast parenchyma over the chest wall when there is room.
    y_hi = h - margin - down
    deep = float(np.median(anat.gland_bottom)) - 0.3 * down
    if deep - top_min - up > 0.3 * (y_hi - top_min - up):
        y_hi = min(y_hi, deep)
    cy = rng.uniform(top_min + up, max(y_hi, top_min + up))
    cx = rng.uniform(margin + left, w - margin - right)

    box = _box(cy, cx, table.max() + 3 * soft + 6, (h, w))
    inside, _ = _star(theta, table, cy, cx, box)
    if not inside.any():  # a sub-pixel outline still marks the pixel it sits on
        inside[round(cy) - box[0].start, round(cx) - box[1].start] = True
    inside = _largest_component(inside)
    m = inside.astype(np.float32)
    blur = ndi.gaussian_filter(m, soft, mode="constant")

    # Low, heterogeneous internal echoes; irregular lesions sometimes hold bright microcalcs.
    level = rng.uniform(0.04, 0.22)
    hetero = rng.standard_normal(m.shape, dtype=np.float32)
    inner = level * np.exp(rng.uniform(0.2, 0.5) * _unit(ndi.gaussian_filter(hetero, 3.0)))
    if kind in ("irregular", "tall") and rng.random() < 0.3:
        iy, ix = np.nonzero(inside)
        pick = rng.integers(0, iy.size, int(rng.integers(2, 9)))
        inner[iy[pick], ix[pick]] = rng.uniform(1.0, 2.5, pick.size)
    echo = anat.echo[box]
    echo[...] = echo * (1.0 - blur) + inner * blur
    if kind == "irregular" and rng.random() < 0.4:  # echogenic halo around the margin
        halo = np.clip(ndi.gaussian_filter(m, 2.0 * soft + 2.0, mode="constant") - m, 0.0, None)
        echo *= 1.0 + rng.uniform(0.6, 1.6) * halo * (1.0 - blur)

    # Posterior features: set the lesion's attenuation so the beam through its thickest part
    # comes out ``factor`` times brighter (enhancement) or darker (shadowing).
    thick = float(m.sum(axis=0).max())
    enhance = rng.random() < _ENHANCE_P[kind]
    factor = rng.uniform(1.3, 2.4) if enhance else rng.uniform(0.2, 0.6)
    atten = anat.atten[box]
    atten += -np.log(factor) / thick * blur
    if kind in ("oval", "lobulated") and rng.random() < 0.5:
        # Refraction at the curved lateral margins: thin edge shadows.
        edge = np.abs(np.gradient(blur, axis=1))
        atten += -np.log(rng.uniform(0.4, 0.7)) / (edge.sum(axis=0).max() + 1e-6) * edge
    mask[box] = inside


def _largest_component(inside: np.ndarray) -> np.ndarray:
    """Keep the largest 4-connected component and fill its holes (a pixelised thin spike
    of the outline could otherwise leave a detached pixel)."""
    labels, n = ndi.label(inside)
    if n > 1:
        sizes = np.bincount(labels.ravel())[1:]
        inside = labels == int(np.argmax(sizes)) + 1
    return ndi.binary_fill_holes(inside)


def _unit(a: np.ndarray) -> np.ndarray:
    return (a - a.mean()) / (a.std() + 1e-6)


# --- acquisition ---------------------------------------------------------------------------


def _acquire(rng, anat: _Anatomy, speckle: float, s: float) -> np.ndarray:
    """Beam attenuation, imperfect TGC, speckle, noise floor, log compression -> uint8."""
    h, w = anat.echo.shape
    # The beam has a lateral width, so attenuation below a structure spreads a little.
    atten = ndi.gaussian_filter1d(anat.atten, rng.uniform(1.0, 2.5), axis=1)
    loss = np.cumsum(atten, axis=0)
    # TGC compensates the expected tissue loss, but the operator's setting is a bit off
    # (usually under-compensated, so the deep field darkens) and the sliders are bumpy.
    tgc = np.cumsum(anat.nominal) * rng.uniform(0.65, 1.05)
    tgc += rng.uniform(0.1, 0.3) * _profile(rng, h, h / 8)
    gain = np.exp(tgc[:, None].astype(np.float32) - loss)
    # Imperfect probe contact at one edge of the footprint dims a band of beam lines.
    side = np.arange(w, dtype=np.float32)
    if rng.random() < 0.5:
        side = side[::-1]
    gain *= 1.0 - rng.uniform(0.0, 0.35) * np.exp(-side / (rng.uniform(8, 30) * s))[None, :]
    amp = anat.echo * gain
    floor = np.float32(rng.uniform(0.004, 0.012))  # electronic noise, ~-40 dB re gland
    if speckle > 0:
        amp = amp * _speckle(rng, (h, w), speckle)
        white = np.hypot(*rng.standard_normal((2, h, w), dtype=np.float32))
        amp = amp + floor * (white / np.float32(np.sqrt(np.pi / 2))) ** np.float32(speckle)
    else:
        amp = amp + floor
    # Scan conversion interpolates the detected envelope a little, softening speckle pits.
    db = ndi.gaussian_filter(20.0 * np.log10(amp), (0.7, 1.0), truncate=2.5)
    # Display: the operator sets gain so bright parenchyma sits in the upper grey levels;
    # the window is anchored on a robust tissue level (a percentile, subsampled for speed),
    # not on the brightest echoes.  A slight gamma keeps lesions and fluid close to black.
    ref = float(np.percentile(db[::2, ::2], 75))
    drange = rng.uniform(50.0, 62.0)
    low = ref + rng.uniform(15.0, 21.0) - drange
    shown = np.clip((db - low) / drange, 0.0, 1.0) ** rng.uniform(1.1, 1.5)
    return np.rint(255.0 * shown).astype(np.uint8)


def _speckle(rng, shape, strength: float) -> np.ndarray:
    """Multiplicative speckle, (H, W) float32 with mean 1 on every row.

    The envelope of circular complex Gaussian noise smoothed by the PSF is Rayleigh
    distributed.  The PSF is narrow axially and wide laterally, so grains are elongated
    laterally; away from the focal depth the beam widens, imitated by blending in a
    laterally smoothed copy (any linear mix of the field stays circular complex Gaussian,
    so the envelope stays Rayleigh).  ``strength`` raises the envelope to a power, i.e.
    scales the std of the log-amplitude the display shows.
    """
    h, _ = shape
    ax, lat = rng.uniform(1.1, 1.6), rng.uniform(2.8, 4.2)
    focus = rng.uniform(0.25, 0.6) * h
    depth = np.arange(h, dtype=np.float32)[:, None]
    far = np.clip(np.abs(depth - focus) / (0.6 * h), 0.0, 1.0)
    near = np.sqrt(1.0 - far**2)
    wide = rng.uniform(1.5, 2.5) * lat
    parts = []
    for _ in range(2):  # real and imaginary parts
        noise = rng.standard_normal(shape, dtype=np.float32)
        focal = ndi.gaussian_filter(noise, (ax, lat), truncate=3.0)
        blurred = ndi.gaussian_filter1d(focal, wide, axis=1, truncate=3.0)
        parts.append(near * focal / focal.std() + far * blurred / blurred.std())
    env = np.hypot(parts[0], parts[1])
    if strength != 1.0:
        env = env ** np.float32(strength)
    # Per row, as the blend changes the field's variance with depth.
    return env / env.mean(axis=1, keepdims=True)
