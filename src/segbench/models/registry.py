"""The model registry: one name -> how to validate its params, build it, and whether it trains.

Importing this module is cheap (no torch): ``segbench.config`` uses it to validate the ``models``
section of ``params.yaml`` before anything heavy is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from segbench.errors import SegbenchError, describe_validation_error
from segbench.models.params import (
    TRAIN_OVERRIDES,
    AttentionUnetParams,
    ModelParams,
    OtsuParams,
    SamLoraParams,
    SamParams,
    SamZeroShotParams,
    SegformerParams,
    UnetParams,
)


class EnsembleParams(ModelParams):
    """``ensembles.<name>``: a weighted average of trained members' probabilities.

    ``members`` is a list of model names (as in ``params.yaml``) or, once resolved against the
    ``models`` section, a mapping of name -> that model's params (as saved in ``config.json``).
    """

    members: list[str] | dict[str, dict[str, Any]] = Field(
        default_factory=lambda: ["unet", "segformer"],
        description="trained models to average (>= 2)",
    )
    weights: list[float] | None = Field(
        None, description="fixed weights, one per member; null = chosen on the validation split"
    )
    weight_step: float = Field(
        0.1, gt=0, le=0.5, description="grid step of the weight search on the simplex"
    )

    @field_validator("members")
    @classmethod
    def _members(cls, value):
        names = list(value)
        if len(names) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {names}")
        if len(set(names)) != len(names):
            raise ValueError(f"members listed twice: {names}")
        # Names are entries of `models` (checked against it by segbench.config); once resolved,
        # each block says which registered model it is (its `model` key, else its name).
        if isinstance(value, dict):
            for name, block in value.items():
                kind = (block or {}).get("model", name)
                spec = MODELS.get(kind)
                if spec is None:
                    valid = ", ".join(n for n, s in MODELS.items() if s.kind == "torch")
                    raise ValueError(f"unknown model {kind!r}; valid members: {valid}")
                if spec.kind != "torch":
                    raise ValueError(
                        f"{name} is a {spec.kind} model: its 0/1 masks carry no probability "
                        "to average; ensemble trained networks"
                    )
        return value

    @field_validator("weight_step")
    @classmethod
    def _step(cls, value):
        if abs(1 / value - round(1 / value)) > 1e-9:
            raise ValueError(f"must divide 1 into equal parts (0.1, 0.05, 0.25, ...), got {value}")
        return value

    @model_validator(mode="after")
    def _weights(self):
        if self.weights is not None:
            if len(self.weights) != len(self.members):
                raise ValueError(
                    f"weights: {len(self.weights)} given for {len(self.members)} members"
                )
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError(f"weights: must be >= 0 and not all 0, got {self.weights}")
        return self


@dataclass(frozen=True)
class ModelSpec:
    """How one registered model is validated and built.

    ``kind`` is ``"torch"`` for models trained by gradient descent (``build`` returns an
    ``nn.Module`` mapping ``(N, C, H, W)`` float images, C = ``in_channels`` (1 for our data),
    H and W multiples of 32, to ``(N, 1, H, W)`` logits);
    ``"classical"`` for models fitted in closed form (``build`` returns an object with
    ``fit``/``predict``/``state_dict``/``load_state_dict``); ``"ensemble"`` for
    combinations of trained torch models (``build`` returns an ``nn.Module`` like a torch model's;
    it is fitted by :mod:`segbench.ensemble`, not by the training loop); ``"zero_shot"`` for
    models used as they come (``build`` returns an object with ``predict(rgb, reference)``, see
    :class:`segbench.sam.prompted.PromptedSam`; nothing is trained or saved but the config).
    """

    name: str
    params: type[ModelParams]
    kind: Literal["torch", "classical", "zero_shot", "ensemble"]
    build: Callable[..., Any]


def _build_unet(**kw):
    from segbench.models.smp_models import build_unet

    return build_unet(**kw)


def _build_attention_unet(**kw):
    from segbench.models.attention_unet import build_attention_unet

    return build_attention_unet(**kw)


def _build_segformer(**kw):
    from segbench.models.smp_models import build_segformer

    return build_segformer(**kw)


def _sam(*, variant, checkpoint, sha256, init_seed, image_size):
    """The Segment Anything model of a SAM entry's shared keys (SamBaseParams)."""
    from segbench.sam.build import build_sam

    return build_sam(
        variant, image_size=image_size, checkpoint=checkpoint, sha256=sha256, init_seed=init_seed
    )


def _build_sam_decoder(
    *, embedding_cache, prompt, box_jitter, iou_loss_weight, in_channels, **rest
):
    from segbench.sam.segmenter import SamSegmenter

    for key in TRAIN_OVERRIDES:  # read by the training loop, not by the model
        rest.pop(key)
    model = SamSegmenter(
        _sam(**rest).train(), prompt=prompt, box_jitter=box_jitter, iou_loss_weight=iou_loss_weight
    )
    if embedding_cache:
        model.use_cache(embedding_cache)
    return model


def _build_sam_zero_shot(*, embedding_cache, prompt, k_points, box_jitter, seed, auto, **rest):
    from segbench.sam.prompted import PromptedSam

    return PromptedSam(
        _sam(**rest),
        prompt=prompt,
        k_points=k_points,
        box_jitter=box_jitter,
        seed=seed,
        auto=auto,
        embedding_cache=embedding_cache,
    )


def _build_sam_lora(*, rank, alpha, dropout, targets, blocks, **sam_params):
    from segbench.sam.lora import apply_lora

    model = _build_sam_decoder(**sam_params)
    apply_lora(model.sam, rank=rank, alpha=alpha, dropout=dropout, targets=targets, blocks=blocks)
    return model


def _build_otsu(**kw):
    from segbench.models.otsu import OtsuThreshold

    return OtsuThreshold(**kw)


def _build_ensemble(*, members, weights, weight_step):
    from segbench.models.ensemble import Ensemble

    if not isinstance(members, dict):  # bare names: each member with its default params
        members = {name: {} for name in members}
    modules = {}
    for name, block in members.items():
        block = dict(block)
        modules[name] = build_model(block.pop("model", name), **block)
    return Ensemble(modules, weights or [1.0] * len(modules))


MODELS: dict[str, ModelSpec] = {
    "unet": ModelSpec("unet", UnetParams, "torch", _build_unet),
    "attention_unet": ModelSpec(
        "attention_unet", AttentionUnetParams, "torch", _build_attention_unet
    ),
    "segformer": ModelSpec("segformer", SegformerParams, "torch", _build_segformer),
    "sam_decoder": ModelSpec("sam_decoder", SamParams, "torch", _build_sam_decoder),
    "sam_lora": ModelSpec("sam_lora", SamLoraParams, "torch", _build_sam_lora),
    "sam_zero_shot": ModelSpec(
        "sam_zero_shot", SamZeroShotParams, "zero_shot", _build_sam_zero_shot
    ),
    "otsu": ModelSpec("otsu", OtsuParams, "classical", _build_otsu),
    "ensemble": ModelSpec("ensemble", EnsembleParams, "ensemble", _build_ensemble),
}


def get_spec(name: str) -> ModelSpec:
    """Look a model up by name; an unknown name lists the valid ones."""
    try:
        return MODELS[name]
    except KeyError:
        valid = ", ".join(sorted(MODELS))
        raise SegbenchError(f"unknown model {name!r}; valid models: {valid}") from None


def build_model(name: str, **params: Any):
    """Build a registered model from its (validated) params."""
    spec = get_spec(name)
    try:
        checked = spec.params(**params)
    except ValidationError as exc:
        raise SegbenchError(describe_validation_error(exc, prefix=f"models.{name}")) from None
    return spec.build(**checked.model_dump())


_ORACLE_PROMPTS = {"point", "points", "box"}


def model_notes(model: str, params: dict[str, Any]) -> dict[str, bool]:
    """What a reader must know about a model's numbers, from its registered name and params:

    ``oracle_prompts``: its prompts are drawn from the reference masks (a perfect user), so its
    test scores are not those of the model on its own; ``random_init``: a SAM without a
    checkpoint, whose numbers say nothing about Segment Anything.
    """
    is_sam = model.startswith("sam_")
    return {
        "oracle_prompts": is_sam and params.get("prompt") in _ORACLE_PROMPTS,
        "random_init": is_sam and not params.get("checkpoint"),
    }
