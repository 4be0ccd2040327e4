"""``data``: where images and masks come from, how masks are read, and how images are split."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from segbench.classes import MAX_CLASSES, ClassSpec
from segbench.config.base import Range, Section, check_range

# The classes of each embedded domain, background first; their masks hold these indices.
DOMAIN_CLASSES: dict[str, tuple[str, ...]] = {
    "particles": ("background", "particle"),
    "ultrasound": ("background", "lesion"),
    "phases": ("substrate", "phase_a", "phase_b"),
    "parking": ("asphalt", "car", "marking"),
}
# Domains whose images are colour (the others are grey).
RGB_DOMAINS = frozenset({"parking"})


class SplitConfig(Section):
    """``data.split``: fractions of images per split (summing to 1), strata and groups."""

    train: float = Field(gt=0, lt=1)
    val: float = Field(gt=0, lt=1)
    test: float = Field(gt=0, lt=1)
    group: str | None = Field(
        description="regex over the file name; its first group (else the whole match) is the "
        "group key, e.g. a patient id, and a group never crosses splits; null = no groups",
    )
    strata: int = Field(ge=1, description="foreground-fraction bins among non-empty masks")
    folds: int | None = Field(
        ge=2,
        description="k-fold cross-validation over the train and val images: fold 0 is the "
        "validation split, and each network is trained once per fold; null = one split",
    )

    @model_validator(mode="after")
    def _check(self):
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train: train + val + test must sum to 1, got {total:g}")
        if self.group is not None:
            try:
                re.compile(self.group)
            except re.error as exc:
                raise ValueError(f"group: not a valid regular expression ({exc})") from None
        return self

    def fractions(self) -> dict[str, float]:
        return {"train": self.train, "val": self.val, "test": self.test}


class SyntheticSource(Section):
    """``data.synthetic``: the embedded generators (no network, no files).

    ``particles`` imitates SEM micrographs of powders; ``ultrasound`` imitates breast B-mode
    frames with at most one dark lesion, and some frames with none (empty references);
    ``phases`` is SEM-like grains of two phases on a substrate (three classes, grey);
    ``parking`` is an aerial RGB view of a parking lot (asphalt, cars, line markings).
    """

    domain: Literal["particles", "ultrasound", "phases", "parking"]
    n_images: int = Field(ge=10, description="at least 10 so every split gets an image")
    height: int = Field(ge=64)
    width: int = Field(ge=64)
    noise: float = Field(
        ge=0, description="particles, phases, parking: sensor noise, x the default"
    )
    n_particles: tuple[int, int]  # per 1024x768 frame, scaled with image area
    radius: Range
    lesion_probability: float = Field(ge=0, le=1, description="ultrasound: P(lesion)")
    lesion_radius: Range  # ultrasound, pixels in a 512-wide frame
    speckle: float = Field(ge=0, description="ultrasound: speckle strength, 0 = none")

    @model_validator(mode="after")
    def _ranges(self):
        check_range(self, "n_particles", "radius", "lesion_radius")
        return self


class FolderSource(Section):
    """``data.folder``: ``<data.path>/<images>/`` and ``<data.path>/<masks>/`` matched by stem."""

    images: str
    masks: str
    mask_suffix: str = Field(description="mask stem = image stem + suffix, e.g. _mask")


class HfSource(Section):
    """``data.hf``: a Hugging Face dataset by name (hub) or ``data.path`` (saved to disk)."""

    name: str | None = Field(description="hub id, e.g. nielsr/breast-cancer")
    revision: str | None = Field(description="git revision (tag, branch, commit) on the hub")
    split: str | None = Field(description="one split of the dataset; null = all of them")
    image_column: str
    mask_column: str
    id_column: str | None = Field(description="column naming each row; null = row index")


class MaskConfig(Section):
    """``data.mask``: how stored mask values become foreground, and whether they name objects.

    With both null, any non-zero value is foreground ({0,1}, {0,255} and instance-label masks).
    ``value`` keeps one label of a label image; ``threshold`` binarises lossy (JPEG) masks.
    ``instances`` (binary masks read by these rules, value and threshold null): whether the
    stored non-zero values are instance labels, one value per object, which fetch keeps in
    ``instances/<id>.tif`` beside the binary mask (:mod:`segbench.fetch`). ``auto``: a mask
    holding two or more distinct non-zero values is an instance label image, one holding a
    single value a plain binary mask; ``true``: every mask is one (a single value is then
    one object, an empty mask no object); ``false``: none is (objects are connected
    components).
    """

    value: int | None = Field(ge=0)
    threshold: int | None = Field(ge=1)
    instances: Literal["auto", True, False]

    @model_validator(mode="before")
    @classmethod
    def _instances_word(cls, data):
        # pydantic would take 1 and 0 for true and false; only the three words mean anything
        value = data.get("instances", "auto") if isinstance(data, dict) else "auto"
        if not (value == "auto" or isinstance(value, bool)):
            raise ValueError(f"instances: expected auto, true or false, got {value!r}")
        return data

    @model_validator(mode="after")
    def _one(self):
        if self.value is not None and self.threshold is not None:
            raise ValueError("value: set either data.mask.value or data.mask.threshold, not both")
        if self.instances is True and (self.value is not None or self.threshold is not None):
            raise ValueError(
                "instances: true reads every non-zero value as an object's label, which "
                "data.mask.value/threshold contradict; set instances: auto or false, or null both"
            )
        return self


class ClassEntry(Section):
    """One entry of ``data.classes`` written out: a name and what stands for it in masks."""

    name: str = Field(min_length=1)
    values: list[int] | None = Field(
        default=None, description="stored mask values (index masks, palette indices)"
    )
    color: tuple[int, int, int] | None = Field(
        default=None, description="RGB colour in colour-coded or palette masks"
    )

    @model_validator(mode="after")
    def _one(self):
        if self.values is None and self.color is None:
            raise ValueError(f"{self.name}: give values: [...] or color: [R, G, B]")
        if self.values is not None and self.color is not None:
            raise ValueError(f"{self.name}: give values or color, not both")
        if self.values is not None and (not self.values or min(self.values) < 0):
            raise ValueError(f"{self.name}: values must be a non-empty list of integers >= 0")
        if self.color is not None and not all(0 <= v <= 255 for v in self.color):
            raise ValueError(f"{self.name}: color must be [R, G, B] with each in 0..255")
        return self


class DataConfig(Section):
    source: Literal["synthetic", "folder", "hf"]
    path: str | None = Field(description="folder source: its root; hf: a saved dataset")
    seed: int = Field(ge=0)
    channels: Literal["gray", "rgb"] | None = Field(
        description="model input: gray | rgb; null = what the images are (rgb if any is colour)"
    )
    classes: list[str | ClassEntry] | None = Field(
        description="background first; null = the synthetic domain's, else binary (data.mask)"
    )
    ignore_values: list[int] = Field(
        description="stored mask values that mean 'not annotated': no loss, no metric"
    )
    split: SplitConfig
    mask: MaskConfig
    synthetic: SyntheticSource
    folder: FolderSource
    hf: HfSource

    @model_validator(mode="after")
    def _source_needs(self):
        if self.source == "folder" and not self.path:
            raise ValueError(
                "path: data.source=folder needs data.path, the folder holding "
                f"{self.folder.images}/ and {self.folder.masks}/"
            )
        if self.source == "hf" and not (self.path or self.hf.name):
            raise ValueError(
                "hf.name: data.source=hf needs data.hf.name (a hub dataset) or data.path "
                "(a dataset saved with datasets' save_to_disk)"
            )
        spec = self.class_spec()  # raises "classes: ..." for an impossible class list
        if self.mask.instances is True and spec.binary_rule is None:
            raise ValueError(
                "mask.instances: true needs a binary task whose masks data.mask reads "
                "(data.classes null, or two plain names for a folder or hub source); a class "
                "list's values are classes, not objects: set instances: auto or false"
            )
        return self

    def instance_mode(self) -> Literal["auto", "all", "none"]:
        """Which stored masks fetch keeps as instance labels (``data.mask.instances``):
        ``auto`` those with two or more distinct non-zero values, ``all`` every one, ``none``
        none. ``none`` also wherever masks are not read as "non-zero = foreground" (a class
        list, a multi-class domain, ``data.mask.value`` or ``threshold``)."""
        if self.mask.instances is False or self.mask.value is not None:
            return "none"
        if self.mask.threshold is not None or self.class_spec().binary_rule is None:
            return "none"
        return "all" if self.mask.instances is True else "auto"

    def class_spec(self) -> ClassSpec:
        """The classes this configuration describes (see :mod:`segbench.classes`)."""
        rule = {"value": self.mask.value, "threshold": self.mask.threshold}
        domain = DOMAIN_CLASSES[self.synthetic.domain] if self.source == "synthetic" else None
        if self.classes is None:
            if domain is not None and len(domain) > 2:
                return ClassSpec(names=domain, values=tuple((i,) for i in range(len(domain))))
            if self.ignore_values and domain is None:
                raise ValueError(
                    "ignore_values: needs a class list (data.classes) naming the values of "
                    "each class; the binary default reads every non-zero value as foreground"
                )
            names = domain or ("background", "foreground")
            return ClassSpec(names=names, binary_rule=rule)
        entries = self.classes
        if len(entries) < 2:
            raise ValueError(
                "classes: needs at least two entries, background first (e.g. [background, "
                "foreground]); null = binary"
            )
        if len(entries) > MAX_CLASSES:
            raise ValueError(f"classes: at most {MAX_CLASSES} classes, got {len(entries)}")
        names = [e if isinstance(e, str) else e.name for e in entries]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"classes: the name(s) {', '.join(dup)} appear more than once")
        if domain is not None and len(names) != len(domain):
            raise ValueError(
                f"classes: the synthetic domain {self.synthetic.domain!r} has "
                f"{len(domain)} classes ({', '.join(domain)}); give {len(domain)} names or null"
            )
        plain = all(isinstance(e, str) for e in entries)
        if len(names) == 2 and self.ignore_values:
            # Two-class masks are stored {0, 255} (readable by any viewer): 255 cannot also
            # mean "not annotated" there.
            raise ValueError(
                "ignore_values: needs three or more classes; with two, give the unannotated "
                "value its own class or drop those pixels from the masks"
            )
        if plain and len(names) == 2 and domain is None:
            return ClassSpec(names=tuple(names), binary_rule=rule)
        if self.mask.value is not None or self.mask.threshold is not None:
            raise ValueError(
                "classes: data.mask.value/threshold only apply to binary masks with plain "
                "class names; with a written-out class list name each class's values instead"
            )
        if plain:  # index masks: class i is stored as i
            return ClassSpec(
                names=tuple(names),
                values=tuple((i,) for i in range(len(names))),
                ignore_values=tuple(self.ignore_values),
            )
        if any(isinstance(e, str) for e in entries):
            raise ValueError(
                "classes: write every entry as {name, values} or {name, color}, or all as "
                "plain names (index masks 0, 1, 2 ...)"
            )
        by_color = [e.color is not None for e in entries]
        if any(by_color) and not all(by_color):
            raise ValueError(
                "classes: either every class names a color (colour masks) or none does "
                "(index masks)"
            )
        if all(by_color):
            colors = [tuple(e.color) for e in entries]
            if len(set(colors)) < len(colors):
                raise ValueError("classes: two classes share one color")
            return ClassSpec(names=tuple(names), colors=tuple(colors))
        seen: dict[int, str] = {}
        for e in entries:
            for v in e.values:
                if v in seen:
                    raise ValueError(
                        f"classes: the value {v} is claimed by both {seen[v]} and {e.name}"
                    )
                if v in self.ignore_values:
                    raise ValueError(f"classes: the value {v} of {e.name} is also in ignore_values")
                seen[v] = e.name
        return ClassSpec(
            names=tuple(names),
            values=tuple(tuple(e.values) for e in entries),
            ignore_values=tuple(self.ignore_values),
        )
