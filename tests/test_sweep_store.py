"""The sweep's saved progress (segbench.sweep.store): what an interrupted sweep resumes from,
written so that a kill at any moment leaves a consistent state, and read without running code."""

from __future__ import annotations

import json
import math

import pytest

from segbench.errors import SegbenchError
from segbench.sweep.store import Store, trial_key

CONFIG = {"train.lr": 0.003, "model.rank": 4}


@pytest.fixture
def saved(tmp_path):
    """A store holding one trial after its second epoch; (store, key, its folder)."""
    store, key = Store(str(tmp_path / "sweep-unet-0123")), trial_key("a1b2c_00003", CONFIG)
    ckpt = tmp_path / ".model.resume"
    ckpt.mkdir()
    epochs = []
    for epoch in (1, 2):
        (ckpt / "last.pt").write_bytes(f"last {epoch}".encode())
        (ckpt / "best.pt").write_bytes(f"best {epoch}".encode())
        epochs.append({"epoch": epoch, "val_dice": 0.5 + epoch / 10, "val_loss": float("nan")})
        store.save(key, CONFIG, attempt=1, epochs=epochs, resume_dir=ckpt, mlflow_run_id="r1")
    return store, key, tmp_path / "sweep-unet-0123" / "trials" / key


def test_a_trial_is_saved_and_restored(saved, tmp_path):
    store, key, folder = saved
    assert key.startswith("00003-")  # its place in the sweep, then a digest of its values
    assert sorted(p.name for p in folder.iterdir()) == [
        "best-0002.pt",
        "last-0002.pt",
        "trial.json",
    ]
    assert store.verify() == 1
    state = store.read_trial(key)
    assert [e["epoch"] for e in state.epochs] == [1, 2] and state.final is None
    assert state.epochs[0]["val_loss"] != state.epochs[0]["val_loss"]  # NaN kept as NaN
    into = tmp_path / "restored"
    store.restore(state, key, into)
    assert (into / "last.pt").read_bytes() == b"last 2"
    assert json.loads((into / "mlflow.json").read_text()) == {"run_id": "r1"}
    assert store.read_trial(trial_key("a1b2c_00004", CONFIG)) is None  # never saved


def test_a_kill_between_files_leaves_the_previous_state(saved, tmp_path):
    store, key, folder = saved
    # Killed after the next epoch's checkpoint was written, before trial.json named it:
    (folder / "last-0003.pt").write_bytes(b"last 3")
    (folder / "trial.json.tmp").write_bytes(b'{"format": "segbench-swe')
    state = store.read_trial(key)
    assert state.epochs[-1]["epoch"] == 2 and state.files["last.pt"].name == "last-0002.pt"
    ckpt = tmp_path / "again"
    store.restore(state, key, ckpt)
    (ckpt / "last.pt").write_bytes(b"last 3, trained again")  # epoch 3 again; best unchanged
    store.save(
        key,
        CONFIG,
        attempt=2,
        epochs=[*state.epochs, {"epoch": 3, "val_dice": 0.8}],
        resume_dir=ckpt,
        mlflow_run_id="r1",
    )
    assert sorted(p.name for p in folder.iterdir()) == [
        "best-0002.pt",
        "last-0003.pt",
        "trial.json",
    ]
    assert (folder / "last-0003.pt").read_bytes() == b"last 3, trained again"
    assert store.verify() == 1


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda f: (f / "trial.json").write_text("{not json"), "trial.json: damaged or not"),
        (lambda f: (f / "trial.json").write_text("[1, 2]"), "trial.json: damaged or not"),
        (lambda f: _edit(f, format="tune/2"), "format 'tune/2'"),
        (lambda f: _edit(f, config={"train.lr": 1.0}), "with other values"),
        (lambda f: _edit_file(f, "../../../home/x.pt"), "unexpected file '../../../home/x.pt'"),
        (
            lambda f: (f / "best-0002.pt").unlink(),
            "best-0002.pt: damaged or not written by segbench (missing)",
        ),
        (lambda f: (f / "last-0002.pt").write_bytes(b"planted"), "its sha256 is not the one"),
    ],
    ids=["not-json", "a-list", "other-format", "other-values", "a-path", "missing", "changed"],
)
def test_a_damaged_or_foreign_state_is_refused_in_one_line(saved, damage, says):
    store, _key, folder = saved
    damage(folder)
    with pytest.raises(SegbenchError) as info:
        store.verify()
    message = str(info.value)
    assert says in message and "\n" not in message
    assert message.endswith(
        "or run with SEGBENCH_RESUME=0 (segbench sweep --fresh) to start the sweep afresh"
    )


def test_the_sweeps_mlflow_run_is_kept_and_checked(tmp_path):
    store = Store(str(tmp_path / "s"))
    assert store.parent_run() is None
    store.set_parent_run("abc")
    assert store.parent_run() == "abc"
    (tmp_path / "s" / "parent.json").write_text('{"run_id": 3}')
    with pytest.raises(SegbenchError, match=r"parent\.json: damaged or not written by segbench"):
        store.parent_run()
    store.delete()
    assert not store.exists()


def _edit(folder, **changes):
    data = json.loads((folder / "trial.json").read_text())
    (folder / "trial.json").write_text(json.dumps({**data, **changes}))


def _edit_file(folder, name):
    data = json.loads((folder / "trial.json").read_text())
    data["files"]["last.pt"]["name"] = name
    (folder / "trial.json").write_text(json.dumps(data))


def test_an_unchanged_checkpoint_file_is_not_written_again(saved, tmp_path):
    store, key, folder = saved
    ckpt = tmp_path / ".model.resume"
    (ckpt / "last.pt").write_bytes(b"last 3")  # best.pt as after epoch 2: no better epoch
    epochs = [*store.read_trial(key).epochs, {"epoch": 3, "val_dice": 0.6}]
    store.save(key, CONFIG, attempt=1, epochs=epochs, resume_dir=ckpt, mlflow_run_id="r1")
    assert sorted(p.name for p in folder.iterdir()) == [
        "best-0002.pt",
        "last-0003.pt",
        "trial.json",
    ]
    assert store.verify() == 1


# -- what a trial reports and the sweep chooses on (segbench.sweep.trainable, run._best), with
# ray.tune's two calls faked: no Ray, no training ------------------------------------------------


class FakeTune:
    """What :func:`run_trial` uses of ``ray.tune``: the trial's id, and the reports it made."""

    def __init__(self, monkeypatch):
        from ray import tune

        self.trial_id, self.reports = "", []
        monkeypatch.setattr(tune, "get_context", lambda: self)
        monkeypatch.setattr(tune, "report", lambda metrics: self.reports.append(dict(metrics)))

    def get_trial_id(self) -> str:
        return self.trial_id


def fake_train(history: list[dict]):
    """A ``train_fn`` that 'trains' the epochs of ``history`` (rows as training writes them)
    after those already done, writes what :func:`segbench.training.train` would (history.csv,
    the card) and returns none of its best_* figures: what the trial reports is its own."""
    from segbench.io import write_csv
    from segbench.modelcard import HISTORY_FIELDS
    from segbench.training.fit import model_card

    def train_fn(name, params, tiles_dir, out_dir, *, on_epoch, **_):
        out_dir.mkdir(parents=True)
        for row in history:
            on_epoch(row)
        write_csv(out_dir / "history.csv", history, HISTORY_FIELDS)
        model_card(name, params, "v1").write(out_dir)
        return {"train_seconds": 1.0, "stop_reason": "epochs"}

    return train_fn


def epoch(n: int, score: float, dice: float) -> dict:
    return {"epoch": n, "train_loss": 0.5, "val_loss": 0.4, "val_dice": dice, "val_score": score}


def trial(fake, params, tmp_path, trial_id: str, history, config=None, epochs=2) -> dict:
    """Run trial ``trial_id`` of ``params``' sweep with ``history``; its final report."""
    import torch

    from segbench.sweep.trainable import run_trial

    fake.trial_id, fake.reports = trial_id, []
    run_trial(
        config or {"train.lr": 0.003},
        params=params,
        epochs=epochs,
        tiles_dir=str(tmp_path),
        cwd=str(tmp_path),
        env={},
        tags={},
        threads=torch.get_num_threads(),  # the test process's own
        train_fn=fake_train(history),
        store=str(tmp_path / "sweep-unet-0123"),
        work_dir=str(tmp_path / "work"),
    )
    return fake.reports[-1]


def test_the_sweep_chooses_on_val_score_not_the_pooled_dice(small_params, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from segbench.sweep import run

    monkeypatch.chdir(tmp_path)
    fake = FakeTune(monkeypatch)
    # a: the better pooled Dice at every epoch; b: the better per-image score, at epoch 2
    # (where its pooled Dice is lower than at epoch 1).
    histories = {
        "t_00000": [epoch(1, 0.70, 0.90), epoch(2, 0.72, 0.92)],
        "t_00001": [epoch(1, 0.60, 0.85), epoch(2, 0.80, 0.70)],
    }
    configs = {"t_00000": {"train.lr": 0.003}, "t_00001": {"train.lr": 0.001}}
    results = []
    for trial_id, history in histories.items():
        final = trial(fake, small_params, tmp_path, trial_id, history, configs[trial_id])
        # Each epoch carries the criterion ASHA compares (Tune refuses a report without it).
        assert [r["val_score"] for r in fake.reports] == [h["val_score"] for h in history]
        results.append(
            SimpleNamespace(metrics=final, config=configs[trial_id], error=None, path=trial_id)
        )
    b = results[1].metrics
    assert (b["best_val_score"], b["best_epoch"], b["best_val_dice"]) == (0.80, 2, 0.70)

    columns = {"train.lr": "lr"}
    rows = [run._row(r, columns, epochs=2) for r in results]
    assert all(r["status"] == "completed" for r in rows)
    best = run._best(rows, columns, small_params.sweep, 2, "sweep-unet-0123")
    assert best["trial"] == "t_00001" and best["config"] == {"train.lr": 0.001}
    assert (best["metric"], best["value"], best["best_val_dice"]) == ("best_val_score", 0.8, 0.7)
    assert run._summary_metrics(rows, best)["best_val_score"] == 0.8


def test_a_trial_saved_before_val_score_resumes_and_its_old_epochs_never_count(
    small_params, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    fake = FakeTune(monkeypatch)
    config = {"train.lr": 0.003}
    # Saved after epoch 1 by a segbench that chose on the pooled Dice: no val_score anywhere.
    old = {"epoch": 1, "val_dice": 0.95, "best_val_dice": 0.95, "best_epoch": 1, "attempt": 1}
    ckpt = tmp_path / "old.resume"
    ckpt.mkdir()
    (ckpt / "last.pt").write_bytes(b"last 1")
    store = Store(str(tmp_path / "sweep-unet-0123"))
    key = trial_key("t_00000", config)
    store.save(key, config, attempt=1, epochs=[old], resume_dir=ckpt, mlflow_run_id="r1")

    history = [epoch(2, 0.60, 0.50), epoch(3, 0.55, 0.52)]
    final = trial(fake, small_params, tmp_path, "t_00000", history, config, epochs=3)
    replayed, second = fake.reports[0], fake.reports[1]
    assert replayed["epoch"] == 1 and math.isnan(replayed["val_score"])  # NaN: ASHA skips it
    assert math.isnan(replayed["best_val_score"]) and replayed["val_dice"] == 0.95
    assert second["attempt"] == final["attempt"] == 2 and second["mlflow_run_id"] == "r1"
    # Its best is epoch 2 by val_score, not epoch 1 and its higher pooled Dice.
    assert (final["best_val_score"], final["best_epoch"], final["best_val_dice"]) == (
        0.60,
        2,
        0.50,
    )
    assert store.read_trial(key).final["best_val_score"] == 0.60
