"""segbench.timing: where a stage process's time goes, for benchmarks/fresh_clone.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.conftest import REPO, venv_env


def test_phases_count_their_own_time_and_not_the_nested_ones(tmp_path, monkeypatch):
    from segbench import timing

    monkeypatch.setenv(timing.ENV, str(tmp_path / "t.jsonl"))
    monkeypatch.setattr(timing, "_totals", {})
    monkeypatch.setattr(timing, "_registered", True)  # no atexit writer in the test process
    with timing.phase("compute"):
        time.sleep(0.2)
        with timing.phase("mlflow"):
            time.sleep(0.3)
        time.sleep(0.1)
    assert abs(timing._totals["compute"] - 0.3) < 0.08
    assert abs(timing._totals["mlflow"] - 0.3) < 0.08


def test_nothing_is_counted_or_written_without_the_variable(monkeypatch):
    from segbench import timing

    monkeypatch.delenv(timing.ENV, raising=False)
    monkeypatch.setattr(timing, "_totals", {})
    with timing.phase("compute"):
        pass
    assert timing._totals == {}


def test_a_stage_writes_its_client_and_command_records(tmp_path):
    """A real stage script (sweep_plan, seconds), in-process: one client line with its span,
    one command line with its phases, linked by the client's pid."""
    out = tmp_path / "timings.jsonl"
    env = venv_env() | {"SEGBENCH_TIMINGS": str(out), "SEGBENCH_ZYGOTE": "0"}
    before = time.time()
    proc = subprocess.run(
        [sys.executable, str(REPO / "stages" / "sweep_plan.py"), "--out", str(tmp_path / "p")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    client = next(r for r in records if r["kind"] == "client")
    command = next(r for r in records if r["kind"] == "command")
    assert command["client"] == client["pid"]
    assert before - 1 < client["start"] < client["end"] < time.time()
    assert 0 < command["phases"]["compute"] < client["end"] - client["start"]
