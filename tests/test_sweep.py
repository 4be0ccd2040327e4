"""Sweeps on a real Ray: a local one with 2 CPUs, and a head started by the test and joined
through RAY_ADDRESS. Trials really train (U-Net, tiny LoRA SAM) on the shrunk tiles."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import ray

from segbench.config import parse_params
from segbench.errors import SegbenchError
from segbench.io import read_csv, read_json
from segbench.sweep.cluster import require_a_node_that_fits
from segbench.sweep.run import STOPPED_TAG, run_sweep
from segbench.training import train
from tests.conftest import venv_env

pytestmark = pytest.mark.slow


def sweep_params(small_params_raw: dict, **sweep):
    """The shrunk params with ``sweep`` changed; the U-Net the sweeps here tune has three
    levels (what is tested is the sweep, not the network)."""
    raw = small_params_raw
    raw["sweep"] = {**raw["sweep"], **sweep}
    raw["models"]["unet"].update(encoder_depth=3, decoder_channels=[16, 8, 8])
    return parse_params(raw)


def child_runs(parent_id: str) -> list:
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("segbench")
    return client.search_runs(
        [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )


def assert_sizes_are_trains(rows: list[dict], mlflow_store: str) -> None:
    """Every trial has its model's size, whatever became of it; a finished trial's is the one
    its own training counted (and logged to its MLflow run)."""
    assert all(int(r["params_total"]) >= int(r["params_trainable"]) > 0 for r in rows), rows
    mlflow.set_tracking_uri(mlflow_store)
    client = mlflow.MlflowClient()
    for row in rows:
        if row["status"] == "completed":
            logged = client.get_run(row["mlflow_run_id"]).data.metrics
            assert logged["params_trainable"] == int(row["params_trainable"]), row
            assert logged["params_total"] == int(row["params_total"]), row


# ~30 s on 2 cores: make test-long. make test runs a real local Ray sweep in the end-to-end
# pipeline (tests/test_pipeline_e2e.py, a grid of two trials).
@pytest.mark.long
def test_local_sweep_asha_stops_trailing_trials_and_mlflow_nests_them(
    tiny_data, small_params_raw, tmp_path, mlflow_store, capsys
):
    _, tiles, _ = tiny_data
    # Two learning rates that learn and, queued behind them, two that cannot (1e-6, 1e-7):
    # both slots of the 2-CPU Ray start on the first two, so the last two reach the first
    # rung after a good trial has and ASHA stops them there.
    params = sweep_params(
        small_params_raw,
        model="unet",
        space={"train": {"lr": [0.003, 0.002, 1e-6, 1e-7]}},
        epochs=2,
    )
    started = time.time()
    # A damaged state with planted pickles is left where the sweep keeps its own: --fresh.
    marker = plant(params, tiles, tmp_path / "state", tmp_path)
    summary = run_sweep(
        params, tiles, tmp_path / "sweeps", state_dir=tmp_path / "state", fresh=True
    )
    assert "starting afresh as asked" in capsys.readouterr().out
    assert not marker.exists()  # nothing planted was ever unpickled
    assert not ray.is_initialized()  # shut down, so the process can exit

    rows = read_csv(tmp_path / "sweeps" / "trials.csv")
    assert len(rows) == summary["trials"] == 4
    # The criterion the sweep chose on, and the pooled Dice beside it.
    assert {"trial", "status", "lr", "epochs_run", "val_score", "best_val_score"} <= set(rows[0])
    assert {"val_dice", "best_val_dice", "attempts"} <= set(rows[0])
    # One model for every learning rate: one size, the stopped trials' too.
    assert_sizes_are_trains(rows, mlflow_store)
    assert len({(r["params_trainable"], r["params_total"]) for r in rows}) == 1
    by_lr = {float(r["lr"]): r for r in rows}
    for lr in (1e-6, 1e-7):
        assert by_lr[lr]["status"] == "stopped early" and by_lr[lr]["epochs_run"] == "1", by_lr
        assert by_lr[lr]["best_epoch"] == "1", "a stopped trial has a best epoch too"
    finished = [r for r in rows if r["status"] == "completed"]
    assert finished and all(r["epochs_run"] == "2" for r in finished)
    assert all(r["best_epoch"] in ("1", "2") for r in finished)

    best = read_json(tmp_path / "sweeps" / "best.json")
    top = max(rows, key=lambda r: float(r["best_val_score"]))
    assert best["config"] == {"train.lr": float(top["lr"])} and best["model"] == "unet"
    assert best["metric"] == "best_val_score"
    assert best["value"] == pytest.approx(float(top["best_val_score"]))
    assert best["best_val_dice"] == pytest.approx(float(top["best_val_dice"]))
    assert best["config"]["train.lr"] in (0.003, 0.002)
    assert not (tmp_path / "state" / best["experiment"]).exists()  # finished: nothing to resume
    # No trial's weights or checkpoints are left behind, here or in Ray's session folders (which
    # Ray never cleans: a sweep of full-size models used to leave GBs there).
    assert not list((tmp_path / "state").rglob("*.pt"))
    ray_tmp = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray"
    pattern = f"session_*/artifacts/*/{best['experiment']}/**/*.pt"
    assert not [p for p in ray_tmp.glob(pattern) if p.stat().st_mtime >= started]

    mlflow.set_tracking_uri(mlflow_store)
    parents = mlflow.search_runs(
        search_all_experiments=True,
        filter_string="tags.dvc_stage = 'sweep' and attributes.run_name = 'sweep@unet'",
        output_format="list",
    )
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.metrics["trials"] == 4
    assert parent.data.metrics["trials_stopped_early"] >= 2
    assert parent.data.metrics["best_val_score"] == pytest.approx(best["value"])
    assert parent.data.params["best.train.lr"] == str(best["config"]["train.lr"])
    children = {r.info.run_id: r for r in child_runs(parent.info.run_id)}
    assert set(children) == {r["mlflow_run_id"] for r in rows}
    for row in rows:
        child = children[row["mlflow_run_id"]]
        assert child.data.params["train.lr"] == row["lr"]
        if row["status"] == "stopped early":
            assert child.info.status == "KILLED" and STOPPED_TAG in child.data.tags
        else:
            assert child.info.status == "FINISHED"
            assert child.data.metrics["val_dice"] == pytest.approx(float(row["val_dice"]))
            assert child.data.metrics["val_score"] == pytest.approx(float(row["val_score"]))
            assert child.data.metrics["best_val_score"] == pytest.approx(
                float(row["best_val_score"])
            )
    # A trial logs its model card and history, not its weights (train@ trains the best again).
    run_id = next(r["mlflow_run_id"] for r in rows if r["status"] == "completed")
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "model")}
    assert {"model/card.json", "model/history.csv"} <= logged
    assert not any(path.endswith(".pt") for path in logged)


def crash_once(marker: str, *args, on_epoch, **kwargs):
    """:func:`segbench.train.train`, except that the first trial to finish an epoch dies right
    after reporting it (once per ``marker`` file), as a node lost mid-trial would."""

    def crashing(row):
        on_epoch(row)
        if not os.path.exists(marker):
            Path(marker).touch()
            raise RuntimeError("injected crash after epoch 1")

    return train(*args, on_epoch=crashing, **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head (`ray start --head --block`) on 127.0.0.1, 2 CPUs; yields its address."""
    port = free_port()
    env = venv_env() | {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])  # workers import tests/
    ray_cli = Path(sys.executable).parent / "ray"
    cmd = [str(ray_cli), "start", "--head", "--block", "--node-ip-address=127.0.0.1"]
    cmd += [f"--port={port}", "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false"]
    cmd += ["--disable-usage-stats"]
    log = open(tmp_path / "ray_head.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "ray_head.log").read_text()
                assert time.monotonic() < deadline, "the Ray head did not start in 120 s"
                time.sleep(0.5)
        time.sleep(2)  # the raylet registers after the GCS listens
        yield f"127.0.0.1:{port}"
    finally:
        # --block: on Ctrl-C the head stops its processes; the group kill catches stragglers.
        os.killpg(proc.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.mark.long  # ~25 s on 2 cores: make test-long (tests/conftest.py)
def test_sweep_joins_a_ray_head_and_retries_a_crashed_trial_from_its_checkpoint(
    tiny_data, small_params_raw, tmp_path, mlflow_store, ray_head, monkeypatch, capsys
):
    import functools

    import ray.cloudpickle

    _, tiles, _ = tiny_data
    monkeypatch.setenv("RAY_ADDRESS", ray_head)
    # The wrapper travels to the head's workers by value: they need not import this module.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    params = sweep_params(
        small_params_raw,
        model="sam_lora",
        space={"model": {"rank": [2, 4]}, "train": {"lr": [0.003]}},
        epochs=3,
        scheduler="fifo",
        max_failures=1,
        max_concurrent=1,  # the head has 2 CPUs: without the limit both would run at once
    )
    marker = str(tmp_path / "crashed")
    summary = run_sweep(
        params,
        tiles,
        tmp_path / "sweeps",
        state_dir=tmp_path / "state",
        train_fn=functools.partial(crash_once, marker),
    )
    assert f"the Ray cluster at {ray_head}" in capsys.readouterr().out
    assert not ray.is_initialized()
    assert os.path.exists(marker)  # one trial did crash
    rows = read_csv(tmp_path / "sweeps" / "trials.csv")
    assert summary["trials"] == len(rows) == 2
    assert sorted(r["rank"] for r in rows) == ["2", "4"]
    assert all(r["status"] == "completed" and r["epochs_run"] == "3" for r in rows), rows
    assert sorted(r["attempts"] for r in rows) == ["1", "2"]  # the crashed one ran twice
    retried = next(r for r in rows if r["attempts"] == "2")
    # The LoRA rank changes what is trained, and the retried trial has its size too.
    assert_sizes_are_trains(rows, mlflow_store)
    size = {r["rank"]: int(r["params_trainable"]) for r in rows}
    assert size["2"] < size["4"], rows

    # It continued from its epoch-1 checkpoint in the same MLflow run: each epoch logged once.
    mlflow.set_tracking_uri(mlflow_store)
    client = mlflow.MlflowClient()
    run = client.get_run(retried["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_dice")]
    assert sorted(steps) == [1, 2, 3]
    # max_concurrent: 1 held: no epoch of the retried trial ended while the other one ran.
    other = client.get_run(next(r for r in rows if r is not retried)["mlflow_run_id"]).info
    stamps = [m.timestamp for m in client.get_metric_history(run.info.run_id, "val_dice")]
    assert not [t for t in stamps if other.start_time < t < other.end_time]


def test_unreachable_ray_address_fails_fast(tiny_data, small_params_raw, tmp_path, monkeypatch):
    _, tiles, _ = tiny_data
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{free_port()}")  # nothing listens there
    params = sweep_params(small_params_raw)
    start = time.monotonic()
    with pytest.raises(
        SegbenchError, match=r"RAY_ADDRESS: cannot reach a Ray cluster at 127\.0\.0\.1"
    ):
        run_sweep(params, tiles, tmp_path / "sweeps", state_dir=tmp_path / "state")
    assert time.monotonic() - start < 15
    assert not (tmp_path / "sweeps").exists()


def test_resources_no_node_has_fail_with_the_numbers():
    """What Ray says of its nodes (ray.nodes()' resources) against one trial's request; the
    real Ray's node list is read by check_fits in every sweep above."""
    nodes = [{"CPU": 2.0, "GPU": 0.0, "memory": 1e9}, {"CPU": 16.0, "GPU": 0.0}]
    with pytest.raises(SegbenchError) as info:
        require_a_node_that_fits(nodes, 64, 0.5)
    message = str(info.value)
    assert "each trial asks for 64 CPU and 0.5 GPU" in message
    assert "largest of the cluster's 2 node(s) has 16 CPU and 0 GPU" in message
    require_a_node_that_fits(nodes, 16, 0)  # one node holds it
    with pytest.raises(SegbenchError, match="of the cluster's 0 node"):
        require_a_node_that_fits([], 1, 0)


def test_disabled_sweep_writes_empty_results(tiny_data, small_params_raw, tmp_path):
    _, tiles, _ = tiny_data
    params = sweep_params(small_params_raw, enabled=False)
    summary = run_sweep(params, tiles, tmp_path / "sweeps", state_dir=tmp_path / "state")
    assert summary["trials"] == 0 and read_csv(tmp_path / "sweeps" / "trials.csv") == []
    assert read_json(tmp_path / "sweeps" / "best.json")["model"] is None


def interrupt_once(pid: int, marker: str, *args, on_epoch, **kwargs):
    """:func:`segbench.train.train`, except that after the second epoch of the sweep it sends
    the driver a Ctrl-C (SIGINT), once per ``marker`` file."""

    def interrupting(row):
        on_epoch(row)
        if row["epoch"] == 2 and not os.path.exists(marker):
            time.sleep(3)  # the driver has the epoch: let it save the sweep's state
            Path(marker).touch()
            os.kill(pid, signal.SIGINT)
            time.sleep(60)  # the driver stops the sweep, and this process with it

    return train(*args, on_epoch=interrupting, **kwargs)


@pytest.mark.long  # ~40 s on 2 cores: make test-long (tests/conftest.py)
def test_an_interrupted_sweep_writes_nothing_and_resumes(
    tiny_data, small_params_raw, tmp_path, mlflow_store, capsys
):
    import functools

    import ray.cloudpickle

    _, tiles, _ = tiny_data
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    params = sweep_params(
        small_params_raw,
        model="unet",
        space={"train": {"lr": [0.003]}},
        epochs=3,
        scheduler="fifo",
    )
    fn = functools.partial(interrupt_once, os.getpid(), str(tmp_path / "interrupted"))
    out, state = tmp_path / "sweeps", tmp_path / "state"
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        with pytest.raises(KeyboardInterrupt):
            run_sweep(params, tiles, out, state_dir=state, train_fn=fn)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not out.exists() and not ray.is_initialized()
    assert any(p.is_dir() for p in state.iterdir())  # Tune's state, kept to resume from

    summary = run_sweep(params, tiles, out, state_dir=state, train_fn=fn)
    assert "resuming the interrupted sweep" in capsys.readouterr().out
    rows = read_csv(out / "trials.csv")
    assert summary["trials"] == len(rows) == 1
    (resumed,) = rows
    assert resumed["status"] == "completed" and resumed["epochs_run"] == "3"
    # The interrupted trial went on from its checkpoint, in the same MLflow run.
    assert resumed["attempts"] == "2"
    assert_sizes_are_trains(rows, mlflow_store)
    mlflow.set_tracking_uri(mlflow_store)
    client = mlflow.MlflowClient()
    steps = [m.step for m in client.get_metric_history(resumed["mlflow_run_id"], "val_dice")]
    assert sorted(set(steps)) == [1, 2, 3]
    assert not [p for p in state.iterdir() if p.is_dir()]  # finished: the state is gone


class Planted:
    """A pickle that, when loaded, leaves a file: what a planted tuner.pkl would do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def plant(params, tiles: Path, state: Path, tmp_path: Path) -> Path:
    """Plant, where the sweep of ``params`` keeps its state, pickles that run code when loaded
    (where Ray Tune's restore would look, and where its working files go) and a trial whose
    checkpoint is not the one its trial.json names; the file the pickles would create."""
    import pickle

    from segbench.sweep.run import experiment_name
    from segbench.sweep.store import Store, trial_key

    name = experiment_name(params, read_json(tiles / "summary.json")["data_version"])
    marker = tmp_path / "code-ran"
    for folder in (state / name, state / "tune" / name):
        folder.mkdir(parents=True)
        for file in ("tuner.pkl", "experiment_state-2026.json", "trainable.pkl"):
            (folder / file).write_bytes(pickle.dumps(Planted(str(marker))))
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "last.pt").write_bytes(b"a checkpoint")
    key = trial_key("a1b2c_00000", {"train.lr": 0.003})
    Store(str(state / name)).save(
        key,
        {"train.lr": 0.003},
        attempt=1,
        epochs=[{"epoch": 1, "val_dice": 0.5}],
        resume_dir=ckpt,
        mlflow_run_id=None,
    )
    (state / name / "trials" / key / "last-0001.pt").write_bytes(b"planted")
    return marker


def test_a_planted_or_damaged_sweep_state_is_never_executed_and_is_refused_in_one_line(
    tiny_data, small_params_raw, tmp_path
):
    _, tiles, _ = tiny_data
    params = sweep_params(small_params_raw, model="unet", space={"train": {"lr": [0.003]}})
    state, out = tmp_path / "state", tmp_path / "sweeps"
    marker = plant(params, tiles, state, tmp_path)
    with pytest.raises(SegbenchError) as info:
        run_sweep(params, tiles, out, state_dir=state)
    message = str(info.value)
    assert "\n" not in message and "last-0001.pt: damaged or not written by segbench" in message
    assert "its sha256 is not the one recorded" in message and "SEGBENCH_RESUME=0" in message
    # Refused before Ray starts (the old restore unpickled tuner.pkl, running the planted code).
    assert not out.exists() and not marker.exists() and not ray.is_initialized()
    # (--fresh on such a state: the ASHA test above.)
