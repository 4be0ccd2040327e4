"""Data sources: a registry from ``data.source`` to a listing of image/mask pairs.

A source only *lists* its pairs (and the problems it finds while pairing them: an image with no
mask, two files with one stem); decoding happens later, one pair at a time, in
:func:`segbench.fetch.fetch`, which validates everything before anything reaches ``data/raw``.

Each :class:`Item` decodes lazily to the *stored* arrays (any bit depth, any channels);
:mod:`segbench.decode` turns those into the pipeline's image and mask.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segbench.config import DataConfig
from segbench.decode import IMAGE_SUFFIXES, DecodeError, pil_to_array, read_any
from segbench.downloads import missing_hf_folder, unreachable_hub
from segbench.errors import SegbenchError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_id(name: str) -> str:
    """A file-name safe id for ``name`` (runs of other characters become ``_``)."""
    return _UNSAFE.sub("_", name).strip("_") or "image"


@dataclass(frozen=True)
class Item:
    """One image/mask pair, not decoded yet.

    ``name`` is what the user knows the pair by (a file stem, a dataset row) and is what
    ``data.split.group`` matches; ``image_name`` and ``mask_name`` appear in error messages.
    """

    id: str
    name: str
    image_name: str
    mask_name: str
    read_image: Callable[[], np.ndarray]
    # read_mask(colors=True) gives a palette mask's colours instead of its indices (sources
    # whose masks can be palette PNGs take the keyword; fetch passes it only for colour classes)
    read_mask: Callable[..., np.ndarray]


@dataclass
class Listing:
    """What a source holds: its pairs and the pairing problems found while listing them."""

    where: str
    items: list[Item] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


# --- synthetic -----------------------------------------------------------------------------


def synthetic_source(cfg: DataConfig) -> Listing:
    """The embedded generators: SEM-like particles or grains of two phases, breast-ultrasound-
    like frames, or aerial RGB views of a parking lot (see ``data.synthetic.domain``)."""
    from segbench.data.synthetic import generate_sample, sample_seed

    syn = cfg.synthetic
    instanced = cfg.instance_mode() != "none"
    if syn.domain == "ultrasound":
        from segbench.data.ultrasound import generate_ultrasound

        # lesion_radius is given for a 512-wide frame; keep lesions the same relative size.
        factor = syn.width / 512

        def generate(i: int):
            return generate_ultrasound(
                sample_seed(cfg.seed, i),
                height=syn.height,
                width=syn.width,
                lesion_probability=syn.lesion_probability,
                lesion_radius=tuple(r * factor for r in syn.lesion_radius),
                speckle=syn.speckle,
            )
    elif syn.domain == "parking":
        from segbench.data.parking import generate_parking

        def generate(i: int):
            return generate_parking(
                sample_seed(cfg.seed, i), height=syn.height, width=syn.width, noise=syn.noise
            )
    else:
        from segbench.data.phases import generate_phases

        # n_particles is given per 1024x768 frame: scale it with the area so that other frame
        # sizes keep the same particle density (radius stays in pixels: a fixed magnification).
        area = syn.height * syn.width / (1024 * 768)
        n_particles = tuple(max(1, round(n * area)) for n in syn.n_particles)
        draw = generate_phases if syn.domain == "phases" else generate_sample
        # Particles are stored as instance labels (one id each, fetch keeps them for object
        # metrics) wherever they would be read as such; fetch's binary mask is the same.
        kw = {"instances": True} if syn.domain == "particles" and instanced else {}

        def generate(i: int):
            image, mask = draw(
                sample_seed(cfg.seed, i),
                height=syn.height,
                width=syn.width,
                n_particles=n_particles,
                radius=tuple(syn.radius),
                noise=syn.noise,
                **kw,
            )
            if mask.dtype == np.uint32:  # past 16-bit labels (absurd counts): plain binary
                mask = (mask > 0).astype(np.uint8)
            return image, mask

    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def pair(i: int) -> tuple[np.ndarray, np.ndarray]:
        # The image and the mask come from one draw; keep it until its mask has been read.
        if i not in cache:
            cache.clear()
            cache[i] = generate(i)
        return cache[i]

    listing = Listing(where=f"synthetic ({syn.domain})")
    for i in range(syn.n_images):
        name = f"{syn.domain}_{i:04d}"
        listing.items.append(
            Item(
                id=name,
                name=name,
                image_name=name,
                mask_name=f"{name} (mask)",
                read_image=lambda i=i: pair(i)[0],
                read_mask=lambda i=i: pair(i)[1],
            )
        )
    return listing


# --- folder --------------------------------------------------------------------------------


def _image_files(folder: Path, listing: Listing, role: str) -> tuple[dict[str, Path], set[str]]:
    """Stem -> file for the images (or masks) in ``folder``, and the stems used twice.

    Odd files (other formats, sub-folders, one stem twice) become problems.
    """
    if not folder.is_dir():
        listing.problems.append(
            f"{folder}: no such folder; put the {role} there or set data.folder.{role}"
        )
        return {}, set()
    by_stem: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue  # .DS_Store and friends
        if path.is_dir() or path.suffix.lower() not in IMAGE_SUFFIXES:
            listing.problems.append(
                f"{path}: not a {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} file; "
                f"move it out of {folder}"
            )
            continue
        by_stem.setdefault(path.stem, []).append(path)
    out, twice = {}, set()
    for stem, paths in by_stem.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            listing.problems.append(f"{folder}: {names} share the stem {stem!r}; keep one")
            twice.add(stem)
        else:
            out[stem] = paths[0]
    return out, twice


def folder_source(cfg: DataConfig) -> Listing:
    """``<data.path>/images/*`` paired with ``<data.path>/masks/*`` by file stem."""
    root = Path(cfg.path).expanduser()
    fcfg = cfg.folder
    listing = Listing(where=str(root))
    if not root.is_dir():
        listing.problems.append(f"{root}: no such folder; set data.path to your dataset")
        return listing
    images, images_twice = _image_files(root / fcfg.images, listing, "images")
    masks, masks_twice = _image_files(root / fcfg.masks, listing, "masks")
    suffix = fcfg.mask_suffix
    # Stems already reported as duplicates are not reported again as unpaired.
    paired_masks = {stem + suffix for stem in images_twice}
    ids: dict[str, str] = {}
    for stem, image_path in images.items():
        mask_path = masks.get(stem + suffix)
        if mask_path is None and stem + suffix in masks_twice:
            continue
        if mask_path is None:
            listing.problems.append(
                f"{image_path}: no mask named {stem + suffix}.* in {root / fcfg.masks}; "
                "add it or remove the image"
            )
            continue
        paired_masks.add(stem + suffix)
        item_id = safe_id(stem)
        if item_id in ids:
            listing.problems.append(
                f"{image_path}: its id {item_id!r} clashes with {ids[item_id]}; rename one"
            )
            continue
        ids[item_id] = str(image_path)
        listing.items.append(
            Item(
                id=item_id,
                name=stem,
                image_name=str(image_path),
                mask_name=str(mask_path),
                read_image=lambda p=image_path: read_any(p),
                read_mask=lambda colors=False, p=mask_path: read_any(p, as_mask=not colors),
            )
        )
    for stem in sorted(set(masks) - paired_masks):
        listing.problems.append(
            f"{masks[stem]}: no image for this mask in {root / fcfg.images}; "
            "add it or remove the mask"
            + (f" (masks are named <image stem>{suffix})" if suffix else "")
        )
    return listing


# --- Hugging Face --------------------------------------------------------------------------


def _load_hf(cfg: DataConfig):
    """The configured dataset, from disk (``data.path``) or the hub (``data.hf.name``).

    ``datasets`` >= 4 never runs dataset loading scripts, so no remote code can execute;
    a hub dataset is read from its data files (Parquet, images) only.
    """
    import datasets

    hf = cfg.hf
    if cfg.path:
        path = Path(cfg.path).expanduser()
        if not path.exists():
            raise SegbenchError(missing_hf_folder(cfg.path, hf.name, hf.revision))
        try:
            ds = datasets.load_from_disk(str(path))
        except FileNotFoundError as exc:
            raise SegbenchError(
                f"{path}: not a dataset saved with `datasets` ({exc}); set data.path to the "
                "folder written by save_to_disk, or use data.hf.name for a hub dataset"
            ) from None
        where = str(path)
    else:
        try:
            ds = datasets.load_dataset(hf.name, revision=hf.revision)
        except Exception as exc:  # offline, unknown name, private repo, bad revision, ...
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if _unreachable(exc):
                raise SegbenchError(unreachable_hub(hf.name, hf.revision, reason)) from None
            raise SegbenchError(
                f"data.hf.name: cannot load {hf.name!r}"
                + (f" at revision {hf.revision!r}" if hf.revision else "")
                + f" ({reason}); check the name and network, or save the dataset with "
                "`datasets` and set data.path"
            ) from None
        where = f"hf:{hf.name}"
    if isinstance(ds, datasets.DatasetDict):
        if hf.split is not None:
            if hf.split not in ds:
                raise SegbenchError(
                    f"data.hf.split: {where} has no split {hf.split!r}; "
                    f"valid: {', '.join(sorted(ds))} (or null for all)"
                )
            parts = {hf.split: ds[hf.split]}
        else:  # segbench makes its own splits: take every row the dataset has
            parts = {name: ds[name] for name in sorted(ds)}
    else:
        parts = {hf.split or "data": ds}
    return where, parts


def _unreachable(exc: BaseException) -> bool:
    """Whether loading from the hub failed for want of network: ``datasets`` raises
    ConnectionError both offline (HF_HUB_OFFLINE) and when the host cannot be reached; an
    unknown name or revision is another error (DatasetNotFoundError, a FileNotFoundError).
    Only the explicit chain (``raise ... from``) counts: an error handled on the way is no
    reason."""
    for _ in range(8):  # bounded against a cycle
        if isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__name__ in _OFFLINE:
            return True
        if exc.__cause__ is None:
            return False
        exc = exc.__cause__
    return False


# "No network" in httpx (huggingface_hub >= 1), requests (older) and huggingface_hub (offline,
# file not cached), none of which subclasses the built-in ConnectionError.
_OFFLINE = {
    "ConnectError",
    "ConnectTimeout",
    "ConnectionError",
    "LocalEntryNotFoundError",
    "NetworkError",
    "ReadTimeout",
    "Timeout",
}


def _hf_value(value, *, as_mask: bool) -> np.ndarray:
    """A cell of an image column (PIL image, array, nested list, or {bytes, path}) -> array."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return pil_to_array(value, as_mask=as_mask)
    if isinstance(value, dict) and value.get("bytes") is not None:
        import io

        with Image.open(io.BytesIO(value["bytes"])) as im:
            im.load()
            return pil_to_array(im, as_mask=as_mask)
    if value is None:
        raise DecodeError("is empty (None); fill or drop the row")
    return np.asarray(value)


def hf_source(cfg: DataConfig) -> Listing:
    """Rows of a Hugging Face dataset, image and mask taken from the columns named in params."""
    hf = cfg.hf
    where, parts = _load_hf(cfg)
    listing = Listing(where=where)
    ids: set[str] = set()
    for split, ds in parts.items():
        columns = list(ds.column_names)
        wanted = [("image_column", hf.image_column), ("mask_column", hf.mask_column)]
        if hf.id_column is not None:
            wanted.append(("id_column", hf.id_column))
        missing = [(key, col) for key, col in wanted if col not in columns]
        for key, col in missing:
            listing.problems.append(
                f"data.hf.{key}: {where} ({split}) has no column {col!r}; "
                f"columns: {', '.join(columns)}"
            )
        if missing:
            continue
        names = ds[hf.id_column] if hf.id_column else None
        for row in range(len(ds)):
            name = str(names[row]) if names is not None else f"{split}_{row:05d}"
            item_id = safe_id(name)
            label = f"{where} {split}[{row}]"
            if item_id in ids:
                listing.problems.append(
                    f"{label}: id {item_id!r} occurs twice; make data.hf.id_column unique"
                )
                continue
            ids.add(item_id)

            def cell(column: str, row=row, ds=ds, as_mask=False) -> np.ndarray:
                return _hf_value(ds[row][column], as_mask=as_mask)

            listing.items.append(
                Item(
                    id=item_id,
                    name=name,
                    image_name=f"{label}.{hf.image_column}",
                    mask_name=f"{label}.{hf.mask_column}",
                    read_image=lambda cell=cell: cell(hf.image_column),
                    read_mask=lambda colors=False, cell=cell: cell(
                        hf.mask_column, as_mask=not colors
                    ),
                )
            )
    return listing


SOURCES: dict[str, Callable[[DataConfig], Listing]] = {
    "synthetic": synthetic_source,
    "folder": folder_source,
    "hf": hf_source,
}


def open_source(cfg: DataConfig) -> Listing:
    """List the configured source's pairs; an unknown name lists the valid ones."""
    try:
        factory = SOURCES[cfg.source]
    except KeyError:
        valid = ", ".join(sorted(SOURCES))
        raise SegbenchError(f"data.source: unknown source {cfg.source!r}; valid: {valid}") from None
    return factory(cfg)
