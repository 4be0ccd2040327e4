"""The local DDP launcher: the first failure stops the others; nothing is left behind."""

import subprocess
import sys
import tempfile

import pytest

from segbench.training.distributed import _stop, _wait, launch_local


def _python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code])


def test_first_failure_is_the_exit_status_and_stops_the_rest():
    sleeper = _python("import time; time.sleep(60)")
    failer = _python("import sys; sys.exit(3)")
    assert _wait([sleeper, failer]) == 3
    _stop([sleeper, failer], grace_s=5)
    assert sleeper.poll() is not None  # terminated, not left running for a minute


def test_all_succeeding_is_success():
    assert _wait([_python("pass"), _python("pass")]) == 0


@pytest.mark.slow  # two processes importing torch and segbench (~5 s)
def test_workers_get_ranks_and_a_private_store_that_is_removed(tmp_path, capfd, monkeypatch):
    """``segbench.cli`` with a bad command line fails the same way in every rank; the launcher
    returns that status and removes its store directory."""
    private = tmp_path / "tmp"  # not the shared temp dir: other tests launch DDP meanwhile
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    code = launch_local(2, ["train", "no-such-model", "--tiles", "t", "--out", str(tmp_path)])
    assert code == 2
    assert "models.no-such-model: not configured" in capfd.readouterr().err
    assert list(private.iterdir()) == []
