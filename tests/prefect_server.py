"""A real ``prefect server start`` for tests that need what the ephemeral test server lacks
(schedules, served deployments, another process talking to it), and process-group clean-up."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prefect_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    """This process's environment for a Prefect subprocess: its own ``PREFECT_HOME`` (so no
    profile of the user's applies), analytics off, this interpreter's ``bin`` first on PATH,
    and ``PREFECT_API_URL`` set to ``api_url`` or removed."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PREFECT_HOME"] = str(home)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def stop(proc: subprocess.Popen, *, grace_s: float = 15) -> None:
    """SIGTERM ``proc``'s process group (start it with ``start_new_session=True``), then
    SIGKILL whatever is left after ``grace_s`` seconds."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    # Children that outlived the leader (the group id is the leader's pid).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def prefect_server(home: Path, *, startup_s: float = 120) -> Iterator[str]:
    """Start ``prefect server start --host 127.0.0.1`` on a free port with ``home`` as its
    PREFECT_HOME and no UI; yield its API URL (``http://127.0.0.1:<port>/api``) once
    ``/api/health`` answers; stop the server's whole process group on exit."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = prefect_env(home)
    env["PREFECT_SERVER_UI_ENABLED"] = "false"  # not needed here, and its build costs start-up time
    log = (home / "server.log").open("w")
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + startup_s
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"prefect server did not answer at {url}/health within {startup_s:.0f} s "
                    f"(exit {proc.poll()}):\n{(home / 'server.log').read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        stop(proc)
        log.close()
