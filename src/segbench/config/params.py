"""The whole of ``params.yaml``: :class:`Params`, its cross-checks, loading and overrides.

``params.yaml`` is the one place values live; :func:`load_params` reads and validates it once
into typed, frozen sections. A changed value (a sweep trial's learning rate, a promoted LoRA
rank) is applied with :meth:`Params.with_overrides`, which validates the result exactly as the
file itself is validated, so nothing can train with a value the pipeline would refuse.
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError, field_validator, model_validator

from segbench.config.base import Section
from segbench.config.data import DataConfig
from segbench.config.deploy import DeployConfig
from segbench.config.evaluate import EvaluateConfig, ReportConfig
from segbench.config.models import (
    ENTRY_CLASSES,
    EnsembleEntry,
    ModelEntry,
    resolve_entries,
)
from segbench.config.prepare import PrepareConfig
from segbench.config.sweep import SweepConfig, distribution
from segbench.config.training import TrainConfig
from segbench.errors import SegbenchError, describe_validation_error


class Params(Section):
    """The whole of ``params.yaml``."""

    data: DataConfig
    prepare: PrepareConfig
    train: TrainConfig
    models: dict[str, ModelEntry]
    ensembles: dict[str, EnsembleEntry]
    evaluate: EvaluateConfig
    report: ReportConfig
    sweep: SweepConfig
    deploy: DeployConfig

    @field_validator("models", mode="before")
    @classmethod
    def _models(cls, value):
        return resolve_entries(value)

    @field_validator("ensembles", mode="before")
    @classmethod
    def _ensembles(cls, value):
        return {} if value is None else value  # `ensembles:` with nothing under it: none

    @model_validator(mode="after")
    def _cross_checks(self):
        _check_model_training(self)
        _check_classes(self)
        _check_ensembles(self)
        _check_sweep(self)
        return self

    def entry(self, name: str) -> ModelEntry:
        """``models.<name>``; a name that is not configured lists those that are."""
        try:
            return self.models[name]
        except KeyError:
            raise SegbenchError(
                f"models.{name}: not configured (configured: {', '.join(self.models)})"
            ) from None

    def ensemble(self, name: str) -> EnsembleEntry:
        """``ensembles.<name>``; a name that is not configured lists those that are."""
        try:
            return self.ensembles[name]
        except KeyError:
            known = ", ".join(self.ensembles) or "none"
            raise SegbenchError(f"ensembles.{name}: not configured (configured: {known})") from None

    def with_overrides(
        self, overrides: Mapping[str, Any], *, source: str = "params.yaml (overridden)"
    ) -> Params:
        """A copy with each dotted key (``train.lr``, ``models.sam_lora.rank``) set to its
        value, validated as a whole; an unknown key or a refused value is a
        :class:`SegbenchError` naming ``source`` and the key."""
        data = self.model_dump(mode="python", exclude_unset=False)
        for dotted, value in overrides.items():
            *parents, leaf = dotted.split(".")
            node: Any = data
            for i, part in enumerate(parents):
                parent, node = node, node.get(part) if isinstance(node, dict) else None
                if node is None and _entry_train(parents[: i + 1]) and isinstance(parent, dict):
                    node = parent[part] = {}  # an entry's own train keys: none set yet
                if node is None:
                    raise SegbenchError(f"{source}: {'.'.join(parents[: i + 1])}: no such key")
            own_train = _entry_train(parents) and leaf in TrainConfig.model_fields
            if not isinstance(node, dict) or (leaf not in node and not own_train):
                raise SegbenchError(f"{source}: {dotted}: no such key")
            node[leaf] = copy.deepcopy(value)
        return parse_params(data, source=source, check_values=False)


def _trained(params: Params) -> str:
    return ", ".join(m for m, e in params.models.items() if e.kind == "torch") or "none"


def _entry_train(parts: list[str]) -> bool:
    """Whether dotted ``parts`` are ``models.<entry>.train`` (keys of which may be added)."""
    return len(parts) == 3 and parts[0] == "models" and parts[2] == "train"


def _check_model_training(params: Params) -> None:
    """Each trained entry's own ``train`` keys, merged into ``train``, validate as ``train``."""
    for name, entry in params.models.items():
        if entry.kind != "torch":
            continue
        try:
            entry.train_config(params.train)
        except ValidationError as exc:
            raise ValueError(
                describe_validation_error(exc, prefix=f"models.{name}.train")
            ) from None


def _check_classes(params: Params) -> None:
    """Entries that can only tell foreground from background refuse several classes."""
    spec = params.data.class_spec()
    configs = {"train": params.train} | {
        f"models.{name}.train": entry.train_config(params.train)
        for name, entry in params.models.items()
        if entry.kind == "torch"
    }
    for where, train in configs.items():
        weights = train.class_weights
        if weights is not None and len(weights) != spec.num_classes:
            raise ValueError(
                f"{where}.class_weights: {len(weights)} weight(s) for {spec.num_classes} "
                f"classes ({', '.join(spec.names)}); give one per class, or null"
            )
        if spec.binary and weights is not None and train.loss in ("dice", "tversky"):
            raise ValueError(
                f"{where}.class_weights: a binary {train.loss} loss has one foreground term "
                "and nothing to weight; use bce, dice_bce, focal or focal_dice, or null"
            )
    if spec.binary:
        return
    skipped = not_applicable(params)
    for name, block in params.ensembles.items():
        for member in block.members:
            if member in skipped:
                raise ValueError(f"ensembles.{name}.members: {member}: {skipped[member]}")
    if params.sweep.enabled and params.sweep.model in skipped:
        raise ValueError(f"sweep.model: {params.sweep.model}: {skipped[params.sweep.model]}")
    for name, entry in params.models.items():
        if getattr(entry, "prompt", None) == "box" and entry.model != "sam_zero_shot":
            raise ValueError(
                f"models.{name}.prompt: box prompts mark one object class, but data has "
                f"{spec.num_classes} classes; use prompt: none (one mask token per class)"
            )
        if getattr(entry, "auto_compare", None) is not None:
            raise ValueError(
                f"models.{name}.auto_compare: the automatic mask generator's masks are merged "
                f"into one foreground, but data has {spec.num_classes} classes; set it to null"
            )


def not_applicable(params: Params) -> dict[str, str]:
    """``{entry: why}`` for the models entries that cannot run on this data.

    Zero-shot SAM's prompts (points, boxes, the automatic generator) mark objects of *one*
    class, and the edge baselines (sobel, canny) fill closed contours, which says "object" but
    not which class; on data with several classes those entries are not run. The pipeline
    skips them and says so (``check``, their stages, the report); naming one directly
    (``segbench train/evaluate <entry>``) is an error with this reason.
    """
    spec = params.data.class_spec()
    if spec.binary:
        return {}
    names = ", ".join(spec.names)
    skipped = {}
    for name, entry in params.models.items():
        if entry.model == "sam_zero_shot":
            skipped[name] = (
                f"zero-shot SAM ({entry.prompt} prompts) segments one class, but the data has "
                f"{spec.num_classes} ({names}); use sam_decoder or sam_lora with prompt: none "
                "(one mask token per class)"
            )
        elif entry.model in ("sobel", "canny"):
            skipped[name] = (
                f"the {entry.model} edge baseline fills closed contours as one foreground "
                f"class, but the data has {spec.num_classes} classes ({names}); otsu "
                "(multi-Otsu) is the classical baseline for several classes"
            )
    return skipped


def _check_ensembles(params: Params) -> None:
    for name, block in params.ensembles.items():
        key = f"ensembles.{name}"
        if name in params.models:
            raise ValueError(
                f"{key}: the name is also under models; an ensemble needs a name of its own "
                "(its results go to eval/<name>)"
            )
        missing = [m for m in block.members if m not in params.models]
        if missing:
            raise ValueError(
                f"{key}.members: {', '.join(missing)} not under models (nothing trains it); "
                f"add it there or choose from: {_trained(params)}"
            )
        for member in block.members:
            entry = params.models[member]
            if entry.kind != "torch":
                raise ValueError(
                    f"{key}.members: {member} is a {entry.kind} model: its 0/1 masks carry no "
                    f"probability to average; ensemble trained networks ({_trained(params)})"
                )
            if entry.oracle_prompts:
                raise ValueError(
                    f"{key}.members: {member} takes its prompts from the reference masks, "
                    "which an ensemble's images do not have; use a promptless member "
                    "(prompt: none)"
                )


def _check_sweep(params: Params) -> None:
    sweep = params.sweep
    for name, entry in params.models.items():
        if getattr(entry, "from_sweep", False) and (name != sweep.model or not sweep.enabled):
            tuned = f"tunes {sweep.model}" if sweep.enabled else "is off (enabled)"
            raise ValueError(
                f"models.{name}.from_sweep: the sweep {tuned} (sweep.model); set sweep.model: "
                f"{name} and sweep.enabled: true to tune this entry, or set from_sweep: false"
            )
    if not sweep.enabled:
        return
    if sweep.model not in params.models:
        raise ValueError(
            f"sweep.model: {sweep.model!r} is not an entry of models (configured: "
            f"{', '.join(params.models)})"
        )
    entry = params.models[sweep.model]
    if entry.kind != "torch":
        raise ValueError(
            f"sweep.model: {sweep.model} is a {entry.kind} model with no training to sweep; "
            f"choose a trained network: {_trained(params)}"
        )
    fields = {"train": set(TrainConfig.model_fields), "model": set(type(entry).model_fields)}
    fields["model"] -= {"model", "from_sweep"}
    for section, key, _ in sweep.leaves():
        if key not in fields[section]:
            owner = "train" if section == "train" else f"models.{sweep.model}"
            raise ValueError(
                f"sweep.space.{section}.{key}: training has no key {key!r} in {owner}; valid: "
                f"{', '.join(sorted(fields[section]))}"
            )


def check_sweep_values(params: Params, source: str) -> None:
    """Stop with the dotted key if a value of the sweep's space is one training would refuse
    (each is written into the params and validated as a trial's params would be)."""
    sweep = params.sweep
    if not sweep.enabled:
        return
    for section, key, leaf in sweep.leaves():
        values = leaf if isinstance(leaf, list) else list(distribution(leaf)[1])
        for value in values:
            try:
                params.with_overrides({sweep.override_key(section, key): value}, source="trial")
            except SegbenchError as exc:
                raise SegbenchError(
                    f"{source}: sweep.space.{section}.{key}: the value {value!r} is not valid "
                    f"in training: {str(exc).removeprefix('trial: ')}"
                ) from None


def _clean_loc(err: dict) -> dict:
    """Drop the union tag pydantic puts in a models entry's error location
    (``models.unet.unet.encoder_depth`` -> ``models.unet.encoder_depth``)."""
    loc = err["loc"]
    if len(loc) > 2 and loc[0] == "models" and loc[2] in ENTRY_CLASSES:
        return {**err, "loc": (*loc[:2], *loc[3:])}
    return err


def parse_params(raw: Any, *, source: str = "params.yaml", check_values: bool = True) -> Params:
    """Validate a params mapping (as read from YAML); raise :class:`SegbenchError` naming
    ``source`` and the dotted key if it is bad. ``check_values=False`` skips validating each
    value of the sweep's space as a trial (which is how each of them is itself checked)."""
    if not isinstance(raw, dict):
        raise SegbenchError(f"{source}: expected a mapping at the top level")
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        errors = [_clean_loc(e) for e in exc.errors()]
        raise SegbenchError(f"{source}: {describe_validation_error(exc, errors=errors)}") from None
    if check_values:
        check_sweep_values(params, source)
    return params


def merge_raw(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` written over it, mapping by mapping (a raw params mapping and
    a file of differences, e.g. ``configs/full-scale.yaml``); neither is modified."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_raw(out[key], value)
        else:
            out[key] = value
    return out


class DuplicateKey(yaml.YAMLError):
    """A mapping of a YAML file that gives one key twice."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    keeps the last one silently, so an edit above an old value would be ignored)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, typing.Hashable):
                continue  # PyYAML's own construct_mapping refuses it, with the line
            if key in seen:
                raise DuplicateKey(
                    f"key {key!r} given twice in one mapping, on lines {seen[key]} and {line} "
                    "(YAML would keep only the last); keep one"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_raw(path: str | Path = "params.yaml") -> dict[str, Any]:
    """A params file as a plain mapping, not yet validated."""
    path = Path(path)
    if not path.is_file():
        raise SegbenchError(f"{path}: no such params file (run from the repository root)")
    try:
        # A SafeLoader: no Python objects are ever built from the file.
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except DuplicateKey as exc:
        raise SegbenchError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise SegbenchError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None
    if raw is None:
        raise SegbenchError(f"{path}: the file is empty; start from the shipped params.yaml")
    return raw


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file."""
    return parse_params(load_raw(path), source=str(path))
