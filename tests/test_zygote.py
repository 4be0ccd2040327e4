"""The zygote (fork server) for stage commands, with real processes: each client is a fresh
``python -c`` that calls ``run_stage(target, argv)``, each test has its own zygote directory and
a tiny preload list (``json``), and every zygote is stopped when its test ends.

A run served by the zygote is told apart from an in-process one by the target's pid: in-process
it is the client's own pid; served, it is a child of the zygote (``ppid`` is the zygote's pid).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
# argv[1] is "module:function"; the rest is the command's argv.
CLIENT = (
    "import importlib, sys; from segbench.zygote import run_stage; "
    "module, name = sys.argv[1].split(':'); "
    "run_stage(getattr(importlib.import_module(module), name), sys.argv[2:])"
)
TARGETS = "tests.zygote_targets"
WAIT_SECONDS = 60  # a deadline for polling, never a timing assertion


class Zygotes:
    """One test's zygote directory and client environment."""

    def __init__(self, root: Path):
        self.root = root
        self.dir = root / "z"
        self.env = {
            **os.environ,
            "SEGBENCH_ZYGOTE_DIR": str(self.dir),
            "SEGBENCH_ZYGOTE_PRELOAD": "json",
            "SEGBENCH_ZYGOTE_IDLE": "120",
            "SEGBENCH_ZYGOTE_DEBUG": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
        }
        self.env.pop("SEGBENCH_ZYGOTE", None)
        self.env.pop("PYTHONUNBUFFERED", None)  # block-buffered stdio: what is flushed at exit

    def command(self, target: str, *argv: str) -> list[str]:
        module, _, name = target.rpartition(":") if ":" in target else (TARGETS, ":", target)
        return [PYTHON, "-c", CLIENT, f"{module}:{name}", *argv]

    def run(self, target: str, *argv: str, env: dict | None = None, **kwargs):
        """Run a client to completion: a CompletedProcess with text stdout and stderr."""
        if "stdout" not in kwargs and "stderr" not in kwargs:
            kwargs["capture_output"] = True
        return subprocess.run(
            self.command(target, *argv),
            env=env or self.env,
            text=True,
            timeout=WAIT_SECONDS,
            cwd=kwargs.pop("cwd", self.root),
            **kwargs,
        )

    def popen(self, target: str, *argv: str, env: dict | None = None, **kwargs):
        """Start a client: a text-mode Popen."""
        return subprocess.Popen(
            self.command(target, *argv), env=env or self.env, cwd=self.root, text=True, **kwargs
        )

    def ask(self, command: str) -> list[bytes]:
        """Send ``command`` ("status" or "stop") to every zygote listening in the directory,
        through the protocol; their reply lines."""
        replies = []
        for path in sorted(self.dir.glob("zygote-*.sock")):
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(WAIT_SECONDS)
                sock.connect(str(path))
                sock.sendall(f"{command}\n".encode())
                replies.append(sock.makefile("rb").readline())
        return replies

    def status(self) -> list[dict]:
        """The status of every zygote answering in the directory."""
        return [json.loads(reply) for reply in self.ask("status") if reply]

    def wait_serving(self, count: int = 1) -> list[dict]:
        """Wait until ``count`` zygotes answer; their statuses."""
        wait_until(lambda: len(self.status()) >= count, "zygotes serving")
        return self.status()

    def processes(self) -> list[int]:
        """Pids of this test's zygotes and their children, found by their command line and
        environment (whether serving, starting or stopping)."""
        pids = []
        for proc in Path("/proc").iterdir():
            try:
                cmdline = (proc / "cmdline").read_bytes()
                environ = (proc / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"from segbench.zygote import main" in cmdline and (
                f"SEGBENCH_ZYGOTE_DIR={self.dir}".encode() in environ
            ):
                pids.append(int(proc.name))
        return [pid for pid in pids if alive(pid)]

    def stop(self) -> subprocess.CompletedProcess:
        return subprocess.run(
            [PYTHON, "-m", "segbench.zygote", "stop"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=WAIT_SECONDS,
        )


def wait_until(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def report(result) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.fixture
def zy():
    # A short directory: an AF_UNIX socket path must fit in ~100 bytes, and tmp_path may not.
    root = Path(tempfile.mkdtemp(prefix="zg-", dir="/tmp"))
    z = Zygotes(root)
    yield z
    z.ask("stop")  # then SIGTERM for any zygote still starting (as `stop` does)
    try:
        wait_until(
            lambda: not [os.kill(pid, signal.SIGTERM) for pid in z.processes()],
            "this test's zygotes to exit after stop",
        )
    finally:
        for pid in z.processes():
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def served(zy) -> Zygotes:
    """A test directory whose zygote is up: the first run started it (in-process)."""
    first = zy.run("report")
    assert "running in-process: no zygote was listening; started one" in first.stderr
    zy.wait_serving()
    return zy


def test_first_run_starts_a_zygote_and_later_runs_are_served(zy):
    first = zy.run("report", "a", "b")
    info = report(first)
    assert "running in-process: no zygote was listening" in first.stderr
    assert info["argv"] == ["a", "b"]
    (zygote,) = zy.wait_serving()
    assert zygote["preloaded"] == ["json"]

    proc = zy.popen("report", "c", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=WAIT_SECONDS)
    info = json.loads(out)
    assert proc.returncode == 0
    assert info["pid"] != proc.pid and info["ppid"] == zygote["pid"]
    assert info["pgid"] == info["pid"], "the child leads its own process group"
    assert info["argv"] == ["c"] and info["sys_argv"][1:] == [f"{TARGETS}:report", "c"]
    assert info["segbench"] is None, "segbench is not preloaded into the child"
    assert err == "to stderr\n"
    assert info["sigint"] == str(signal.default_int_handler)
    assert (info["sigterm"], info["sigpipe"]) == (str(signal.SIG_DFL), str(signal.SIG_IGN))
    mode = os.stat(zy.dir / f"zygote-{zygote['key']}.sock").st_mode & 0o777
    assert (mode, os.stat(zy.dir).st_mode & 0o777) == (0o600, 0o700)


def test_preloads_that_fail_to_import_or_are_segbench_are_skipped(zy):
    zy.env["SEGBENCH_ZYGOTE_PRELOAD"] = "json, zygote_test_no_such_module, segbench.io"
    zy.run("report")
    (zygote,) = zy.wait_serving()
    assert zygote["preloaded"] == ["json"]
    log = Path(zygote["log"]).read_text()
    assert "preload: skipped zygote_test_no_such_module: ModuleNotFoundError" in log
    assert "preload: skipped segbench.io (segbench is imported fresh by each command)" in log
    assert report(zy.run("report"))["ppid"] == zygote["pid"]


def test_output_to_a_file_and_input_from_the_client(served, tmp_path):
    out_file = tmp_path / "out.json"
    with out_file.open("w") as out:
        result = served.run("report", stdout=out, stderr=subprocess.PIPE)
    assert result.returncode == 0
    info = json.loads(out_file.read_text())
    assert info["ppid"] == served.status()[0]["pid"]
    assert result.stderr == "to stderr\n"

    result = served.run("echo_stdin", input="hello\nworld\n")
    assert (result.returncode, result.stdout) == (0, "HELLO\nWORLD\n")


CASES = [
    (("int", "0"), 0, "exiting with int 0\n", ""),
    (("int", "3"), 3, "exiting with int 3\n", ""),
    (("message", "it broke"), 1, "exiting with message it broke\n", "it broke\n"),
    (("raise", "oops"), 1, "exiting with raise oops\n", "RuntimeError: oops\n"),
    (("signal", str(int(signal.SIGKILL))), 128 + signal.SIGKILL, None, ""),
    (("signal", str(int(signal.SIGTERM))), 128 + signal.SIGTERM, None, ""),
]


def test_exit_status_and_output_as_in_process(served):
    for argv, status, stdout, stderr_end in CASES:
        result = served.run("exit_with", *argv)
        assert result.returncode == status, (argv, result.stderr)
        assert result.stderr.endswith(stderr_end), (argv, result.stderr)
        if stdout is not None:
            assert result.stdout == stdout
        if argv[0] == "raise":
            assert result.stderr.startswith("Traceback (most recent call last):\n")
            assert "zygote.py" not in result.stderr, "the traceback starts at the command"
        if argv[0] != "signal":  # in-process, the client itself would be killed (-S)
            plain = served.run("exit_with", *argv, env={**served.env, "SEGBENCH_ZYGOTE": "0"})
            assert (plain.returncode, plain.stdout) == (status, result.stdout)
            assert plain.stderr.endswith(stderr_end)


def test_shutdown_joins_threads_then_runs_atexit_as_in_process(served):
    result = served.run("shutdown_order")
    plain = served.run("shutdown_order", env={**served.env, "SEGBENCH_ZYGOTE": "0"})
    assert (result.returncode, plain.returncode) == (0, 0)
    assert sorted(result.stdout.splitlines()) == sorted(plain.stdout.splitlines())
    assert result.stdout.splitlines()[-1] == plain.stdout.splitlines()[-1] == "atexit handler ran"
    assert "running in-process" not in result.stderr


def test_an_uncaught_keyboard_interrupt_ends_the_child_by_sigint(served):
    result = served.run("exit_with", "interrupt", "-")
    assert result.returncode == 128 + signal.SIGINT
    assert result.stderr.endswith("KeyboardInterrupt\n")
    assert "running in-process" not in result.stderr


def test_environment_cwd_and_umask_are_the_clients(served, tmp_path):
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {**served.env, "ZYGOTE_TEST_VAR": "only in the second client"}
    result = subprocess.run(
        ["sh", "-c", f"umask 027; exec {shlex.join(served.command('report'))}"],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
    )
    info = report(result)
    assert info["ppid"] == served.status()[0]["pid"]
    assert info["cwd"] == str(workdir)
    assert info["var"] == "only in the second client"
    assert info["umask"] == 0o027


def test_edits_to_the_command_module_are_seen(zy, tmp_path):
    module = tmp_path / "zygote_edited_target.py"
    module.write_text("def main(argv):\n    print('v1')\n")
    zy.env["PYTHONPATH"] += os.pathsep + str(tmp_path)
    target = "zygote_edited_target:main"
    assert zy.run(target).stdout == "v1\n"  # in-process; starts the zygote
    (zygote,) = zy.wait_serving()
    assert zy.run(target).stdout == "v1\n"
    module.write_text("import os\n\ndef main(argv):\n    print('v2', os.getppid())\n")
    assert zy.run(target).stdout == f"v2 {zygote['pid']}\n"


def test_sigint_to_the_client_reaches_the_child(served, tmp_path):
    proc = served.popen("wait_for_interrupt", str(tmp_path), stderr=subprocess.PIPE)
    try:
        wait_until((tmp_path / "ready").exists, "the command to start")
        assert int((tmp_path / "ready").read_text()) != proc.pid, "served, not in-process"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=WAIT_SECONDS) == 130
    finally:
        proc.kill()
    assert (tmp_path / "interrupted").read_text() == "yes"


def test_sigkill_of_the_client_ends_the_child_and_its_subprocess(served, tmp_path):
    pids_file = tmp_path / "pids.json"
    proc = served.popen("sleep_with_subprocess", str(pids_file))
    try:
        wait_until(pids_file.exists, "the command to start its subprocess")
        pids = json.loads(pids_file.read_text())
        assert pids["pid"] != proc.pid, "served, not in-process"
        proc.kill()
        proc.wait(timeout=WAIT_SECONDS)
        wait_until(lambda: not alive(pids["pid"]), "the watchdog to end the child")
        wait_until(lambda: not alive(pids["sub"]), "the child's subprocess to end")
    finally:
        for pid in json.loads(pids_file.read_text()).values() if pids_file.exists() else ():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_dead_zygote_is_reported_and_its_child_ended(served, tmp_path):
    pids_file = tmp_path / "pids.json"
    proc = served.popen("sleep_with_subprocess", str(pids_file), stderr=subprocess.PIPE)
    try:
        wait_until(pids_file.exists, "the command to start")
        os.kill(served.status()[0]["pid"], signal.SIGKILL)
        _, err = proc.communicate(timeout=WAIT_SECONDS)
        assert proc.returncode == 1
        assert err.startswith("error: the stage's worker process ended without an exit status")
        assert "SEGBENCH_ZYGOTE=0" in err
        pids = json.loads(pids_file.read_text())
        wait_until(lambda: not alive(pids["pid"]) and not alive(pids["sub"]), "the child to end")
    finally:
        proc.kill()


def test_disabled_runs_in_process_and_starts_nothing(zy):
    env = {**zy.env, "SEGBENCH_ZYGOTE": "0"}
    for _ in range(2):
        proc = zy.popen("report", stdout=subprocess.PIPE, env=env)
        out, _ = proc.communicate(timeout=WAIT_SECONDS)
        assert json.loads(out)["pid"] == proc.pid
    assert not zy.dir.exists() or not list(zy.dir.iterdir())


def test_a_changed_key_variable_gets_another_zygote(served):
    (first,) = served.status()
    env = {**served.env, "OMP_NUM_THREADS": "3"}
    assert "no zygote was listening" in served.run("report", env=env).stderr
    statuses = served.wait_serving(2)
    (second,) = [s for s in statuses if s["pid"] != first["pid"]]
    assert second["key"] != first["key"]
    assert report(served.run("report", env=env))["ppid"] == second["pid"]
    assert report(served.run("report"))["ppid"] == first["pid"]


def test_idle_zygote_exits_and_removes_its_socket(zy):
    zy.env["SEGBENCH_ZYGOTE_IDLE"] = "0.5"
    zy.run("report")

    def log() -> str:  # the zygote may well be gone before a status request would reach it
        return "".join(p.read_text() for p in zy.dir.glob("zygote-*.log"))

    wait_until(lambda: "idle for 0.5 s: exiting" in log(), "the zygote to serve, then idle out")
    pid = int(log().split("] serving ")[0].rsplit("zygote[", 1)[1])
    wait_until(lambda: not alive(pid), "the idle zygote to exit")
    assert not list(zy.dir.glob("*.sock"))


def test_stop_and_status(served):
    (zygote,) = served.status()
    status = subprocess.run(
        [PYTHON, "-m", "segbench.zygote", "status"],
        env=served.env,
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
    )
    assert status.stdout.startswith(f"{zygote['key']}: pid {zygote['pid']}, ")
    assert served.stop().stdout == f"{zygote['key']}: stopping 0\n"
    assert not list(served.dir.glob("*.sock"))
    wait_until(lambda: not alive(zygote["pid"]), "the stopped zygote to exit")


def test_stop_lets_running_commands_finish(served, tmp_path):
    (old,) = served.status()
    proc = served.popen("wait_for_interrupt", str(tmp_path), stderr=subprocess.PIPE)
    try:
        wait_until((tmp_path / "ready").exists, "the command to start")
        assert served.stop().stdout == f"{old['key']}: stopping 1\n"
        assert not list(served.dir.glob("*.sock"))
        # The stopped zygote gave up its lock: the next client starts a new one.
        assert "no zygote was listening" in served.run("report").stderr
        (new,) = served.wait_serving()
        assert new["pid"] != old["pid"] and alive(old["pid"])
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=WAIT_SECONDS) == 130, "the old zygote still reports the status"
    finally:
        proc.kill()
    wait_until(lambda: not alive(old["pid"]), "the stopped zygote to exit")


@pytest.mark.parametrize("unsafe", ["mode", "owner"])
def test_an_unsafe_directory_is_not_used(zy, unsafe):
    zy.dir.mkdir(mode=0o700)
    if unsafe == "mode":
        zy.dir.chmod(0o755)
    elif os.getuid() == 0:
        os.chown(zy.dir, 12345, -1)
    else:
        pytest.skip("only root can give a directory to someone else")
    for _ in range(2):
        proc = zy.popen("report", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=WAIT_SECONDS)
        assert json.loads(out)["pid"] == proc.pid
        assert "is not a directory of uid" in err
    assert not list(zy.dir.iterdir())


def test_a_stale_socket_is_replaced(served):
    (old,) = served.status()
    os.kill(old["pid"], signal.SIGKILL)  # leaves its socket file behind
    wait_until(lambda: not alive(old["pid"]), "the zygote to die")
    sock_path = served.dir / f"zygote-{old['key']}.sock"
    assert sock_path.exists()
    assert "no zygote was listening" in served.run("report").stderr
    (new,) = served.wait_serving()
    assert new["pid"] != old["pid"] and new["key"] == old["key"]
    assert report(served.run("report"))["ppid"] == new["pid"]


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (b"refused busy\n", "the zygote did not start the command: 'refused busy'"),
        (b"", "the zygote did not start the command: ''"),
    ],
)
def test_a_refusing_zygote_means_in_process(zy, reply, why):
    key = subprocess.run(
        [PYTHON, "-c", "from segbench.zygote import zygote_key; print(zygote_key())"],
        env=zy.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    zy.dir.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as fake:
        fake.bind(str(zy.dir / f"zygote-{key}.sock"))
        fake.listen()

        def answer():  # read the whole request (so that closing does not reset it), reply
            conn, _ = fake.accept()
            with conn:
                data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 8)
                for fd in fds:
                    os.close(fd)
                header, _, body = data.partition(b"\n")
                while len(body) < int(header.split()[1]):
                    body += conn.recv(1 << 16)
                conn.sendall(reply)

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        proc = zy.popen("report", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=WAIT_SECONDS)
        thread.join(WAIT_SECONDS)
    assert json.loads(out)["pid"] == proc.pid
    assert f"running in-process: {why}" in err


@pytest.mark.parametrize("bad", ["crash", "thread"])
def test_a_zygote_that_fails_to_start_is_not_retried_until_stop(zy, bad):
    zy.env.update(SEGBENCH_ZYGOTE_PRELOAD="json,tests.zygote_bad_import", ZYGOTE_TEST_BAD=bad)
    assert "; started one" in zy.run("report").stderr

    def status() -> str:
        return subprocess.run(
            [PYTHON, "-m", "segbench.zygote", "status"], env=zy.env, capture_output=True, text=True
        ).stdout

    wait_until(lambda: "failed to start" in status(), "the zygote to fail")
    (log,) = zy.dir.glob("zygote-*.log")
    if bad == "thread":
        assert "not serving: preloading started threads (MainThread, left-running)" in (
            log.read_text()
        )
    again = zy.run("report")
    assert again.returncode == 0
    assert "running in-process: no zygote was listening; the last one (pid " in again.stderr
    assert "failed to start, see" in again.stderr
    assert log.read_text().count(" starting for key ") == 1
    assert "forgot the failed start of pid" in zy.stop().stdout
    assert "; started one" in zy.run("report").stderr


def test_bad_requests_are_refused_and_the_zygote_serves_on(served):
    (zygote,) = served.status()
    sock_path = served.dir / f"zygote-{zygote['key']}.sock"
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        for header, body, fds in [
            (b"run 2\n", b"{}", [null] * 5),  # fields missing
            (b"run 3\n", b"[1]", [null] * 5),  # not an object
            (b"run 2\n", b"{}", [null]),  # too few fds
            (b"hello\n", b"", []),
        ]:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(WAIT_SECONDS)
                sock.connect(str(sock_path))
                socket.send_fds(sock, [header + body], fds)  # one message: it may refuse early
                assert sock.makefile("rb").readline() == b"refused bad request\n"
    finally:
        os.close(null)
    assert report(served.run("report"))["ppid"] == zygote["pid"]


def test_concurrent_clients_are_each_served_with_their_own_output(served):
    (zygote,) = served.status()
    procs = [
        served.popen("report", str(i), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(4)
    ]
    for i, proc in enumerate(procs):
        out, err = proc.communicate(timeout=WAIT_SECONDS)
        info = json.loads(out)
        assert (proc.returncode, info["argv"], info["ppid"]) == (0, [str(i)], zygote["pid"])
        assert err == "to stderr\n"


def test_racing_clients_start_one_zygote(zy):
    procs = [zy.popen("report", stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    started = 0
    for proc in procs:
        _, err = proc.communicate(timeout=WAIT_SECONDS)
        assert proc.returncode == 0
        started += "; started one" in err
    assert started >= 1
    (zygote,) = zy.wait_serving()

    def outcomes() -> list[str] | None:
        """How each zygote that was started ended: "serving" or why not (None until all have
        decided)."""
        lines = Path(zygote["log"]).read_text().splitlines()
        ends = ["serving" for line in lines if "] serving " in line]
        ends += [line.split("] ", 1)[1] for line in lines if "] not serving: " in line]
        return ends if len(ends) == started else None

    wait_until(outcomes, "every zygote started to serve or give up")
    lost = "not serving: another zygote for this key is starting or serving"
    assert sorted(outcomes()) == sorted(["serving"] + [lost] * (started - 1))
    assert len(zy.status()) == 1


def test_status_and_stop_reach_a_zygote_that_is_still_importing(zy, tmp_path):
    marker = tmp_path / "importing"
    zy.env["SEGBENCH_ZYGOTE_PRELOAD"] = "json,tests.zygote_slow_import"
    zy.env["ZYGOTE_TEST_MARKER"] = str(marker)
    assert "; started one" in zy.run("report").stderr
    wait_until(marker.exists, "the zygote to start importing")
    pid = int(marker.read_text())
    result = zy.run("report")
    assert f"no zygote was listening; one is starting (pid {pid})" in result.stderr
    status = subprocess.run(
        [PYTHON, "-m", "segbench.zygote", "status"], env=zy.env, capture_output=True, text=True
    )
    assert status.stdout.endswith(f": starting (pid {pid})\n")
    assert zy.stop().stdout.endswith(f": stopped pid {pid}, which was starting\n")
    wait_until(lambda: not alive(pid), "the starting zygote to exit")


def on_pty(zy: Zygotes, target: str, *, env: dict, stream="stderr") -> tuple[int, int, str]:
    """Run a client whose ``stream`` ("stdout" or "stderr") is a terminal, the other one
    /dev/null: ``(client pid, exit status, what reached the terminal)``."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    other = "stderr" if stream == "stdout" else "stdout"
    proc = zy.popen(target, env=env, **{stream: follower, other: subprocess.DEVNULL})
    os.close(follower)
    out = b""
    with contextlib.suppress(OSError):  # EIO once every writer has closed the terminal
        while chunk := os.read(leader, 65536):
            out += chunk
    os.close(leader)
    return proc.pid, proc.wait(timeout=WAIT_SECONDS), out.decode()


def test_stdio_buffering_is_a_fresh_interpreters(zy):
    """Line-buffered iff a tty (stderr always), as CPython makes stdio at start-up."""
    zy.run("report")
    zy.wait_serving()
    found = {}
    for zygote in ("1", "0"):
        env = {**zy.env, "SEGBENCH_ZYGOTE": zygote}
        proc = zy.popen("report", env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        piped = json.loads(proc.communicate(timeout=WAIT_SECONDS)[0])
        pid, _, out = on_pty(zy, "report", env=env, stream="stdout")
        tty = json.loads(out.strip())
        assert (piped["pid"] == proc.pid, tty["pid"] == pid) == (zygote == "0",) * 2
        found[zygote] = [
            (info["stdout_tty"], info["stdout_line_buffering"], info["stderr_line_buffering"])
            for info in (piped, tty)
        ]
    assert found["1"] == found["0"] == [(False, False, True), (True, True, True)]


def test_tqdm_on_a_terminal_writes_as_in_a_plain_process(zy):
    zy.env["SEGBENCH_ZYGOTE_PRELOAD"] = "json,tqdm"
    zy.run("report")
    (zygote,) = zy.wait_serving()
    del zy.env["SEGBENCH_ZYGOTE_DEBUG"]  # only the bar may reach the terminal
    outputs = []
    for enabled in ("1", "0"):
        _, status, out = on_pty(zy, "progress", env={**zy.env, "SEGBENCH_ZYGOTE": enabled})
        assert status == 0
        outputs.append(out)
    assert f"{TARGETS}:progress" in Path(zygote["log"]).read_text(), "the first run was served"
    assert "| 3/3" in outputs[0] and "\r" in outputs[0]
    assert outputs[0] == outputs[1]


@pytest.mark.slow
def test_the_default_preload_serves_torch_without_cuda(zy):
    zy.env.pop("SEGBENCH_ZYGOTE_PRELOAD")
    first = zy.run("torch_op")
    assert "no zygote was listening" in first.stderr
    expected = json.loads(first.stdout)["value"]
    (zygote,) = zy.wait_serving()
    seeds = set()
    for _ in range(2):
        info = report(zy.run("torch_op"))
        assert info["ppid"] == zygote["pid"]
        assert info["preloaded"] and not info["cuda_initialised"]
        assert info["value"] == expected
        seeds.add(info["seed"])
    assert len(seeds) == 2, "each child reseeds torch's generator as a fresh process would"
    assert "torch" in zygote["preloaded"]
