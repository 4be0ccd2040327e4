"""``data``: where images and masks come from, how masks are read, and how images are split."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from segbench.config.base import Range, Section, check_range


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
    frames with at most one dark lesion, and some frames with none (empty references).
    """

    domain: Literal["particles", "ultrasound"]
    n_images: int = Field(ge=10, description="at least 10 so every split gets an image")
    height: int = Field(ge=64)
    width: int = Field(ge=64)
    noise: float = Field(ge=0, description="particles: detector noise, x the default")
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
    """``data.mask``: how stored mask values become foreground.

    With both null, any non-zero value is foreground ({0,1}, {0,255} and instance-label masks).
    ``value`` keeps one label of a label image; ``threshold`` binarises lossy (JPEG) masks.
    """

    value: int | None = Field(ge=0)
    threshold: int | None = Field(ge=1)

    @model_validator(mode="after")
    def _one(self):
        if self.value is not None and self.threshold is not None:
            raise ValueError("value: set either data.mask.value or data.mask.threshold, not both")
        return self


class DataConfig(Section):
    source: Literal["synthetic", "folder", "hf"]
    path: str | None = Field(description="folder source: its root; hf: a saved dataset")
    seed: int = Field(ge=0)
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
        return self
