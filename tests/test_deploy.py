"""flows/deploy.py against a real Prefect server: the pipeline deployment on its cron schedule,
the sweep deployment on demand, runs triggered through the API, and the clean errors when there
is no server to talk to or the schedule is invalid."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.prefect_server import free_port, prefect_env, prefect_server, stop

PIPELINE = "segbench-pipeline/scheduled"
SWEEP = "segbench-sweep/on-demand"
CRON = "15 4 * * 1-5"


def run_deploy(
    args: list[str], env: dict[str, str], cwd: Path = REPO
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "flows/deploy.py", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow  # two Prefect client processes (~4 s)
def test_no_server_is_one_line_and_exit_2(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    start = time.monotonic()
    proc = run_deploy(["--cron", CRON], prefect_env(tmp_path, url))
    assert time.monotonic() - start < 30
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert url in proc.stderr and "Traceback" not in proc.stdout + proc.stderr
    assert "prefect server start --host 127.0.0.1" in proc.stderr
    assert "prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api" in proc.stderr
    # No URL at all (a fresh PREFECT_HOME has no profile setting one): the same advice.
    unset = run_deploy([], prefect_env(tmp_path))
    assert unset.returncode == 2 and "PREFECT_API_URL is not set" in unset.stderr
    assert "prefect server start --host 127.0.0.1" in unset.stderr


@pytest.mark.slow  # a Prefect client process each
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cron", "0 61 * * *"], "--cron '0 61 * * *' is not valid"),
        (["--cron", "0 3 * * *", "--timezone", "Mars/Olympus"], "--timezone 'Mars/Olympus'"),
        (["--targets", "prepar"], "unknown stage 'prepar'"),
    ],
)
def test_bad_schedule_or_target_is_one_line_and_exit_2(tmp_path, args, message):
    # Checked before the server: an unreachable URL must not be what fails.
    proc = run_deploy(args, prefect_env(tmp_path, f"http://127.0.0.1:{free_port()}/api"))
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_deployments_on_a_real_server(repo_copy, tmp_path):
    """deploy.py registers the scheduled pipeline and the on-demand sweep; a run triggered
    through the API runs fetch and prepare, the next one finds them up to date and starts no
    stage; with its server gone, deploy.py still stops on SIGTERM. (The long variant below also
    changes a param and sends a bad target: two more runs, ~25 s.)"""
    deployments_on_a_real_server(repo_copy, tmp_path, more_runs=False)


@pytest.mark.slow
@pytest.mark.long
def test_deployments_rerun_what_a_param_changes_and_refuse_a_bad_target(repo_copy, tmp_path):
    """As above, and a changed param re-runs its stage and what depends on it; a run with an
    unknown target fails with one line."""
    deployments_on_a_real_server(repo_copy, tmp_path, more_runs=True)


def deployments_on_a_real_server(repo_copy: Path, tmp_path: Path, *, more_runs: bool) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home, log = tmp_path / "prefect_home", tmp_path / "deploy.log"
    args = ["--cron", CRON, "--timezone", "Europe/Berlin"]
    server = contextlib.ExitStack()
    url = server.enter_context(prefect_server(home))
    with (
        server,
        serving(repo_copy, args, prefect_env(home, url), log) as deploy,
        # Only this block talks to this server; the session's test harness stays as it is.
        temporary_settings(updates={PREFECT_API_URL: url}),
        get_client(sync_client=True) as client,
    ):
        pipeline, sweep = wait_for_deployments(client, deploy, log)
        [schedule] = pipeline.schedules
        assert schedule.active and schedule.schedule.cron == CRON
        assert schedule.schedule.timezone == "Europe/Berlin"
        assert pipeline.parameters["root"] == str(repo_copy)
        assert sweep.schedules == []

        ran, logs = run_prepare(client, log)
        assert ran == ["code", "check", "fetch", "prepare"], logs
        assert any((repo_copy / "data" / "tiles").iterdir())
        # Nothing changed: DVC's status says so and no stage process starts.
        ran, logs = run_prepare(client, log)
        assert ran == [], logs
        assert "DVC status: 0 of 4 stages changed" in logs
        assert "fetch: up to date" in logs and "prepare: up to date" in logs
        if more_runs:
            more_deployment_runs(repo_copy, client, log)

        # The server goes away; SIGTERM still stops deploy.py (its shutdown would retry the
        # server for over a minute; deploy.STOP_GRACE_S, 3 s here, is its deadline).
        server.close()
        deploy.send_signal(signal.SIGTERM)
        assert deploy.wait(timeout=30) in (0, 128 + signal.SIGTERM), log.read_text()[-3000:]


def more_deployment_runs(repo_copy: Path, client, log: Path) -> None:
    """A changed param re-runs its stage and what depends on it; a typo'd target fails."""
    from prefect.deployments import run_deployment

    # A fetch param changed: check (every key) and fetch re-run, and prepare because fetch ran.
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["data"]["synthetic"]["n_images"] += 2
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran, logs = run_prepare(client, log)
    assert ran == ["check", "fetch", "prepare"], logs
    assert "DVC status: 2 of 4 stages changed" in logs

    # A run's parameters are not checked by deploy.py's command line: a typo fails the run.
    run = run_deployment(PIPELINE, parameters={"targets": ["prepar"]}, timeout=240)
    assert run.state.is_failed() and "unknown stage 'prepar'" in run.state.message
    logs = flow_run_logs(client, run.id, until="Finished in state")
    assert "error: unknown stage 'prepar'" in logs and "Traceback" not in logs, logs
    assert task_run_names(client, run.id) == []  # no stage started


@contextlib.contextmanager
def serving(repo: Path, args: list[str], env: dict[str, str], log: Path):
    """``python flows/deploy.py ARGS`` running in ``repo`` (output to ``log``) until exit."""
    env = {**env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}  # take triggered runs at once, not in 10 s
    env["SEGBENCH_DEPLOY_STOP_GRACE_S"] = "3"  # the shutdown deadline, shortened from 8 s
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "flows/deploy.py", *args],
            cwd=repo,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            stop(proc)


def wait_for_deployments(client, deploy: subprocess.Popen, log: Path, timeout_s: float = 120):
    """The pipeline and sweep deployments, once deploy.py has registered both."""
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return client.read_deployment_by_name(PIPELINE), client.read_deployment_by_name(SWEEP)
        except ObjectNotFound:
            assert deploy.poll() is None, f"deploy.py exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"not registered:\n{log.read_text()[-3000:]}"
            time.sleep(1)


def run_prepare(client, log: Path) -> tuple[list[str], str]:
    """Run the pipeline deployment now with ``targets=["prepare"]`` and wait for it to finish
    Completed; return ``(stages started, the run's log)``."""
    from prefect.deployments import run_deployment

    run = run_deployment(
        PIPELINE, parameters={"targets": ["prepare"]}, timeout=240, poll_interval=1
    )
    logs = flow_run_logs(client, run.id, until="Finished in state")
    assert run.state.is_completed(), f"{run.state}\n{logs}\n{log.read_text()[-3000:]}"
    return task_run_names(client, run.id), logs


def task_run_names(client, flow_run_id) -> list[str]:
    """Names of the completed task runs of one flow run (one per stage started), by start."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    )
    done = [r for r in runs if r.state and r.state.is_completed()]
    return [r.name for r in sorted(done, key=lambda r: r.start_time)]


def flow_run_logs(client, flow_run_id, *, until: str, wait_s: float = 30) -> str:
    """The flow run's log messages, one per line; waits up to ``wait_s`` for ``until`` to
    appear, because the run's process ships its last logs after its final state."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    deadline = time.monotonic() + wait_s
    while True:
        text = "\n".join(entry.message for entry in client.read_logs(log_filter=log_filter))
        if until in text or time.monotonic() > deadline:
            return text
        time.sleep(0.5)
