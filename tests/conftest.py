"""Shared fixtures: shrunk copies of the real params.yaml, an isolated MLflow store, a copy of
the repository for end-to-end runs, and one session-wide Prefect test server."""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
import yaml

from segbench.workspace import commit, copy_repository

REPO = Path(__file__).resolve().parents[1]


def real_params_raw() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


# Shrinks the real params.yaml to something a CPU runs end to end in seconds; every other key
# keeps its real value, so the tests exercise the real configuration.
SHRINK = {
    "data": {
        "synthetic": {"n_images": 10, "height": 192, "width": 256, "radius": [3.0, 20.0]},
        "split": {"train": 0.7, "val": 0.2, "test": 0.1},
    },
    "prepare": {"scale": 0.5, "tile_size": 64, "stride": 64, "random_crops": 1},
    "train": {"epochs": 2, "batch_size": 4},
    "report": {"gallery_size": 2},
    # Two one-epoch trials of the tiny LoRA SAM: the sweep stage runs in seconds.
    "sweep": {
        "space": {"model": {"rank": [2, 4]}, "train": {"lr": [0.003], "batch_size": [4]}},
        "epochs": 1,
    },
    # SAM's input at the shrunk tiles' size (64 px): the same tiny SAM, 1/16 of the pixels.
    # sam_lora takes the sweep's values in the shipped file; tests that want that say so (many
    # turn the sweep off, or drop the entry it sweeps).
    "models": {
        name: {"image_size": 64} | ({"from_sweep": False} if "from_sweep" in block else {})
        for name, block in real_params_raw()["models"].items()
        if (block or {}).get("model", name).startswith("sam_")
    },
}

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

# A test run started in the background by a non-interactive shell (`nohup make test &`, a
# script's `&`) ignores SIGINT, and every process it starts inherits that. The tests that
# interrupt stage processes, and the stage processes themselves, expect what a terminal gives.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest-xdist worker per core. torch's default of one thread per core
    # in every worker (and in every stage process a worker starts) would oversubscribe the CPU,
    # and OpenMP threads waiting on each other make that far slower than one thread each.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")


@functools.cache
def shipped_params():
    """The real params.yaml, validated (cached: tests must not modify it)."""
    from segbench.config import load_params

    return load_params(REPO / "params.yaml")


def shipped_section(dotted: str, **changes):
    """A section of the real params.yaml (``train``, ``prepare.augment``) with ``changes``
    (mappings merged key by key), validated again."""
    section = shipped_params()
    for part in dotted.split("."):
        section = getattr(section, part)
    return type(section).model_validate(deep_update(section.model_dump(), changes))


def shipped_entry(name: str, **changes):
    """``models.<name>`` of the real params.yaml with ``changes``, validated again."""
    entry = shipped_params().models[name]
    return type(entry).model_validate({**entry.model_dump(), **changes})


DROP = object()  # raw_entry(..., key=DROP) removes the key


def raw_entry(base: str, **changes) -> dict:
    """A complete ``models`` entry as written in params.yaml: the shipped entry ``base`` with
    ``changes`` (``DROP`` as a value removes the key)."""
    block = copy.deepcopy(real_params_raw()["models"][base])
    if "from_sweep" in block:  # the shipped sam_lora takes the sweep's values; a copy does not
        block["from_sweep"] = False
    block.update(changes)
    return {k: v for k, v in block.items() if v is not DROP}


def only_models(raw: dict, models, ensembles=()) -> dict:
    """A copy of a raw params mapping with only ``models`` and ``ensembles``; the sweep is
    switched off when its entry is not among them."""
    out = copy.deepcopy(raw)
    out["models"] = {m: out["models"][m] for m in models}
    out["ensembles"] = {e: out["ensembles"][e] for e in ensembles}
    if out["sweep"]["model"] not in out["models"]:
        out["sweep"]["enabled"] = False
    if not out["sweep"]["enabled"]:  # nothing to promote
        for block in out["models"].values():
            if (block or {}).get("from_sweep"):
                block["from_sweep"] = False
    return out


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``segbench ARGV`` in this process -> (exit status, stdout, stderr); status 0 when it
    returns."""
    from segbench.cli import main

    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def unregistered(params):
    """``params`` with ``report.registry.enabled: false``: for reports of hand-written
    evaluation directories, whose models are in no MLflow store."""
    return params.with_overrides({"report.registry.enabled": False})


def deep_update(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` written over it (segbench's own merge of a params mapping)."""
    from segbench.config.params import merge_raw

    return merge_raw(base, overrides)


@pytest.fixture
def small_params_raw() -> dict:
    """The real params.yaml, shrunk (a plain dict, to be modified by the test)."""
    return deep_update(real_params_raw(), SHRINK)


@pytest.fixture(scope="module")
def small_params_raw_module() -> dict:
    """The real params.yaml, shrunk, for module fixtures (the module's own copy)."""
    return deep_update(real_params_raw(), SHRINK)


@pytest.fixture
def small_params(small_params_raw):
    from segbench.config import parse_params

    return parse_params(small_params_raw)


# The modules that take longest (seconds on one worker, 2026-12-07), handed out first: with
# `--dist loadfile` a worker takes whole modules in collection order, and a long module that
# starts last keeps one worker busy after the other has finished (longest first is the classic
# cure for that tail).
LONGEST_FIRST = (
    "test_pipeline_e2e.py",  # ~125 s: the whole pipeline through Prefect and DVC
    "test_deploy.py",  # ~50 s: a real Prefect server
    "test_training_loop.py",  # ~37 s: two-process DDP
    "test_zygote.py",  # ~20 s
    "test_flow.py",  # 10-12 s each from here on
    "test_dependencies.py",
    "test_edges.py",
    "test_report.py",
    "test_study.py",
    "test_predict_cli.py",
    "test_export.py",
    "test_evaluate.py",
    "test_evalmetrics.py",
    "test_ensemble.py",
    "test_folds.py",
    "test_repeats.py",
)


def pytest_collection_modifyitems(config, items):
    """The longest modules first (:data:`LONGEST_FIRST`). Tests marked ``long`` run only with
    SEGBENCH_LONG=1 (``make test-long``): each is a whole shrunk pipeline or a fault case, and
    together they exceed ``make test``'s 6 minutes on 2 cores. (SEGBENCH_FAULTS_LONG=1, the
    older name, counts too.)"""

    def rank(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within each module, and of the others, stays
    if "1" in (os.environ.get("SEGBENCH_LONG"), os.environ.get("SEGBENCH_FAULTS_LONG")):
        return
    skip = pytest.mark.skip(reason="a long test: `make test-long` (SEGBENCH_LONG=1) runs it")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def stage_zygotes(tmp_path_factory):
    """Stage processes that tests start (``dvc repro``) are served by this session's own
    zygotes (segbench.zygote), stopped when the session ends, so none outlives the tests."""
    from segbench import zygote

    os.environ["SEGBENCH_ZYGOTE_DIR"] = str(tmp_path_factory.mktemp("zygotes"))
    yield
    with contextlib.redirect_stdout(io.StringIO()):
        zygote.main(["stop"])


_MLFLOW_TEMPLATE: list[Path] = []  # this worker's empty, initialised store (made once)


def seeded_store(path: Path) -> str:
    """The sqlite URI of an MLflow store at ``path``, which is made a copy of an empty store
    this worker initialised once (when ``path`` does not exist yet). MLflow creates a new
    store's 40-odd tables and runs its migrations on first use, 3-4 s on 2 cores; tests that
    each log to a store of their own would pay that again and again. A copy is what MLflow
    itself would have made: the same schema, the Default experiment, no runs."""
    if not _MLFLOW_TEMPLATE:
        import tempfile

        from mlflow.tracking import MlflowClient

        template = Path(tempfile.mkdtemp(prefix="segbench-mlflow-")) / "mlflow.db"
        MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments()
        _MLFLOW_TEMPLATE.append(template)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_MLFLOW_TEMPLATE[0], path)
    return f"sqlite:///{path}"


@pytest.fixture(autouse=True)
def mlflow_store(tmp_path_factory, monkeypatch) -> str:
    """Every test gets its own MLflow store (absolute sqlite URI, a seeded copy: see
    :func:`seeded_store`) and artifact root, beside its tmp_path."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = seeded_store(root / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DVC_ROOT", str(root))
    return uri


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Fetched + prepared shrunk synthetic data: ``(raw_dir, tiles_dir, params)``."""
    from segbench.config import parse_params
    from segbench.fetch import fetch
    from segbench.prepare import prepare

    params = parse_params(deep_update(real_params_raw(), SHRINK))
    root = tmp_path_factory.mktemp("tiny")
    fetch(params, root / "raw")
    prepare(params.prepare, root / "raw", root / "tiles")
    return root / "raw", root / "tiles", params


@pytest.fixture
def repo_copy(tmp_path, small_params_raw) -> Path:
    """A git+DVC copy of this repository with a shrunk params.yaml, committed."""
    dest = copy_repository(REPO, tmp_path / "repo")
    (dest / "params.yaml").write_text(yaml.safe_dump(small_params_raw, sort_keys=False))
    commit(dest, "shrink params")
    return dest


def venv_env() -> dict[str, str]:
    """Environment for subprocesses: this interpreter's bin first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """One real (temporary) Prefect server for the whole session, with its own PREFECT_HOME."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def real_report(tiny_data, tmp_path_factory):
    """A report built by the real functions from two really trained models (Otsu and a
    one-epoch U-Net) on the shrunk data: ``(reports dir, [model names])``."""
    from segbench.config import parse_params
    from segbench.evaluate import evaluate
    from segbench.report import report
    from segbench.training import train

    raw, tiles, params = tiny_data
    root = tmp_path_factory.mktemp("real_report")
    models = ["otsu", "unet"]
    small = deep_update(
        only_models(params.model_dump(mode="json"), models), {"train": {"epochs": 1}}
    )
    params = parse_params(small)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("DVC_ROOT", str(root))
        for m in models:
            train(m, params, tiles, root / "models" / m)
            evaluate(root / "models" / m, params, raw, root / "eval" / m)
        # In the same store: the report registers its reference model there.
        report(params, raw_dir=raw, eval_dir=root / "eval", out_dir=root / "reports")
    return root / "reports", models
