"""Seeded synthetic aerial RGB views of a parking lot, with exact 3-class masks.

Each sample imitates an orthophoto (nadir drone or aircraft view) of part of a parking lot:
rows of bays back to back between driving aisles, at a random orientation and ground
resolution.  Asphalt (class 0) has a tint, multi-scale texture, repaired patches, oil stains
and cracks, under soft cloud shading.  Bays are separated by painted lines (class 2), white
or yellow per lot and partly worn, with an optional centre line between back-to-back rows.
Cars (class 1) are rounded rectangles in common body colours (mostly white, silver, grey and
black, some red, blue, green or beige), parked with small offsets and angles, a few driving
in the aisles; each has a windscreen and rear window, a lighter roof and a cast shadow on the
ground (the shadow is asphalt).

Colour matters: yellow markings are about as bright as silver or grey cars, so a grey copy
of the frame loses what tells them apart at a glance.  The mask holds the exact drawn shapes,
before blur: lines first, then cars on top, so a marking under a car belongs to the car.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from segbench.data.synthetic import _smooth_noise

ASPHALT, CAR, MARKING = 0, 1, 2
_MIN_SIDE = 64
# Body colours (display RGB in [0, 1]) and how often cars wear them.
_BODY = np.array(
    [
        (0.90, 0.90, 0.88),  # white
        (0.68, 0.69, 0.71),  # silver
        (0.42, 0.43, 0.45),  # grey
        (0.07, 0.07, 0.08),  # black
        (0.10, 0.14, 0.32),  # dark blue
        (0.62, 0.08, 0.07),  # red
        (0.16, 0.32, 0.66),  # blue
        (0.12, 0.30, 0.18),  # green
        (0.74, 0.67, 0.54),  # beige
    ],
    np.float32,
)
_BODY_CDF = np.cumsum([0.22, 0.16, 0.14, 0.18, 0.05, 0.08, 0.08, 0.04, 0.05])[:-1]
_PAINT = {"white": (0.92, 0.92, 0.89), "yellow": (0.90, 0.74, 0.16)}
_GLASS = np.array((0.10, 0.12, 0.15), np.float32)


def generate_parking(
    seed: int | np.random.SeedSequence,
    *,
    height: int = 768,
    width: int = 1024,
    noise: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (image, mask): image (H, W, 3) uint8 RGB in [0, 255]; mask (H, W) uint8 in {0, 1, 2}.

    Mask classes: 0 asphalt (and everything else on the ground), 1 car, 2 line marking.  The
    ground resolution scales with the frame (about 12 px per metre at 1024 px wide) but stays
    above about 7 px per metre, so cars and lines remain recognisable in small frames.
    ``noise`` (>= 0) multiplies the sensor noise sigma and changes no random draw: the same seed
    gives the same scene.
    """
    _validate(height, width, noise)
    rng = np.random.default_rng(seed)
    shape = (height, width)
    s = rng.uniform(0.8, 1.2) * max(12.0 * max(shape) / 1024.0, 7.0)  # px per metre
    lot = _Lot(rng, shape, s)
    image = _asphalt(rng, shape, s)
    mask = np.zeros(shape, np.uint8)
    _paint_lines(rng, lot, image, mask)
    cars = _cars(rng, lot)
    ground = np.ones(shape, np.float32)
    sun = rng.uniform(0.0, 2.0 * np.pi)
    shift = rng.uniform(0.3, 0.9) * s * np.array([np.sin(sun), np.cos(sun)])
    for car in cars:
        _cast_shadow(car, shift, s, ground)
    image *= ground[..., None]
    for car in cars:
        _paint_car(car, image, mask)
    return _acquire(rng, image, noise), mask


def _validate(height, width, noise) -> None:
    if int(height) != height or int(width) != width:
        raise ValueError(f"height and width must be integers, got {height}x{width}")
    if height < _MIN_SIDE or width < _MIN_SIDE:
        raise ValueError(f"height and width must be at least {_MIN_SIDE}, got {height}x{width}")
    if not 0.0 <= noise < np.inf:  # also rejects NaN
        raise ValueError(f"noise must be a finite number >= 0, got {noise}")


class _Lot:
    """The bay grid: lot axes (u along the rows, v across them) and the sizes in px."""

    def __init__(self, rng, shape, s: float):
        h, w = shape
        self.shape = shape
        self.angle = rng.uniform(0.0, np.pi)
        self.cy, self.cx = h / 2.0, w / 2.0
        self.s = s  # px per metre
        self.bay = rng.uniform(2.4, 2.9) * s  # bay width along u
        self.depth = rng.uniform(4.8, 5.6) * s  # bay depth along v
        self.aisle = rng.uniform(5.5, 7.5) * s
        self.period = self.aisle + 2.0 * self.depth
        self.u0 = rng.uniform(0.0, self.bay)
        self.v0 = rng.uniform(0.0, self.period)
        self.line = max(rng.uniform(0.12, 0.2) * s, 2.0)  # line width, px
        self.centre_line = rng.random() < 0.6
        self.end_lines = rng.random() < 0.3
        self.stub = rng.uniform(0.0, 0.5) * s  # separators stop this short of the aisle
        self.paint = np.array(_PAINT["yellow" if rng.random() < 0.5 else "white"], np.float32)

    def to_lot(self, y, x):
        c, sn = np.float32(np.cos(self.angle)), np.float32(np.sin(self.angle))
        dy, dx = y - np.float32(self.cy), x - np.float32(self.cx)
        return dx * c + dy * sn, -dx * sn + dy * c

    def to_image(self, u, v):
        c, sn = np.cos(self.angle), np.sin(self.angle)
        return self.cy + u * sn + v * c, self.cx + u * c - v * sn

    def bay_range(self):
        """(k, j) index ranges of the bays whose cells can touch the frame."""
        h, w = self.shape
        u, v = self.to_lot(np.array([0.0, 0.0, h, h]), np.array([0.0, w, 0.0, w]))
        k0, k1 = np.floor((u.min() - self.u0) / self.bay), np.ceil((u.max() - self.u0) / self.bay)
        j0 = np.floor((v.min() - self.v0) / self.period)
        j1 = np.ceil((v.max() - self.v0) / self.period)
        return range(int(k0) - 1, int(k1) + 1), range(int(j0) - 1, int(j1) + 1)


def _asphalt(rng, shape, s: float) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 1] of the bare ground: tinted, textured, patched, stained."""
    level = rng.uniform(0.26, 0.46)
    tint = 1.0 + rng.normal(0.0, 0.035, 3).astype(np.float32)
    rough = (
        rng.uniform(0.04, 0.07) * rng.standard_normal(shape, dtype=np.float32)  # blurred later
        + rng.uniform(0.03, 0.06) * _smooth_noise(rng, shape, 0.6 * s)
        + rng.uniform(0.04, 0.08) * _smooth_noise(rng, shape, 5.0 * s)
    )
    grey = level * (1.0 + rough)
    h, w = shape
    for _ in range(int(rng.integers(0, 4))):  # resurfaced rectangles, darker or lighter
        centre, angle = rng.uniform((0, 0), (h, w)), rng.uniform(0.0, np.pi)
        hu, hv = rng.uniform(1.0, 6.0, 2) * s
        framed = _rotated_frame(*centre, angle, np.hypot(hu, hv), shape)
        gain = rng.uniform(0.8, 1.2)
        if framed is not None:
            box, u, v = framed
            grey[box] *= np.where((np.abs(u) < hu) & (np.abs(v) < hv), np.float32(gain), 1.0)
    for _ in range(int(rng.integers(2, 12) * h * w / (768 * 1024)) + 1):  # oil stains
        centre, size = rng.uniform((0, 0), (h, w)), rng.uniform(0.3, 0.7) * s
        strength = rng.uniform(0.2, 0.45)
        framed = _rotated_frame(*centre, 0.0, 3.0 * size, shape)
        if framed is not None:
            box, u, v = framed
            grey[box] *= 1.0 - strength * np.exp(-(u * u + v * v) / np.float32(2 * size**2))
    grey *= _cracks(rng, shape, s)
    return np.clip(grey, 0.02, None)[..., None] * tint


def _cracks(rng, shape, s: float) -> np.ndarray:
    """Multiplicative darkening (H, W) float32 along a few random-walk cracks."""
    h, w = shape
    out = np.ones(shape, np.float32)
    for _ in range(int(rng.integers(0, 6))):
        steps = int(rng.uniform(5.0, 25.0) * s)
        heading = rng.uniform(0.0, 2.0 * np.pi) + np.cumsum(rng.normal(0.0, 0.15, steps))
        ys = (rng.uniform(0, h) + np.cumsum(np.sin(heading))).astype(int)
        xs = (rng.uniform(0, w) + np.cumsum(np.cos(heading))).astype(int)
        keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        out[ys[keep], xs[keep]] = rng.uniform(0.5, 0.8)
    return out


def _paint_lines(rng, lot: _Lot, image: np.ndarray, mask: np.ndarray) -> None:
    """Bay separators (and centre/end lines) into image (partly worn) and mask (exact)."""
    h, w = lot.shape
    u, v = lot.to_lot(
        np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    )
    half = lot.line / 2.0
    vm = _wrap(v - np.float32(lot.v0), lot.period)  # aisle in [0, aisle), then 2 rows of bays
    du = _wrap(u - np.float32(lot.u0), lot.bay)
    sep = (np.minimum(du, lot.bay - du) <= half) & (vm >= lot.aisle + lot.stub)
    sep &= vm <= lot.period - lot.stub
    lines = sep
    if lot.centre_line:
        lines |= np.abs(vm - (lot.aisle + lot.depth)) <= half
    if lot.end_lines:
        lines |= (np.abs(vm - lot.aisle) <= half) | (np.minimum(vm, lot.period - vm) <= half)
    # Worn paint: a coarse field looked up at the line pixels only (cheaper than full size).
    coarse = _smooth_noise(rng, (h // 4 + 1, w // 4 + 1), 1.0)
    ys, xs = np.nonzero(lines)
    wear = np.clip(0.8 + 0.25 * coarse[ys // 4, xs // 4], 0.35, 1.0)
    image[ys, xs] = image[ys, xs] * (1.0 - wear[:, None]) + lot.paint * wear[:, None]
    mask[ys, xs] = MARKING


def _wrap(x: np.ndarray, period: float) -> np.ndarray:
    """``x`` modulo ``period``, in [0, period), computed in place (np.mod is ~10x slower)."""
    q = np.floor(x * np.float32(1.0 / period))
    q *= np.float32(period)
    x -= q
    return x


class _Car(NamedTuple):
    cy: float  # centre, px
    cx: float
    angle: float  # direction of the nose, radians (x towards y)
    hl: float  # half length, half width and corner radius, px
    hw: float
    corner: float
    colour: np.ndarray  # (3,) float32 body RGB in [0, 1]
    front: float  # where the windscreen starts, fraction of the length from the nose
    cabin: float  # cabin length, fraction of the length


def _cars(rng, lot: _Lot) -> list[_Car]:
    """The parked cars (one per occupied bay) and a few driving along the aisles."""
    s = lot.s
    h, w = lot.shape
    occupancy = rng.uniform(0.25, 0.95)
    ks, js = lot.bay_range()
    out = []
    for j in js:
        for row in (0, 1):  # the two back-to-back rows of bays after each aisle
            vc = lot.v0 + j * lot.period + lot.aisle + (row + 0.5) * lot.depth
            for k in ks:
                occupied, jitter, flip = rng.random(), rng.normal(0.0, 1.0, 3), rng.random()
                car = _car(rng, s, (0.0, 0.0), 0.0)
                uc = lot.u0 + (k + 0.5) * lot.bay + 0.15 * s * jitter[0]
                vcar = vc + np.clip(0.25 * s * jitter[1], -0.4 * s, 0.4 * s)
                cy, cx = lot.to_image(uc, vcar)
                margin = car.hl + 2.0 * s  # the car or its shadow may reach into the frame
                near = -margin < cy < h + margin and -margin < cx < w + margin
                if occupied > occupancy or not near:
                    continue
                angle = lot.angle + np.pi / 2 + np.deg2rad(3.0) * jitter[2]
                angle += np.pi * (flip < 0.3)  # most drivers park nose in
                out.append(car._replace(cy=float(cy), cx=float(cx), angle=float(angle)))
    for _ in range(int(rng.poisson(0.8))):
        u, v = lot.to_lot(rng.uniform(0, h), rng.uniform(0, w))
        v = lot.v0 + np.floor((v - lot.v0) / lot.period) * lot.period
        v += lot.aisle * rng.uniform(0.35, 0.65)
        angle = lot.angle + np.pi * (rng.random() < 0.5) + rng.normal(0.0, 0.1)
        out.append(_car(rng, s, lot.to_image(u, v), angle))
    return out


def _car(rng, s: float, centre, angle: float) -> _Car:
    """A car of a random size, shape and paint at ``centre`` (y, x) px heading ``angle``."""
    kind = rng.random()
    if kind < 0.1:  # van
        hl, hw = rng.uniform(2.5, 2.9) * s, rng.uniform(0.98, 1.05) * s
    elif kind < 0.25:  # small car
        hl, hw = rng.uniform(1.75, 1.95) * s, rng.uniform(0.8, 0.86) * s
    else:
        hl, hw = rng.uniform(2.05, 2.45) * s, rng.uniform(0.86, 0.96) * s
    colour = _BODY[int(np.searchsorted(_BODY_CDF, rng.random()))] * rng.uniform(0.88, 1.08)
    colour = colour * (1.0 + rng.normal(0.0, 0.02, 3))  # paint and fading, slightly tinted
    return _Car(
        cy=float(centre[0]),
        cx=float(centre[1]),
        angle=float(angle),
        hl=float(hl),
        hw=float(hw),
        corner=float(rng.uniform(0.25, 0.45) * s),
        colour=colour.astype(np.float32),
        front=float(rng.uniform(0.18, 0.32)),
        cabin=float(rng.uniform(0.38, 0.5)),
    )


def _rotated_frame(cy: float, cx: float, angle: float, ext: float, shape):
    """Box of half size ``ext`` around (cy, cx) and coordinates (px) there along ``angle``.

    None when the box misses the frame.  ``along`` points along ``angle`` (a car's nose).
    """
    h, w = shape
    y0, y1 = max(int(cy - ext), 0), min(int(cy + ext) + 2, h)
    x0, x1 = max(int(cx - ext), 0), min(int(cx + ext) + 2, w)
    if y0 >= y1 or x0 >= x1:
        return None
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    c, sn = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return (slice(y0, y1), slice(x0, x1)), dx * c + dy * sn, -dx * sn + dy * c


def _rounded_box(along, across, hl: float, hw: float, r: float) -> np.ndarray:
    """Signed distance (px) to a rounded rectangle of half sizes hl x hw, corner radius r."""
    qa, qb = np.abs(along) - np.float32(hl - r), np.abs(across) - np.float32(hw - r)
    outside = np.hypot(np.maximum(qa, 0.0), np.maximum(qb, 0.0))
    return outside + np.minimum(np.maximum(qa, qb), 0.0) - np.float32(r)


def _cast_shadow(car: _Car, shift, s: float, ground: np.ndarray) -> None:
    """Darken ``ground`` under the car's soft shadow, offset by ``shift`` (dy, dx) px."""
    ext = np.hypot(car.hl, car.hw) + 0.5 * s
    framed = _rotated_frame(car.cy + shift[0], car.cx + shift[1], car.angle, ext, ground.shape)
    if framed is None:
        return
    box, along, across = framed
    d = _rounded_box(along, across, car.hl, car.hw, car.corner + 0.1 * s)
    dark = 1.0 - 0.5 * np.clip(0.5 - d / np.float32(0.35 * s), 0.0, 1.0)
    np.minimum(ground[box], dark, out=ground[box])


def _paint_car(car: _Car, image: np.ndarray, mask: np.ndarray) -> None:
    """Body, windows, roof and highlight into the image; the exact footprint into the mask."""
    framed = _rotated_frame(car.cy, car.cx, car.angle, np.hypot(car.hl, car.hw) + 1.0, mask.shape)
    if framed is None:
        return
    box, along, across = framed
    inside = _rounded_box(along, across, car.hl, car.hw, car.corner) <= 0.0
    if not inside.any():
        return
    along, across = along[inside], across[inside]
    t = (car.hl - along) / np.float32(2.0 * car.hl)  # 0 at the nose, 1 at the tail
    b = np.abs(across) / np.float32(car.hw)  # 0 on the centre line, 1 at the sides
    front, back = car.front, car.front + car.cabin
    bulge = 0.82 + 0.25 * (1.0 - b**2)  # curved panels catch less light at the sides
    rgb = car.colour * bulge[:, None]
    roof = (t >= front + 0.13) & (t <= back - 0.1) & (b < 0.8)
    rgb[roof] = rgb[roof] * 1.08 + 0.03
    screen = (t > front) & (t < front + 0.13) & (b < 0.86)
    rear = (t > back - 0.1) & (t < back) & (b < 0.82)
    glass = screen | rear
    # Sky reflected in the windscreen: a bright band slanting across it.
    sky = np.clip(0.5 - np.abs(t[glass] - front - 0.04 - 0.05 * b[glass]) * 8.0, 0.0, 1.0)
    rgb[glass] = _GLASS * (1.0 + 1.2 * sky)[:, None]
    image[box][inside] = rgb
    mask[box][inside] = CAR


def _acquire(rng, image: np.ndarray, noise: float) -> np.ndarray:
    """Cloud shading, white balance, optics blur, sensor noise; (H, W, 3) in [0, 1] -> uint8."""
    h, w = image.shape[:2]
    cloud = 1.0 + rng.uniform(0.04, 0.12) * _smooth_noise(rng, (h, w), max(h, w) / 4.0)
    balance = rng.uniform(0.93, 1.07, 3).astype(np.float32)
    image *= (cloud * np.float32(255.0 * rng.uniform(0.85, 1.1)))[..., None]  # now 0..255
    image *= balance
    sharp = rng.uniform(0.0, 0.4)
    blurred = _binomial_blur(image)
    blurred *= np.float32(1.0 - sharp)
    blurred += image * np.float32(sharp)
    # Shot noise grows with the signal; one draw, scaled, so ``noise`` changes no draw.
    sigma = np.sqrt(blurred + 12.0)  # the scene is > 0 everywhere
    sigma *= np.float32(rng.uniform(0.01, 0.03) * np.sqrt(255.0) * noise)
    sigma *= rng.standard_normal(image.shape, dtype=np.float32)
    blurred += sigma
    blurred += 0.5  # rounds, as astype truncates
    return np.clip(blurred, 0.0, 255.0, out=blurred).astype(np.uint8)


def _binomial_blur(image: np.ndarray) -> np.ndarray:
    """[1, 2, 1] / 4 along rows, then columns (a Gaussian of sigma ~0.7 px); edges repeated.

    Several times cheaper than :func:`scipy.ndimage.gaussian_filter` on interleaved RGB.
    """
    p = np.pad(image, ((1, 1), (0, 0), (0, 0)), mode="edge")
    rows = p[:-2] + p[2:]
    rows += 2.0 * image
    p = np.pad(rows, ((0, 0), (1, 1), (0, 0)), mode="edge")
    out = p[:, :-2] + p[:, 2:]
    out += 2.0 * rows
    out *= np.float32(1.0 / 16.0)
    return out
