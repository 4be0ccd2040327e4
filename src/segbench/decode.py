"""Decoding user images and masks into the two arrays every later stage works with.

The one place where files in the wild (PNG, JPEG, TIFF; 1-, 8-, 16-bit; grayscale, palette,
RGB, RGBA) become:

* an **image**: (H, W) ``uint8`` or ``uint16``, grayscale, at the file's own bit depth. Colour
  is reduced to luminance (ITU-R BT.601 weights, the alpha channel dropped), computed in float
  and rounded back to the original dtype, so 16-bit data keeps its 16 bits. Turning intensities
  into model inputs is a later, separate step (:mod:`segbench.data.normalize`).
* a **mask**: (H, W) ``uint8`` in {0, 1}, from {0, 1}, {0, 255} or label images (instance
  masks), per :class:`segbench.config.MaskConfig`.

Every failure raises :class:`DecodeError` with a message that says what is wrong and what to do;
the caller adds the file name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
TIFF_SUFFIXES = (".tif", ".tiff")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


class DecodeError(ValueError):
    """A file that cannot become an image or a mask; the message says why and what to do."""


def read_any(path: str | Path, *, as_mask: bool = False) -> np.ndarray:
    """The stored array of an image file: (H, W) or (H, W, C), dtype as stored.

    Palette PNGs give their palette colours for images and their indices for masks (a label
    PNG stores labels as indices).
    """
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        return _read_tiff(path)
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not later
            return pil_to_array(im, as_mask=as_mask)
    except FileNotFoundError:
        raise DecodeError("file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DecodeError(
            f"cannot decode image ({_reason(exc, path)}); replace or remove the file"
        ) from None


def _reason(exc: Exception, path: Path) -> str:
    """The library's reason without the path it repeats (the caller names the file)."""
    text = str(exc).replace(f"'{path}'", "").replace(str(path), "").strip(" :")
    return text or type(exc).__name__


def pil_to_array(im: Image.Image, *, as_mask: bool = False) -> np.ndarray:
    """A decoded PIL image -> its array, keeping 16-bit data (PIL modes I;16* and I)."""
    if im.mode == "P":
        im = im if as_mask else im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)  # also turns big-endian I;16B native
    elif im.mode in ("LA", "PA"):
        im = im.getchannel(0) if im.mode == "LA" else im.convert("RGB")
    elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    return np.asarray(im)


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.pages:
                raise DecodeError("cannot decode image (TIFF: no readable page); replace it")
            series = tif.series[0].shape if tif.series else ()
            channels_ok = len(series) == 2 or (
                len(series) == 3 and (series[0] in (3, 4) or series[-1] in (1, 3, 4))
            )
            if len(tif.pages) != 1 or len(tif.series) != 1 or not channels_ok:
                raise DecodeError(
                    f"holds {len(tif.pages)} pages or a stack of shape "
                    f"{tif.series[0].shape if tif.series else ()}; save one 2-D image per file"
                )
            array = tif.asarray()
    except FileNotFoundError:
        raise DecodeError("file not found") from None
    except DecodeError:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        raise DecodeError(
            f"cannot decode image (TIFF: {_reason(exc, path)}); replace or remove the file"
        ) from None
    # Planar TIFFs store channels first; every later step wants them last.
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] not in (3, 4):
        array = np.moveaxis(array, 0, -1)
    return array


def to_gray(array: np.ndarray) -> np.ndarray:
    """(H, W[, C]) stored array -> (H, W) uint8 or uint16 grayscale at the same bit depth."""
    array = np.asarray(array)
    if array.ndim == 3:
        if array.shape[-1] == 1:
            array = array[..., 0]
        elif array.shape[-1] in (3, 4):
            rgb = array[..., :3]  # the alpha channel is transparency, not intensity
            if (rgb == rgb[..., :1]).all():  # grey stored as RGB (common for ultrasound)
                array = rgb[..., 0]
            else:
                luma = rgb.astype(np.float64) @ _LUMA
                array = np.rint(luma).astype(rgb.dtype)
        else:
            raise DecodeError(f"has {array.shape[-1]} channels; save it as grayscale, RGB or RGBA")
    if array.ndim != 2:
        raise DecodeError(f"has shape {array.shape}; expected a 2-D image")
    return _to_uint(array, "image")


def to_rgb(array: np.ndarray) -> np.ndarray:
    """(H, W[, C]) stored array -> (H, W, 3) uint8 or uint16: grey replicated, alpha dropped."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = _to_uint(array, "image")
        return np.repeat(array[..., None], 3, axis=-1)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        return _to_uint(np.ascontiguousarray(array[..., :3]), "image")
    if array.ndim == 3:
        raise DecodeError(f"has {array.shape[-1]} channels; save it as grayscale, RGB or RGBA")
    raise DecodeError(f"has shape {array.shape}; expected a 2-D image")


def is_colour(array: np.ndarray) -> bool:
    """Whether a stored array carries colour: 3+ channels that are not all equal."""
    array = np.asarray(array)
    if array.ndim != 3 or array.shape[-1] < 3:
        return False
    rgb = array[..., :3]
    return not bool((rgb == rgb[..., :1]).all())


def convert_channels(array: np.ndarray, channels: str | None) -> np.ndarray:
    """A stored array as ``channels``: ``"gray"`` (H, W), ``"rgb"`` (H, W, 3), or ``None``:
    as stored, (H, W) for one channel, (H, W, 3) for three or four (alpha dropped)."""
    if channels == "gray":
        return to_gray(array)
    if channels == "rgb":
        return to_rgb(array)
    if channels is not None:
        raise ValueError(f"channels must be gray, rgb or None, got {channels!r}")
    array = np.asarray(array)
    single = array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 1)
    return to_gray(array) if single else to_rgb(array)


def _to_uint(array: np.ndarray, what: str) -> np.ndarray:
    """Integer data -> uint8 / uint16 when its values fit; anything else is an error."""
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype in (np.uint8, np.uint16):
        return array
    if array.dtype.kind in "iu":
        lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if lo >= 0 and hi <= 65535:
            return array.astype(np.uint8 if hi <= 255 and array.dtype.itemsize == 1 else np.uint16)
        raise DecodeError(
            f"{what} values span [{lo}, {hi}], outside 8/16-bit range; rescale it to 16-bit"
        )
    if array.dtype.kind == "f" and what == "mask":
        if np.isfinite(array).all() and (array == np.round(array)).all() and array.min() >= 0:
            return _to_uint(array.astype(np.int64), what)
        raise DecodeError("mask holds non-integer values; save masks as integer label images")
    raise DecodeError(f"{what} is stored as {array.dtype}; convert it to 8- or 16-bit integers")


def interpret_mask(
    array: np.ndarray, *, value: int | None = None, threshold: int | None = None
) -> np.ndarray:
    """Stored mask (H, W[, C]) -> (H, W) uint8 foreground in {0, 1}.

    * default: every non-zero value is foreground ({0,1}, {0,255}, instance labels);
    * ``value``: only pixels equal to that label;
    * ``threshold``: pixels ``>= threshold`` (for lossy masks).

    Colour masks whose channels differ and 8-bit masks that look lossy (255 next to many
    near-0 or near-255 values, the mark of JPEG or anti-aliasing) are rejected by default,
    because "non-zero" would then swell every object by its blurred rim.
    """
    array = np.asarray(array)
    if array.ndim == 3:
        channels = array[..., :3] if array.shape[-1] in (3, 4) else array
        if not (channels == channels[..., :1]).all():
            raise DecodeError(
                "is a colour mask (its channels differ); save one channel with 0 for "
                "background and labels or 255 for foreground"
            )
        array = channels[..., 0]
    if array.ndim != 2:
        raise DecodeError(f"has shape {array.shape}; expected a 2-D mask")
    array = _to_uint(array, "mask")
    if threshold is not None:
        return (array >= threshold).astype(np.uint8)
    if value is not None:
        return (array == value).astype(np.uint8)
    if array.dtype == np.uint8 and _looks_lossy(array):
        raise DecodeError(
            "has intermediate values next to 255, as a JPEG or anti-aliased mask does; "
            "save masks losslessly (PNG/TIFF), or set data.mask.threshold (e.g. 128)"
        )
    return (array != 0).astype(np.uint8)


def _looks_lossy(mask: np.ndarray) -> bool:
    counts = np.bincount(mask.ravel(), minlength=256)
    between = counts[1:255]
    if counts[255] == 0 or between.sum() == 0:
        return False
    # A label image spreads its labels over 1..254; compression and anti-aliasing pile
    # values up just above 0 and just below 255, on object rims.
    near_ends = between[:31].sum() + between[-31:].sum()
    return bool(near_ends >= 0.8 * between.sum())


def bit_depth(image: np.ndarray) -> int:
    """8 or 16, from an image's dtype."""
    return 16 if image.dtype == np.uint16 else 8


def channels_name(array: np.ndarray) -> str:
    """'gray', 'rgb' or 'rgba' for a stored array (for the dataset summary)."""
    if array.ndim == 2 or array.shape[-1] == 1:
        return "gray"
    return {3: "rgb", 4: "rgba"}.get(array.shape[-1], f"{array.shape[-1]}ch")
