"""Reading and writing images, masks, tables and JSON, and writing stage outputs atomically.

Formats on disk: images are 8- or 16-bit PNG, grey (H, W) or RGB (H, W, 3), as the data's
channels say; masks are PNG of class indices (:mod:`segbench.classes`), except that two-class
masks keep background 0 and foreground 255 (readable by any viewer; anything non-zero is
foreground on reading).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from segbench.errors import SegbenchError


def read_image(path: str | Path, channels: str | None = None) -> np.ndarray:
    """Read an image, uint8 or uint16 as stored; a bad file is a SegbenchError.

    ``channels``: ``None`` = as stored, (H, W) for one channel or (H, W, 3) for three or four
    (alpha dropped); ``"gray"`` = (H, W), colour reduced to luminance at its own bit
    depth; ``"rgb"`` = (H, W, 3), grey replicated (see :mod:`segbench.decode`). This reads the
    stages' own PNGs and users' files alike.
    """
    from segbench.decode import DecodeError, convert_channels, read_any

    try:
        return convert_channels(read_any(path), channels)
    except DecodeError as exc:
        raise SegbenchError(f"{path}: {exc}") from None


def read_mask(path: str | Path, num_classes: int = 2) -> np.ndarray:
    """Read a mask written by :func:`write_mask` as (H, W) uint8 class indices: {0, 1} for
    two classes (any non-zero pixel is foreground), else the stored indices (255 = ignored)."""
    from segbench.decode import DecodeError, read_any

    try:
        mask = read_any(path, as_mask=True)
    except DecodeError as exc:
        raise SegbenchError(f"{path}: {exc}") from None
    if mask.ndim == 3:
        mask = mask[..., 0]
    if num_classes == 2:
        return (mask > 0).astype(np.uint8)
    return mask.astype(np.uint8, copy=False)


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write an (H, W) or (H, W, 3) RGB uint8/uint16 array as an 8- or 16-bit PNG.

    OpenCV's encoder at zlib level 1: several times faster than PIL's default level for
    files only 10-20 percent larger, and tiles are written by the thousand.
    """
    import cv2

    image = np.ascontiguousarray(image)
    if image.dtype not in (np.uint8, np.uint16):
        image = image.astype(np.uint8)
    if image.ndim == 3:
        image = np.ascontiguousarray(image[..., ::-1])  # OpenCV writes BGR
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise SegbenchError(f"{path}: could not write the image (is the disk full?)")


def write_mask(path: str | Path, mask: np.ndarray, num_classes: int = 2) -> None:
    """Write an (H, W) mask of class indices: {0, 255} for two classes (readable by any
    viewer), else the indices themselves (255 = ignored)."""
    mask = np.asarray(mask)
    if num_classes == 2:
        mask = (mask > 0).astype(np.uint8) * 255
    write_image(path, mask.astype(np.uint8, copy=False))


def write_json(path: str | Path, obj: Any) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def read_json(path: str | Path, *, fix: str = "re-run the stage") -> Any:
    """The JSON value in ``path``; missing or not JSON (truncated, binary, hand-edited): a
    :class:`SegbenchError` naming the file, ending with ``fix`` (what the user should do)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SegbenchError(f"{path}: file not found (did the stage that writes it run?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SegbenchError(f"{path}: not valid JSON ({exc}); {fix}") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_csv(path: str | Path, rows: Iterable[dict[str, Any]], fieldnames: list[str]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fieldnames, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)


def read_csv(path: str | Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))
    except FileNotFoundError:
        raise SegbenchError(f"{path}: file not found (did the stage that writes it run?)") from None


@contextlib.contextmanager
def atomic_dir(out: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``out``: on success it replaces ``out``, else it goes.

    A stage that fails half-way therefore never leaves a half-written output where a later
    stage (or DVC) would take it for a finished one. The replacement is two renames (the old
    output aside, the new one in), never a deletion of the old one in place: a kill in between
    leaves both whole, and the next run finishes the swap (:func:`remove_stale_partials`).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    _remove(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if out.exists() or out.is_symlink():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        _remove(old)
        out.rename(old)
        tmp.rename(out)
        _remove(old)
    else:
        tmp.rename(out)


def remove_stale_partials(out: str | Path) -> list[Path]:
    """Clean up after runs killed with SIGKILL (which cannot clean up after themselves) in the
    folder of ``out``, whatever output they were writing: remove every ``.<name>.partial-<pid>``
    and ``.<name>.old-<pid>`` whose process is gone, except that a kill between
    :func:`atomic_dir`'s two renames (the old output aside, the new one not yet in) is
    finished: the new output, complete by then, is moved into place. Return what was removed.
    A folder of a process that is still alive (another run) is left alone. DVC ignores these
    folders (``.dvcignore``), so until this runs they do not enter any hash."""
    parent = Path(out).parent
    removed = []
    for path in sorted(parent.glob(".*.old-*")) + sorted(parent.glob(".*.partial-*")):
        name, _, pid = path.name[1:].rpartition(".")
        kind, _, pid = pid.partition("-")
        if not (pid.isdigit() and kind in ("old", "partial")) or _alive(int(pid)):
            continue
        target = parent / name
        new = parent / f".{name}.partial-{pid}"
        if kind == "old" and not target.exists() and new.is_dir():
            new.rename(target)  # the swap was half done: finish it
        if path.exists():
            _remove(path)
            removed.append(path)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        pass
    return True


@contextlib.contextmanager
def writable_dir(path: str | Path) -> Iterator[Path]:
    """Create the folder ``path`` (with its missing parents) and write a probe file in it, before
    any slow work; a :class:`SegbenchError` naming it if either fails (a path under a file, no
    permission, a read-only or pseudo file system). If the body raises, the folders this created
    are removed again while they are still empty, so a refused run leaves nothing behind."""
    path = Path(path)
    created, node = [], path
    while not node.exists() and node != node.parent:
        created.append(node)
        node = node.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".segbench-write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        _remove_empty(created)
        raise SegbenchError(
            f"{path}: cannot write there ({exc.strerror or type(exc).__name__}); choose another "
            "folder or fix its permissions"
        ) from None
    try:
        yield path
    except BaseException:
        _remove_empty(created)
        raise


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) as long as each is empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return
