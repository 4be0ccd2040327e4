"""Classes as data: which stored mask values (or colours) stand for which class.

A :class:`ClassSpec` is built from ``data.classes`` (or a synthetic domain's own list) and
travels with the data: ``fetch`` writes it to ``data/raw/classes.json``, ``prepare`` copies it
next to the tiles, and every model card records the names and colours it was trained with.

Masks on disk after ``fetch`` hold **class indices** (``0 .. C-1``, background 0). The binary
case keeps its readable ``{0, 255}`` files (index 1 written as 255), so binary data and results
are byte-for-byte what they were before classes became data. :data:`IGNORE` (255) marks
pixels that ``data.ignore_values`` names "not annotated": losses skip them (``ignore_index``)
and metrics count none of them.

Stored masks come in three kinds, all mapped by :meth:`ClassSpec.to_index`:

* **index** masks (PNG/TIFF holding 0, 1, 2 ... or any values each class names);
* **palette** PNGs: read as their indices when classes name values, as their palette colours
  when classes name colours (a palette that disagrees with the class list is then an error);
* **RGB colour-coded** PNGs: each class names its ``color``.

The binary default (``data.classes: null`` for a folder or hub source) keeps the old rules of
:func:`segbench.decode.interpret_mask` (any non-zero value, or ``data.mask.value`` /
``threshold``).
"""

from __future__ import annotations

import colorsys
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segbench.decode import DecodeError, interpret_mask
from segbench.errors import SegbenchError

IGNORE = 255  # index-mask value of a pixel no class claims on purpose (data.ignore_values)
MAX_CLASSES = 254  # indices 0..253 fit a uint8 mask beside IGNORE

# Display colours for classes that name none: background black, then well-separated hues.
_FIXED = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200)]


def default_color(index: int) -> tuple[int, int, int]:
    """A display colour for class ``index`` (black for background, then distinct hues)."""
    if index < len(_FIXED):
        return _FIXED[index]
    hue = (index * 0.618033988749895) % 1.0  # golden-ratio steps keep neighbours apart
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return (round(r * 255), round(g * 255), round(b * 255))


@dataclass(frozen=True)
class ClassSpec:
    """The classes of a dataset, background first.

    ``values[c]``: the stored mask values of class ``c`` (index masks, palette indices), or
    None; ``colors[c]``: the RGB colour that codes class ``c`` in colour masks, or None. With
    ``binary_rule`` set (the binary default), stored masks follow ``data.mask``'s rules.
    """

    names: tuple[str, ...]
    values: tuple[tuple[int, ...] | None, ...] = ()
    colors: tuple[tuple[int, int, int] | None, ...] = ()
    ignore_values: tuple[int, ...] = ()
    ignore_colors: tuple[tuple[int, int, int], ...] = ()
    binary_rule: dict | None = field(default=None, compare=False)

    def __post_init__(self):
        n = len(self.names)
        if not self.values:
            object.__setattr__(self, "values", (None,) * n)
        if not self.colors:
            object.__setattr__(self, "colors", (None,) * n)

    # --- what the class list is -------------------------------------------------------

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def binary(self) -> bool:
        return self.num_classes == 2

    @property
    def by_color(self) -> bool:
        """True when masks code classes by colour (every class names a ``color``)."""
        return all(c is not None for c in self.colors)

    def display_colors(self) -> np.ndarray:
        """(C, 3) uint8 colours for figures: each class's own ``color`` or a default hue."""
        return np.array(
            [c if c is not None else default_color(i) for i, c in enumerate(self.colors)],
            dtype=np.uint8,
        )

    def describe(self) -> str:
        """``background=0, pore=1, ...`` (or colours) for error messages."""
        parts = []
        for name, values, color in zip(self.names, self.values, self.colors, strict=True):
            if color is not None:
                parts.append(f"{name}={tuple(color)}")
            elif values is not None:
                parts.append(f"{name}={'/'.join(str(v) for v in values)}")
            else:
                parts.append(name)
        return ", ".join(parts)

    # --- stored masks -> class indices --------------------------------------------------

    def to_index(self, stored: np.ndarray) -> np.ndarray:
        """A stored mask (H, W) or (H, W, 3|4) -> (H, W) uint8 class indices (``IGNORE`` for
        ignored pixels). A value or colour no class claims raises :class:`DecodeError`
        naming it and the classes (the caller adds the file name)."""
        if self.binary_rule is not None:
            return interpret_mask(stored, **self.binary_rule)
        if self.by_color:
            return self._from_colors(np.asarray(stored))
        return self._from_values(np.asarray(stored))

    def _from_values(self, array: np.ndarray) -> np.ndarray:
        if array.ndim == 3:
            channels = array[..., :3] if array.shape[-1] in (3, 4) else array
            if not (channels == channels[..., :1]).all():
                raise DecodeError(
                    "is a colour mask but data.classes names values, not colours; give each "
                    f"class its color: [R, G, B] (classes: {self.describe()})"
                )
            array = channels[..., 0]
        if array.ndim != 2:
            raise DecodeError(f"has shape {array.shape}; expected a 2-D mask")
        if array.dtype.kind not in "biu":
            raise DecodeError("mask holds non-integer values; save masks as integer label images")
        present = np.unique(array)
        lut: dict[int, int] = {int(v): IGNORE for v in self.ignore_values}
        for index, values in enumerate(self.values):
            for v in values or ():
                lut[int(v)] = index
        unknown = [int(v) for v in present if int(v) not in lut]
        if unknown:
            shown = ", ".join(str(v) for v in unknown[:8]) + (" ..." if len(unknown) > 8 else "")
            raise DecodeError(
                f"holds value(s) {shown} that no class in data.classes claims "
                f"({self.describe()}); add them to a class, to data.ignore_values, or fix the mask"
            )
        out = np.full(array.shape, IGNORE, dtype=np.uint8)
        for v in present:
            out[array == v] = lut[int(v)]
        return out

    def _from_colors(self, array: np.ndarray) -> np.ndarray:
        if array.ndim != 3 or array.shape[-1] not in (3, 4):
            raise DecodeError(
                "is not a colour mask, but data.classes names colours; save masks as RGB or "
                f"palette PNGs in the class colours ({self.describe()})"
            )
        rgb = np.ascontiguousarray(array[..., :3]).astype(np.uint32)
        code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        lut = {_code(c): IGNORE for c in self.ignore_colors}
        for index, color in enumerate(self.colors):
            lut[_code(color)] = index
        present = np.unique(code)
        unknown = [int(c) for c in present if int(c) not in lut]
        if unknown:
            shown = ", ".join(str(_rgb(c)) for c in unknown[:6]) + (
                " ..." if len(unknown) > 6 else ""
            )
            raise DecodeError(
                f"holds colour(s) {shown} that no class in data.classes has "
                f"({self.describe()}); fix the class colours, or the mask (an anti-aliased "
                "or JPEG mask has blended colours: save masks losslessly, without smoothing)"
            )
        out = np.empty(code.shape, dtype=np.uint8)
        for c in present:
            out[code == c] = lut[int(c)]
        return out

    def check_palette(self, palette: np.ndarray | None, used: np.ndarray) -> None:
        """A palette mask read by colour: each *used* entry must be a class colour.

        ``palette`` is (N, 3) uint8, ``used`` the palette indices present in the mask.
        """
        if palette is None or not self.by_color:
            return
        known = {_code(c) for c in self.colors} | {_code(c) for c in self.ignore_colors}
        for i in used:
            color = tuple(int(v) for v in palette[int(i)])
            if _code(color) not in known:
                raise DecodeError(
                    f"palette entry {int(i)} is {color}, which no class in data.classes has "
                    f"({self.describe()}); the mask's palette differs from the class list"
                )

    # --- persistence ----------------------------------------------------------------------

    def to_json(self) -> dict:
        return {
            "names": list(self.names),
            "values": [list(v) if v is not None else None for v in self.values],
            "colors": [list(c) if c is not None else None for c in self.colors],
            "display_colors": self.display_colors().tolist(),
            "ignore_values": list(self.ignore_values),
            "ignore_colors": [list(c) for c in self.ignore_colors],
            "binary_rule": self.binary_rule,
        }

    @classmethod
    def from_json(cls, obj: dict) -> ClassSpec:
        return cls(
            names=tuple(obj["names"]),
            values=tuple(tuple(v) if v is not None else None for v in obj["values"]),
            colors=tuple(tuple(c) if c is not None else None for c in obj["colors"]),
            ignore_values=tuple(obj.get("ignore_values", ())),
            ignore_colors=tuple(tuple(c) for c in obj.get("ignore_colors", ())),
            binary_rule=obj.get("binary_rule"),
        )


CLASSES_FILE = "classes.json"
BINARY = ClassSpec(names=("background", "foreground"), binary_rule={})


CHANNELS = ("gray", "rgb")


def write_classes(folder: str | Path, spec: ClassSpec, *, channels: str = "gray") -> None:
    """``folder/classes.json``: the class list and the images' channels (``gray``/``rgb``)."""
    if channels not in CHANNELS:
        raise ValueError(f"channels must be one of {CHANNELS}, got {channels!r}")
    path = Path(folder) / CLASSES_FILE
    path.write_text(json.dumps({**spec.to_json(), "channels": channels}, indent=2) + "\n")


def _read(folder: str | Path) -> dict | None:
    path = Path(folder) / CLASSES_FILE
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text())
        ClassSpec.from_json(obj)
        if obj.get("channels", "gray") not in CHANNELS:
            raise ValueError(f"channels {obj.get('channels')!r}")
        return obj
    except (ValueError, KeyError, TypeError) as exc:
        raise SegbenchError(
            f"{path}: not a valid class list ({exc}); re-run the stage that wrote it"
        ) from None


def read_classes(folder: str | Path) -> ClassSpec:
    """The class list a data folder (``data/raw``, ``data/tiles``) was made with.

    Folders written before classes became data hold no ``classes.json``: they are binary.
    """
    obj = _read(folder)
    return BINARY if obj is None else ClassSpec.from_json(obj)


def read_channels(folder: str | Path) -> str:
    """``gray`` or ``rgb``: the channels of a data folder's images (grey before they existed)."""
    obj = _read(folder)
    return "gray" if obj is None else obj.get("channels", "gray")


def in_channels(channels: str) -> int:
    """A model's input channels for the data's ``channels``."""
    return 3 if channels == "rgb" else 1


def _code(color) -> int:
    r, g, b = (int(v) for v in color)
    return (r << 16) | (g << 8) | b


def _rgb(code: int) -> tuple[int, int, int]:
    return ((code >> 16) & 255, (code >> 8) & 255, code & 255)
