"""The search space as Ray Tune's ``param_space``, and a trial's values as training overrides.

A trial's config is flat: ``{"train.lr": 0.001, "model.rank": 8}`` (``model`` is the swept
entry ``models.<sweep.model>``). :func:`trial_params` applies those values with
:meth:`~segbench.config.params.Params.with_overrides`, which validates the result exactly as
``params.yaml`` itself is validated, so a trial can never train with a value the pipeline would
refuse.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from segbench.config import Params, SweepConfig
from segbench.config.sweep import distribution


def flat_name(section: str, key: str) -> str:
    """The trial-config key of ``space.<section>.<key>``: ``train.lr``, ``model.rank``."""
    return f"{section}.{key}"


def column_names(sweep: SweepConfig) -> dict[str, str]:
    """Trial-config key -> results column: the bare key (``lr``, ``rank``) unless two sections
    share it, then the dotted one."""
    keys = [k for _, k, _ in sweep.leaves()]
    return {
        flat_name(s, k): (k if keys.count(k) == 1 else flat_name(s, k))
        for s, k, _ in sweep.leaves()
    }


def overrides(sweep: SweepConfig, config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's flat config -> :meth:`Params.with_overrides` keys (``models.<entry>.rank``)."""
    out = {}
    for name, value in config.items():
        section, key = name.split(".", 1)
        out[sweep.override_key(section, key)] = value
    return out


def trial_params(params: Params, config: Mapping[str, Any], epochs: int | None) -> Params:
    """The validated params one trial trains with: ``config``'s values, and ``epochs``."""
    values = overrides(params.sweep, config)
    if epochs is not None:
        values[params.sweep.override_key("train", "epochs")] = epochs
    values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}
    return params.with_overrides(values, source="params.yaml (sweep trial)")


def tune_space(sweep: SweepConfig) -> dict[str, Any]:
    """Ray Tune's ``param_space``: grid -> ``grid_search``; random -> ``choice`` or the
    distribution named."""
    from ray import tune

    space: dict[str, Any] = {}
    for section, key, leaf in sweep.leaves():
        name = flat_name(section, key)
        if isinstance(leaf, list):
            space[name] = tune.grid_search(leaf) if sweep.search == "grid" else tune.choice(leaf)
        else:
            dist, (low, high) = distribution(leaf)
            if dist in ("randint", "lograndint"):  # Ray's upper bound is exclusive; ours is not
                space[name] = getattr(tune, dist)(int(low), int(high) + 1)
            else:
                space[name] = getattr(tune, dist)(low, high)
    return space
