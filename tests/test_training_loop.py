"""The training loop: resume after a kill, early stopping, NaN losses, accumulation, DDP."""

import argparse
import ipaddress
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

import mlflow
import numpy as np
import psutil
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

import segbench.training.fit as train_module
from segbench.checkpoint import resume_dir_for
from segbench.config import parse_params
from segbench.errors import SegbenchError
from segbench.io import read_csv
from segbench.metrics import multiclass_metrics, pooled_foreground_dice
from segbench.modelcard import ModelCard
from segbench.training import train
from segbench.training.loop import train_one_epoch, validate
from tests.conftest import REPO, SHRINK, deep_update, only_models, real_params_raw, venv_env


def raw_params(**train_overrides) -> dict:
    """Only a three-level U-Net: the loop's behaviour, at a quarter of the shipped one's cost."""
    raw = only_models(deep_update(real_params_raw(), SHRINK), ["unet"])
    raw["models"]["unet"].update(encoder_depth=3, decoder_channels=[16, 8, 8])
    raw["train"].update(train_overrides)
    return raw


def run_cli(cwd, *args, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "segbench.cli", *args],
        cwd=cwd,
        env=env or venv_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_stage_script(cwd, *args):
    """``python stages/train.py ...``, as DVC runs it (served by this session's zygote)."""
    return subprocess.Popen(
        [sys.executable, str(REPO / "stages" / "train.py"), *args],
        cwd=cwd,
        env=venv_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _communicate_watching_sockets(proc, timeout: float) -> tuple[str, str, set[str]]:
    """``proc.communicate()``, and the IP addresses its descendants listened on meanwhile."""
    result: dict = {}
    reader = threading.Thread(
        target=lambda: result.update(
            zip(("out", "err"), proc.communicate(timeout=timeout), strict=True)
        )
    )
    reader.start()  # pipes drained in the background, so the workers never block on output
    seen: set[str] = set()
    parent = psutil.Process(proc.pid)
    while reader.is_alive():
        try:
            pids = {c.pid for c in parent.children(recursive=True)}
            for conn in psutil.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
                    seen.add(conn.laddr.ip)
        except psutil.Error:
            pass  # a worker exited between the two calls
        time.sleep(0.1)
    reader.join()
    return result["out"], result["err"], seen


@pytest.mark.slow
@pytest.mark.long  # ~20 s on 2 cores: make test-long; a killed run continuing by itself is below
def test_killed_run_resumes_to_the_same_result(tiny_data, tmp_path):
    _, tiles, _ = tiny_data
    epochs = 2  # killed after the first, continued with the second: all the test needs
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params(epochs=epochs)))
    args = ["unet", "--tiles", str(tiles), "--params", "params.yaml"]

    # The uninterrupted reference runs in this process (same thread count as the CLI's).
    train("unet", parse_params(raw_params(epochs=epochs)), tiles, tmp_path / "whole")

    killed = run_stage_script(tmp_path, *args, "--out", "resumed")
    last = resume_dir_for(tmp_path / "resumed") / "last.pt"
    deadline = time.time() + 300
    while time.time() < deadline:  # kill it once an epoch is checkpointed
        if last.is_file():
            state = torch.load(last, weights_only=True)
            if state["progress"]["epoch"] >= 1:
                break
        time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)  # the stage's process: a served one dies with it
    killed.wait()
    time.sleep(0.5)  # a zygote's child ends on its client's death (segbench.zygote's watchdog)
    assert not (tmp_path / "resumed").exists()  # nothing half-written where DVC looks

    # The same command again, params untouched: it continues by itself.
    resumed = run_stage_script(tmp_path, *args, "--out", "resumed")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "train@unet: resuming after epoch " in out

    a = read_csv(tmp_path / "whole" / "history.csv")
    b = read_csv(tmp_path / "resumed" / "history.csv")
    assert len(a) == len(b) == epochs
    for ra, rb in zip(a, b, strict=True):
        assert float(ra["val_dice"]) == pytest.approx(float(rb["val_dice"]), abs=1e-6)
        assert float(ra["train_loss"]) == pytest.approx(float(rb["train_loss"]), rel=1e-5)
    wa = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)
    wb = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-5)
    ma, mb = (ModelCard.read(tmp_path / d).training for d in ("whole", "resumed"))
    assert ma.best_epoch == mb.best_epoch
    assert not resume_dir_for(tmp_path / "resumed").exists()  # finished: checkpoints cleared


class Killed(Exception):
    """Stands for a kill -9 after an epoch was checkpointed (the process dies, files stay)."""


def _killed_after_first_epoch(tiles, out, params):
    def on_epoch(row):
        if row["epoch"] == 1:
            raise Killed

    with pytest.raises(Killed):
        train("unet", params, tiles, out, on_epoch=on_epoch)
    assert (resume_dir_for(out) / "last.pt").is_file()


def test_a_killed_training_continues_by_itself_unless_told_to_start_afresh(
    tiny_data, tmp_path, capsys
):
    _, tiles, _ = tiny_data
    params, out = parse_params(raw_params(epochs=2)), tmp_path / "unet"
    _killed_after_first_epoch(tiles, out, params)
    assert not out.exists()  # nothing half-written where DVC looks
    seen = []
    train("unet", params, tiles, out, on_epoch=lambda row: seen.append(row["epoch"]))
    assert seen == [2]  # epoch 1 came from the checkpoint
    assert f"train@unet: resuming after epoch 1 from the checkpoint in {resume_dir_for(out)}" in (
        capsys.readouterr().out
    )
    assert len(read_csv(out / "history.csv")) == 2 and not resume_dir_for(out).exists()

    _killed_after_first_epoch(tiles, out, params)
    seen.clear()
    train("unet", params, tiles, out, on_epoch=lambda row: seen.append(row["epoch"]), resume=False)
    assert seen == [1, 2]
    assert "starting from the first epoch as asked" in capsys.readouterr().out


def test_the_cli_opt_out_reaches_training(tiny_data, tmp_path, monkeypatch):
    from segbench.commands import train as command
    from segbench.training import repeats  # imported before fit.train is replaced: its own
    # `train` must be the real one again after the test (monkeypatch restores what it saw)

    seen = {}

    def fake(*a, **k):
        return seen.update(k) or {}

    monkeypatch.setattr(train_module, "train", fake)
    monkeypatch.setattr("segbench.training.train", fake)
    monkeypatch.setattr(repeats, "train", fake)  # repeats: 1 calls it
    _, tiles, _ = tiny_data
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params()))
    argv = ["unet", "--tiles", str(tiles), "--out", str(tmp_path / "u")]
    argv += ["--params", str(tmp_path / "params.yaml")]
    for env, extra, fresh in [(None, [], False), ("0", [], True), (None, ["--fresh"], True)]:
        if env is None:
            monkeypatch.delenv("SEGBENCH_RESUME", raising=False)
        else:
            monkeypatch.setenv("SEGBENCH_RESUME", env)
        command.main(argv + extra)
        assert seen["resume"] is not fresh


def _other_settings(last):
    state = {k: {} for k in ("model", "optimizer", "schedule")}
    state |= {"fingerprint": {"train": {"lr": 9.0}}, "progress": {"epoch": 1}, "torch_rng": None}
    torch.save(state, last)


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda last: last.write_bytes(last.read_bytes()[:500]), "unreadable as a weights-only"),
        (lambda last: torch.save(argparse.Namespace(), last), "unreadable as a weights-only"),
        (lambda last: torch.save({"model": {}}, last), "not a segbench resume checkpoint"),
        (lambda last: torch.save([1, 2], last), "holds a list, not a state dict"),
        (_other_settings, "made with other settings (the training code, train.lr)"),
    ],
    ids=["truncated", "an-object", "other-keys", "a-list", "other-settings"],
)
def test_a_checkpoint_that_cannot_be_resumed_is_a_reason_to_start_afresh(tmp_path, damage, says):
    from segbench.checkpoint import resumable

    last = tmp_path / "last.pt"
    torch.save({"fingerprint": {}, "progress": {"epoch": 1}} | {"x" * 600: 0}, last)
    damage(last)
    state, why = resumable(tmp_path, {"code": "c", "train": {"lr": 0.1}})
    assert state is None and says in why and "\n" not in why
    assert why.endswith(": starting from the first epoch")


def test_training_starts_afresh_over_a_planted_checkpoint_saying_why(
    tiny_data, tmp_path, capsys, mlflow_store
):
    _, tiles, _ = tiny_data
    last = resume_dir_for(tmp_path / "unet") / "last.pt"
    last.parent.mkdir(parents=True)
    torch.save(argparse.Namespace(), last)  # a pickle of an object: code, were it unpickled
    # The run of the training killed before (kill -9 ends no run: it stays RUNNING).
    client = mlflow.MlflowClient(mlflow_store)
    killed = client.create_run(client.create_experiment("earlier")).info.run_id
    (last.parent / "mlflow.json").write_text(json.dumps({"run_id": killed}))
    metrics = train("unet", parse_params(raw_params(epochs=1)), tiles, tmp_path / "unet")
    assert metrics["epochs_run"] == 1
    assert client.get_run(killed).info.status == "KILLED"
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("train@unet: ")]
    assert f"{last}: unreadable as a weights-only torch file" in line
    assert line.endswith(": starting from the first epoch")


def test_a_checkpoint_written_by_other_code_is_not_continued(tiny_data, tmp_path, monkeypatch):
    _, tiles, _ = tiny_data
    params, out = parse_params(raw_params(epochs=2)), tmp_path / "unet"
    _killed_after_first_epoch(tiles, out, params)
    monkeypatch.setattr(train_module, "module_digest", lambda name: "edited")
    seen = []
    train("unet", params, tiles, out, on_epoch=lambda row: seen.append(row["epoch"]))
    assert seen == [1, 2]


def test_the_removed_resume_key_is_one_line_saying_what_to_do():
    with pytest.raises(SegbenchError, match=r"train\.resume: no longer a setting \(remove it\)"):
        parse_params(raw_params(resume=True))


def test_early_stopping_and_best_and_last_checkpoints(tiny_data, tmp_path, monkeypatch):
    _, tiles, _ = tiny_data
    scripted = iter([0.5, 0.6, 0.55, 0.58, 0.59, 0.7])
    real_validate = train_module.validate

    def validate(*args):  # the real validation, with a scripted criterion to steer the stopper
        return real_validate(*args)._replace(score=next(scripted))

    monkeypatch.setattr(train_module, "validate", validate)
    params = parse_params(raw_params(epochs=6, early_stopping=2, scheduler="none"))
    metrics = train("unet", params, tiles, tmp_path / "unet")
    assert metrics["epochs_run"] == 4 and metrics["best_epoch"] == 2
    assert metrics["stop_reason"].startswith("early stopping")
    assert metrics["best_val_score"] == 0.6  # the criterion chose, not the pooled Dice
    history = read_csv(tmp_path / "unet" / "history.csv")
    assert [float(r["val_score"]) for r in history] == [0.5, 0.6, 0.55, 0.58]
    assert metrics["best_val_dice"] == pytest.approx(float(history[1]["val_dice"]))
    best = torch.load(tmp_path / "unet" / "weights.pt", weights_only=True)
    last = torch.load(tmp_path / "unet" / "last.pt", weights_only=True)
    assert any(not torch.equal(best[k], last[k]) for k in best)


def _tiles(logits: list, targets: list) -> DataLoader:
    """A validation loader whose "images" are the logits an identity model returns."""
    return DataLoader(TensorDataset(torch.stack(logits), torch.stack(targets)), batch_size=2)


def test_validation_scores_each_tile_where_pooled_dice_hides_an_empty_one():
    """Tile 1 is found exactly; tile 2 has nothing to find but one false-positive pixel. Pooled
    over the pixels that pixel is nearly free (64/65); per tile it costs tile 2 everything."""
    found, empty = torch.zeros(1, 8, 8), torch.zeros(1, 8, 8)
    found[:, :4] = 1
    logits = [torch.where(found > 0, 5.0, -5.0), torch.full((1, 8, 8), -5.0)]
    logits[1][0, 7, 7] = 5.0
    val = validate(torch.nn.Identity(), _tiles(logits, [found, empty]), bce, torch.device("cpu"))
    assert val.dice == pytest.approx(64 / 65) and val.score == pytest.approx(0.5)
    assert val.loss == pytest.approx(float(bce(torch.stack(logits), torch.stack([found, empty]))))


def test_validation_with_several_classes_scores_each_tile_by_its_miou_ignoring_255():
    rng = np.random.default_rng(0)
    right = torch.from_numpy(rng.integers(0, 3, size=(8, 8)))
    background = torch.zeros(8, 8, dtype=torch.int64)
    painted = background.clone()
    painted[:2, :2] = 2  # four pixels of class 2 where there is only background
    unannotated = torch.full((8, 8), 255, dtype=torch.int64)
    preds, refs = [right, painted, background], [right, background, unannotated]
    logits = [torch.nn.functional.one_hot(p, 3).permute(2, 0, 1).float() * 10 for p in preds]
    val = validate(torch.nn.Identity(), _tiles(logits, refs), _ignoring_ce, torch.device("cpu"))
    per_tile = [
        multiclass_metrics(p.numpy(), r.numpy(), 3, ignore_index=255)
        for p, r in zip(preds, refs, strict=True)
    ]
    assert math.isnan(per_tile[2]["miou"])  # nothing annotated: left out of the mean
    assert val.score == pytest.approx((1.0 + per_tile[1]["miou"]) / 2)
    confusion = sum(m["confusion"] for m in per_tile)
    assert val.dice == pytest.approx(pooled_foreground_dice(confusion))
    assert val.dice > 0.9 > val.score  # four stray pixels: nearly free pooled, not per tile


def _ignoring_ce(logits, target):
    return torch.nn.functional.cross_entropy(logits, target, ignore_index=255)


def bce(logits, target):
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, target)


def test_nan_loss_stops_with_the_epoch_and_keeps_the_last_good_checkpoint(
    tiny_data, tmp_path, monkeypatch
):
    _, tiles, _ = tiny_data
    real_build = train_module.loss_for

    def loss_for(card):
        loss = real_build(card)
        calls = {"n": 0}

        def poisoned(logits, target):
            calls["n"] += 1
            value = loss(logits, target)
            return value * float("nan") if calls["n"] > 16 else value

        return poisoned

    monkeypatch.setattr(train_module, "loss_for", loss_for)
    with pytest.raises(SegbenchError, match=r"NaN or infinite in epoch \d .*continues from it"):
        train("unet", parse_params(raw_params(epochs=3)), tiles, tmp_path / "unet")
    assert not (tmp_path / "unet").exists()
    kept = torch.load(resume_dir_for(tmp_path / "unet") / "last.pt", weights_only=True)
    assert kept["progress"]["epoch"] >= 1


def test_gradient_accumulation_matches_one_big_batch():
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 8, 8), (torch.rand(8, 1, 8, 8) > 0.5).float()
    from segbench.losses import build_loss

    def run(batch, accumulate):
        torch.manual_seed(1)
        model = torch.nn.Conv2d(1, 1, 3, padding=1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        data = list(zip(x.split(batch), y.split(batch), strict=True))
        train_one_epoch(
            model, data, build_loss("bce"), opt, torch.device("cpu"), 1, accumulate=accumulate
        )
        return model.weight.detach().clone()

    torch.testing.assert_close(run(8, 1), run(4, 2))


@pytest.mark.slow
def test_two_process_gloo_ddp_trains_and_only_rank_0_writes(tiny_data, tmp_path, mlflow_store):
    _, tiles, _ = tiny_data
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params(epochs=1, devices=2)))
    env = venv_env()
    env["OMP_NUM_THREADS"] = "1"  # two processes on two cores
    proc = run_cli(
        tmp_path,
        "train",
        "unet",
        "--tiles",
        str(tiles),
        "--params",
        "params.yaml",
        "--out",
        "models/unet",
        env=env,
    )
    out, err, listening = _communicate_watching_sockets(proc, timeout=400)
    assert proc.returncode == 0, err
    assert "launching 2 processes" in out and out.count("train@unet: {") == 1  # rank 0 prints
    # The workers talk over sockets (Gloo listens), but only on the loopback interface.
    assert listening, "no listening socket seen: the check below would prove nothing"
    assert all(ipaddress.ip_address(ip).is_loopback for ip in listening), listening
    training = ModelCard.read(tmp_path / "models" / "unet").training
    assert training.device_count == 2 and training.epochs_run == 1
    assert 0 <= training.best_val_dice <= 1
    mlflow.set_tracking_uri(mlflow_store)
    runs = mlflow.search_runs(experiment_names=["segbench"], output_format="list")
    assert len(runs) == 1  # one run: rank 1 logged nothing
    assert sorted(os.listdir(tmp_path / "models")) == ["unet"]
