"""``mlflow models serve`` for tests: a real model server on 127.0.0.1, and JSON requests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import venv_env
from tests.prefect_server import free_port


@contextlib.contextmanager
def model_server(model_uri: str, tracking_uri: str, log: Path) -> Iterator[str]:
    """Serve ``model_uri`` (``models:/<name>@<alias>``) from ``tracking_uri`` with the local
    environment on a free loopback port; yield its base URL once ``/ping`` answers."""
    port = free_port()
    # MLflow starts `uvicorn` by name: the virtualenv's bin must be on PATH.
    env = {**venv_env(), "MLFLOW_TRACKING_URI": tracking_uri}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while not _pings(url):
                assert proc.poll() is None, f"the server exited:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"no answer:\n{log.read_text()[-3000:]}"
                time.sleep(0.5)
            yield url
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def _pings(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError):
        return False


def post(url: str, body: dict) -> tuple[int, dict]:
    """``POST <url>/invocations`` with ``body`` as JSON: (HTTP status, the JSON answer)."""
    request = urllib.request.Request(
        f"{url}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")
