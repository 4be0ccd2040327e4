"""The search space: checked against training, turned into Ray Tune's, applied to one trial.

A trial's config is flat: ``{"train.lr": 0.001, "model.rank": 8}`` (``model`` is the swept
entry ``models.<sweep.model>``). :func:`trial_params` writes those values into the raw
``params.yaml`` mapping and validates the result exactly as ``params.yaml`` itself is validated,
so a trial can never train with a value the pipeline would refuse.
"""

from __future__ import annotations

import copy
from typing import Any

from segbench.errors import SegbenchError
from segbench.models.registry import MODELS
from segbench.sweep.config import SweepConfig, _distribution

# Training keys a trial must not change: the sweep sets epochs itself (sweep.epochs, the ASHA
# horizon), Ray places the trial (device, devices), and resuming is the sweep's business.
RESERVED_TRAIN_KEYS = {
    "epochs": "use sweep.epochs (every trial runs the same number of epochs)",
    "resume": "the sweep resumes interrupted trials itself",
    "devices": "Ray places each trial (sweep.resources); DDP inside a trial is not supported",
    "device": "Ray places each trial (sweep.resources.gpu)",
}


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


def apply_overrides(raw: dict, model: str, config: dict[str, Any], epochs: int | None) -> dict:
    """A copy of the raw params mapping with a trial's values written in."""
    out = copy.deepcopy(raw)
    out.setdefault("train", {})
    out.setdefault("models", {})
    entry = out["models"].get(model) or {}
    out["models"][model] = entry
    for name, value in config.items():
        section, key = name.split(".", 1)
        (out["train"] if section == "train" else entry)[key] = value
    if epochs is not None:
        out["train"]["epochs"] = epochs
    return out


def trial_params(raw: dict, model: str, config: dict[str, Any], epochs: int | None):
    """The validated :class:`~segbench.config.Params` one trial trains with."""
    from segbench.config import parse_params

    return parse_params(
        apply_overrides(raw, model, config, epochs),
        source="params.yaml (trial)",
        check_sweep=False,
    )


def check_space(params, raw: dict) -> None:
    """Stop with the dotted key if the sweep names a model that cannot be swept, a key that
    training does not have, or a value training would refuse."""
    sweep: SweepConfig = params.sweep
    model = sweep.model
    if not sweep.enabled:
        return
    if model not in params.models:
        configured = ", ".join(params.models)
        raise SegbenchError(
            f"params.yaml: sweep.model: {model!r} is not an entry of models (configured: "
            f"{configured})"
        )
    kind = MODELS[params.model_type(model)].kind
    if kind != "torch":
        trainable = ", ".join(
            m for m in params.models if MODELS[params.model_type(m)].kind == "torch"
        )
        raise SegbenchError(
            f"params.yaml: sweep.model: {model} is a {kind} model with no training to sweep; "
            f"choose a trained network: {trainable}"
        )
    train_keys = set(type(params.train).model_fields)
    model_keys = set(type(params.model_params(model)).model_fields)
    for section, key, leaf in sweep.leaves():
        where = f"sweep.space.{section}.{key}"
        valid = train_keys if section == "train" else model_keys
        if key not in valid:
            owner = "train" if section == "train" else f"models.{model}"
            raise SegbenchError(
                f"params.yaml: {where}: training has no key {key!r} in {owner}; valid: "
                f"{', '.join(sorted(valid - set(RESERVED_TRAIN_KEYS)))}"
            )
        if section == "train" and key in RESERVED_TRAIN_KEYS:
            raise SegbenchError(f"params.yaml: {where}: not sweepable: {RESERVED_TRAIN_KEYS[key]}")
        values = leaf if isinstance(leaf, list) else list(_distribution(leaf)[1])
        for value in values:
            try:
                trial_params(raw, model, {flat_name(section, key): value}, sweep.epochs)
            except SegbenchError as exc:
                raise SegbenchError(
                    f"params.yaml: {where}: the value {value!r} is not valid in training: "
                    f"{str(exc).removeprefix('params.yaml (trial): ')}"
                ) from None


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
            dist, (low, high) = _distribution(leaf)
            if dist in ("randint", "lograndint"):  # Ray's upper bound is exclusive; ours is not
                space[name] = getattr(tune, dist)(int(low), int(high) + 1)
            else:
                space[name] = getattr(tune, dist)(low, high)
    return space
