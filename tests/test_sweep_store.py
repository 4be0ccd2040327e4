"""The sweep's saved progress (segbench.sweep.store): what an interrupted sweep resumes from,
written so that a kill at any moment leaves a consistent state, and read without running code."""

from __future__ import annotations

import json

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
