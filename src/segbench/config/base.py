"""What every section of ``params.yaml`` shares.

``params.yaml`` is the one place where values live: a section's schema validates them and never
supplies one of its own. Every key is therefore required (a missing key is an error that names
it), unknown keys are refused (a typo never passes silently) and sections are frozen (a loaded
configuration is the configuration that ran; changes go through
:meth:`segbench.config.params.Params.with_overrides`, which validates them again).
"""

from __future__ import annotations

import types
import typing
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, model_validator

# (low, high) pairs written as two-element lists in params.yaml.
Range = tuple[float, float]


def _options(annotation: Any) -> tuple[Any, ...]:
    """The alternatives of a union (``int | None`` -> ``(int, NoneType)``), else the type."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _takes_bool(annotation: Any) -> bool:
    """Whether a true/false is a value of its own for ``annotation`` (not a number in disguise)."""
    for option in _options(annotation):
        if option is bool or option is Any:
            return True
        if typing.get_origin(option) is Literal and any(
            isinstance(v, bool) for v in typing.get_args(option)
        ):
            return True
    return False


def _items(annotation: Any) -> tuple[Any, ...]:
    """The item types of the list or tuple alternatives of ``annotation``."""
    out: tuple[Any, ...] = ()
    for option in _options(annotation):
        if typing.get_origin(option) in (list, tuple):
            out += tuple(a for a in typing.get_args(option) if a is not Ellipsis)
    return out


class Section(BaseModel):
    """Base of every section and sub-section of ``params.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Keys a section refuses with its own reason (one that was removed, one that cannot apply
    # to this kind of entry) rather than pydantic's "extra inputs are not permitted".
    refused_keys: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _refused(cls, data: Any) -> Any:
        for key in cls.refused_keys if isinstance(data, dict) else ():
            if key in data:
                raise ValueError(f"{key}: {cls.refused_keys[key]}")
        return data

    @model_validator(mode="before")
    @classmethod
    def _booleans_are_not_numbers(cls, data: Any) -> Any:
        # pydantic's lax mode reads `epochs: true` as 1 and `from_sweep: 1` as true; in YAML
        # true/false (and yes/no/on/off) are booleans, and either mix-up is a mistake to report.
        if not isinstance(data, dict):
            return data
        for key, value in data.items():
            field = cls.model_fields.get(key)
            if field is not None:
                check_boolean(key, value, field.annotation)
        return data


def check_boolean(key: str, value: Any, annotation: Any) -> None:
    """Raise ``ValueError("<key>: ...")`` where ``value`` is a boolean standing for a number
    (or a list holding one), or a non-boolean given for a boolean."""
    if isinstance(value, bool) and not _takes_bool(annotation):
        raise ValueError(
            f"{key}: expected a number or a name, not {str(value).lower()} (YAML reads true, "
            "false, yes, no, on and off as booleans)"
        )
    if _options(annotation) in ((bool,), (bool, type(None))) and not (
        value is None or isinstance(value, bool)
    ):
        raise ValueError(f"{key}: expected true or false, got {value!r}")
    items = _items(annotation)
    if (
        isinstance(value, list | tuple)
        and items
        and not any(map(_takes_bool, items))
        and any(isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"{key}: expected numbers, got {value!r} (true and false are booleans)")


def check_range(section: BaseModel, *keys: str) -> None:
    """Raise ``ValueError("<key>: ...")`` unless each ``[low, high]`` has ``0 < low <= high``."""
    for key in keys:
        lo, hi = getattr(section, key)
        if not 0 < lo <= hi:
            raise ValueError(f"{key}: must be [low, high] with 0 < low <= high, got {[lo, hi]}")
