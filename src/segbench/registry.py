"""The MLflow model registry: the report's reference model becomes ``<name>@champion``.

The report stage calls :func:`register_reference` with the comparison's rows. The reference
(the best model on the *validation* images among those that see the image alone, chosen before
any test figure is looked at: :func:`segbench.comparison.reference_row`) has an MLflow model,
logged by its evaluation into the run that trained it (:mod:`segbench.pyfunc`). It is registered
under ``report.registry.name`` (default ``segbench-<dataset>``) and the alias
(``report.registry.alias``, default ``champion``) is set to that version. A later run whose
reference is another model (or the same model retrained) registers a new version and the alias
moves to it; a run whose reference is the very model already holding the alias changes nothing.
Each version carries tags saying which entry it is and the scores that chose it.

Serve it with ``mlflow models serve -m models:/<name>@champion --env-manager local --host
127.0.0.1`` (the tracking URI the pipeline used in ``MLFLOW_TRACKING_URI``).
"""

from __future__ import annotations

import re
from pathlib import Path

from segbench.config import Params
from segbench.errors import SegbenchError
from segbench.evalmetrics import evaluate_stage
from segbench.modelcard import ModelCard
from segbench.timing import phase
from segbench.tracking import MODEL_URI_TAG, tracking_uri


def dataset_name(params: Params) -> str:
    """A short name of the dataset: the synthetic domain, the folder's name, or the hub
    dataset's name (without its owner)."""
    data = params.data
    if data.source == "synthetic":
        name = data.synthetic.domain
    elif data.source == "folder":
        name = Path(data.path).resolve().name if data.path else "folder"
    else:
        name = (data.hf.name or "hf").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or data.source


def registered_name(params: Params) -> str:
    """``report.registry.name``, else ``segbench-<dataset>``."""
    return params.report.registry.name or f"segbench-{dataset_name(params)}"


def register_reference(rows: list[dict], eval_dir: str | Path, params: Params) -> dict | None:
    """Register the reference row's MLflow model and point the alias at it.

    Returns None when ``report.registry.enabled`` is false, else ``{"name", "alias", "version",
    "model", "model_uri", "uri" (models:/<name>@<alias>), "changed" (whether the alias moved),
    "previous" (the version it held before, or None), "reason"}``; with no reference row
    (no validation images) ``version`` is None and ``reason`` says why. A reference whose
    MLflow run or model is not in this tracking store is a :class:`SegbenchError` that says
    what to re-run.
    """
    cfg = params.report.registry
    if not cfg.enabled:
        return None
    name = registered_name(params)
    out = {"name": name, "alias": cfg.alias, "uri": f"models:/{name}@{cfg.alias}"}
    ref = next((r for r in rows if r.get("reference")), None)
    if ref is None:
        return out | {"version": None, "reason": "no reference model (no validation images)"}
    model = ref["model"]
    stage = evaluate_stage(model, params.ensembles)
    folder = Path(eval_dir) / model
    run_id = ModelCard.read(folder).mlflow_run_id
    store = tracking_uri()
    fix = (
        f"re-run `dvc repro -f {stage}` with the same MLFLOW_TRACKING_URI as its training, or "
        "set report.registry.enabled: false"
    )
    if run_id is None:
        raise SegbenchError(f"{folder}: the reference model {model} has no MLflow run; {fix}")
    with phase("mlflow"):
        return out | _register(name, cfg.alias, model, run_id, ref, store, fix)


def _register(name, alias, model, run_id, ref, store, fix) -> dict:
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(store)
    client = mlflow.MlflowClient(store)
    try:
        model_uri = client.get_run(run_id).data.tags.get(MODEL_URI_TAG)
    except MlflowException:
        raise SegbenchError(
            f"the reference model {model}: its MLflow run {run_id} is not in the tracking store "
            f"{store}; {fix}"
        ) from None
    if model_uri is None:
        raise SegbenchError(
            f"the reference model {model}: its MLflow run {run_id} holds no logged model (it "
            f"was evaluated by an older segbench); {fix}"
        )
    previous = _holder(client, name, alias)
    if previous is not None and previous.source == model_uri:
        return {
            "version": int(previous.version),
            "model": model,
            "model_uri": model_uri,
            "changed": False,
            "previous": int(previous.version),
            "reason": None,
        }
    tags = {
        "segbench.model": model,
        "segbench.score": _text(ref.get("score")),
        "segbench.val_score": _text(ref.get("val_score")),
        "segbench.score_metric": str(ref.get("score_metric") or "dice_all"),
        "segbench.chosen_on": "validation",
    }
    # A model registered before (the reference changed and changed back) keeps its version.
    version = _version_of(client, name, model_uri) or mlflow.register_model(
        model_uri, name, tags=tags
    )
    client.set_registered_model_alias(name, alias, version.version)
    return {
        "version": int(version.version),
        "model": model,
        "model_uri": model_uri,
        "changed": True,
        "previous": int(previous.version) if previous is not None else None,
        "reason": None,
    }


def _version_of(client, name: str, model_uri: str):
    """The version of ``name`` registered from ``model_uri``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    return next((v for v in versions if v.source == model_uri), None)


def _holder(client, name: str, alias: str):
    """The version of ``name`` holding ``alias``, or None (no such model or alias yet)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _text(value) -> str:
    return "" if value is None else f"{float(value):.6g}"
