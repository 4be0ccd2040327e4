"""Each trial's model size: total and trainable parameters, counted from its values.

A trial's model depends on its values alone: the swept entry with the trial's values applied
(:func:`segbench.sweep.space.trial_params`), for the classes and channels of the tiles. The
driver builds it as :func:`segbench.training.train` does (the same model card, the same registry
call), on the CPU and without training, and counts it with :func:`segbench.cost.count_parameters`,
the count ``train`` itself reports. It does so once the trials are done, for every trial
whatever became of it: Tune's reports carry no count from ``train`` for a trial ASHA stopped or
one that failed, and a count derived from the values needs nothing in the sweep's store to
survive a retry or a resumed sweep that only replays a finished trial. Each distinct model is
built once, and freed (a ViT-H SAM holds ~2.5 GB of the driver's memory for a few seconds):
trials that differ only in ``train.*`` values (lr, batch size) share it, as no model builder
reads a training key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from segbench.classes import read_channels, read_classes
from segbench.config import Params
from segbench.cost import count_parameters
from segbench.models import build_model
from segbench.sweep.space import trial_params
from segbench.training.fit import model_card

SIZE_FIELDS = ("params_trainable", "params_total")  # the trials.csv columns, in this order


def model_size(params: Params, name: str, tiles_dir: str | Path) -> dict[str, int]:
    """``{"params_total": ..., "params_trainable": ...}`` of ``models.<name>`` of ``params``,
    built as ``train`` builds it for the data in ``tiles_dir`` (its classes and channels)."""
    tiles_dir = Path(tiles_dir)
    card = model_card(
        name,
        params,
        data_version="",
        spec=read_classes(tiles_dir),
        channels=read_channels(tiles_dir),
    )
    # Building draws random weights: the caller's own random stream is left as it was.
    with torch.random.fork_rng(devices=[]):
        model = build_model(
            card.entry, name=name, in_channels=card.in_channels, num_classes=card.num_classes
        )
    return count_parameters(model)


def trial_sizes(
    params: Params, configs: Sequence[Mapping[str, Any]], tiles_dir: str | Path
) -> list[dict[str, int]]:
    """The size (:func:`model_size`) of each trial's model, in the order of ``configs``
    (trial configs: ``{"model.rank": 4, "train.lr": 0.001}``); ``{}`` for a trial whose model
    cannot be built here (one line says why: the trials are done, and a count must never cost
    the sweep its results)."""
    model = params.sweep.model
    built: dict[str, dict[str, int]] = {}
    sizes = []
    for config in configs:
        own = {k: v for k, v in config.items() if k.split(".", 1)[0] == "model"}
        key = json.dumps(own, sort_keys=True, default=str)
        if key not in built:
            try:
                built[key] = model_size(trial_params(params, config, None), model, tiles_dir)
            except Exception as exc:  # whatever stops the build: say so, leave it blank
                why = " ".join(str(exc).split())[:300] or type(exc).__name__
                print(f"sweep@{model}: no parameter count for the trials with {own}: {why}")
                built[key] = {}
        sizes.append(built[key])
    return sizes
