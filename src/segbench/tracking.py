"""MLflow conventions, in one place.

- Tracking URI: ``MLFLOW_TRACKING_URI`` if set, else an absolute ``sqlite:///<root>/mlflow.db``
  with artifacts under ``<root>/mlartifacts``, where ``<root>`` is ``DVC_ROOT`` if set, else the
  repository containing the working directory. Absolute, because DVC may run stages elsewhere.
- One run per ``train@<model>``; ``evaluate@<model>`` logs into that same run (its id is kept in
  ``models/<model>/mlflow.json``).
- Tags on every run: git commit, whether the tree was dirty (:func:`git_state`), DVC experiment
  name, DVC stage, data version, device, and (evaluation) the hash of the test images and masks.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from segbench.timing import phase

EXPERIMENT = "segbench"
# The run tag holding the URI (models:/<model id>) of the newest servable model evaluate logged
# into the run (segbench.pyfunc); the report stage registers what it names (segbench.registry).
MODEL_URI_TAG = "segbench.model_uri"


def repo_root(start: str | Path | None = None) -> Path:
    """``DVC_ROOT`` if set, else the nearest ancestor holding ``.dvc`` or ``.git``, else cwd."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = Path(start or Path.cwd()).resolve()
    for path in (here, *here.parents):
        if (path / ".dvc").is_dir() or (path / ".git").exists():
            return path
    return here


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def _experiment_id(client, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = (repo_root() / "mlartifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # another process created it first
        return client.get_experiment_by_name(name).experiment_id


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# What decides a run's result: its code, its config and its dependencies (git pathspecs from
# the top of the repository). Everything else is left out of "dirty" on purpose: the pipeline
# itself rewrites tracked files (dvc.lock after every stage, eval/*/metrics.json, the
# .gitignore DVC keeps beside each output), so a whole-tree rule would call every run after a
# pipeline's first stage dirty, and an edited README or test changes no number.
RUN_INPUTS = (
    "src",
    "stages",
    "flows",
    "params.yaml",
    "dvc.yaml",
    "configs",
    "pyproject.toml",
    "requirements.lock",
)

# --no-optional-locks: never take index.lock, so stages running side by side cannot collide;
# porcelain v2 with --branch gives the commit ("# branch.oid") in the same call.
GIT_STATUS = ("git", "--no-optional-locks", "status", "--porcelain=v2", "--branch", "-unormal")


def git_state(root: str | Path) -> dict[str, str]:
    """``{"git_commit": sha or "unknown", "git_dirty": "true" | "false" | "unknown"}`` for the
    repository holding ``root``, from one ``git status`` call; never raises.

    Dirty: a tracked file under :data:`RUN_INPUTS` differs from the commit (staged or not,
    deleted, renamed), or an untracked file there that ``.gitignore`` does not ignore (a new
    module runs as surely as an edited one). No git, not a repository, or git failing:
    "unknown" for both. A repository without a commit yet: commit "unknown", dirty as found.
    """
    pathspecs = [f":(top){path}" for path in RUN_INPUTS]
    try:
        out = subprocess.run(
            [*GIT_STATUS, "--", *pathspecs],
            cwd=root,
            capture_output=True,
            text=True,
            errors="replace",
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):  # no git, not a repository, hung
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    lines = out.splitlines()
    oid = next((ln.split()[2] for ln in lines if ln.startswith("# branch.oid ")), "(initial)")
    dirty = any(not ln.startswith("#") for ln in lines if ln)  # headers start with "#"
    return {
        "git_commit": "unknown" if oid == "(initial)" else oid,
        "git_dirty": "true" if dirty else "false",
    }


def run_tags(
    *, stage: str, data_version: str, device: str, test_data_hash: str | None = None
) -> dict[str, str]:
    """The tags every segbench run carries (see the module's docstring); ``test_data_hash``
    (:func:`segbench.datahash.split_hash` of the test split) only when given."""
    tags = {
        **git_state(Path.cwd()),  # the code that ran, also in a DVC temp copy
        "dvc_exp_name": os.environ.get("DVC_EXP_NAME", ""),
        "dvc_stage": os.environ.get("DVC_STAGE", stage),
        "data_version": data_version,
        "device": device,
    }
    if test_data_hash is not None:
        tags["test_data_hash"] = test_data_hash
    return tags


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train": {"lr": 1e-3}}`` -> ``{"train.lr": "0.001"}`` for ``mlflow.log_params``."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)
    return out


@contextlib.contextmanager
def mlflow_run(
    *, run_name: str | None = None, run_id: str | None = None, tags: dict[str, str]
) -> Iterator[Any]:
    """Start (or resume, given ``run_id``) a run under the segbench experiment; yield it.

    A ``run_id`` that this store does not know (e.g. the tracking URI changed) starts a new run
    rather than failing the stage.
    """
    with phase("mlflow"):
        import mlflow
        from mlflow.exceptions import MlflowException

        mlflow.set_tracking_uri(tracking_uri())
        client = mlflow.MlflowClient()
        exp_id = _experiment_id(client, EXPERIMENT)
        if run_id is not None:
            try:
                client.get_run(run_id)
            except MlflowException:
                run_id = None
        kwargs = {"run_id": run_id} if run_id else {"experiment_id": exp_id, "run_name": run_name}
        if run_id:  # a resumed run keeps its training tags; this stage's go beside them
            prefix = tags.get("dvc_stage", "resumed").split("@")[0]
            tags = {f"{prefix}.{k}": v for k, v in tags.items()}
        run = mlflow.start_run(**kwargs)
        mlflow.set_tags(tags)
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    finally:
        with phase("mlflow"):
            mlflow.end_run(status)


def end_abandoned_run(run_id: str, reason: str) -> None:
    """Mark a run a killed process left RUNNING as KILLED, with ``reason`` as a tag (a training
    that starts afresh over a killed one's checkpoint); a run this store does not know, or one
    already ended, is left as it is."""
    with phase("mlflow"):
        import mlflow
        from mlflow.exceptions import MlflowException

        mlflow.set_tracking_uri(tracking_uri())
        client = mlflow.MlflowClient()
        try:
            if client.get_run(run_id).info.status != "RUNNING":
                return
            client.set_tag(run_id, "segbench.abandoned", reason)
            client.set_terminated(run_id, status="KILLED")
        except MlflowException:
            pass


# MLflow calls go through these, so that their cost is counted as MLflow's (segbench.timing).


def log_params(params: Mapping[str, Any]) -> None:
    """Log a (nested) mapping as flat ``a.b`` params of the active run."""
    with phase("mlflow"):
        import mlflow

        mlflow.log_params(flatten(params))


def log_metrics(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Log the numbers of ``metrics`` (other values are skipped) to the active run."""
    with phase("mlflow"):
        import mlflow

        numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        mlflow.log_metrics(numbers, step=step)


def log_artifacts(path: str | Path, artifact_path: str) -> None:
    """A file or a directory's files as artifacts of the active run, under ``artifact_path``."""
    with phase("mlflow"):
        import mlflow

        log = mlflow.log_artifacts if Path(path).is_dir() else mlflow.log_artifact
        log(str(path), artifact_path=artifact_path)
