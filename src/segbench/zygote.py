"""A zygote (fork server) for stage commands: import the heavy libraries once, fork per command.

Every DVC stage is a new Python process that spends seconds importing torch, mlflow, scipy and
friends before doing often under a second of work. :func:`run_stage` hands the command to a
long-lived *zygote* that has already imported them: the zygote forks a child, the child takes
over the client's stdin/stdout/stderr, cwd, environment, ``sys.path`` and ``sys.argv``, imports
the command's module (after the fork, so edits to segbench are always seen) and runs it. The
client waits, forwards SIGINT/SIGTERM/SIGHUP to the child's process group, and exits with the
child's status. Anything unusual (disabled, unsupported platform, no zygote yet, a refused
request) runs the command in-process instead, exactly as before.

Files, all in ``<dir>`` = ``$SEGBENCH_ZYGOTE_DIR`` or ``${XDG_RUNTIME_DIR:-/tmp}/segbench-<uid>``
(mode 0700, owned by this user, else unused): ``zygote-<key>.sock`` (AF_UNIX stream, 0600);
``zygote-<key>.lock``, flock'ed by the live zygote from before it binds the socket until after
it removes it, holding ``<pid> <state>`` (see :class:`_Lock`); ``zygote-<key>.log``. ``<key>``
is 16 hex digits of a sha256 over everything that decides what the preloaded imports did (see
:func:`zygote_key`).

Protocol (ASCII lines, one connection per request):
  client -> zygote  ``run <n>\\n`` carrying five fds (SCM_RIGHTS): 0, 1, 2, an O_PATH fd of the
                    cwd and the read end of a *lifeline* pipe whose write end only the client
                    holds; then ``<n>`` bytes of JSON (the request, see :func:`_request`)
  zygote -> client  ``started <pid>\\n`` after the fork, or ``refused <why>\\n``
  client -> child   ``go\\n`` on the lifeline; the child runs nothing before it (a client that
                    gave up waiting for ``started`` closes it, and the child exits unrun).
                    EOF on the lifeline later means the client died: the child's group is ended.
  zygote -> client  ``exit <status>\\n`` when it reaps the child (killed by signal S: 128 + S).
                    The child does not hold the connection, so EOF without a status means that
                    the zygote died.
  ``status\\n`` -> one line of JSON; ``stop\\n`` -> ``stopping <running children>\\n``.

What still differs from a fresh process: the command's parent (``os.getppid()``) and command
line (``ps``) are the zygote's, and its CPU time is not counted as the client's children's; its
hash seed is the zygote's (one per zygote, not one per run); objects still referenced from module
globals at exit are not finalized (see :func:`_exit`); preloaded third-party modules are not
re-imported, so edits to an editable install of one need ``stop``; ``__main__`` is an empty
module naming the client's script.

Knobs: ``SEGBENCH_ZYGOTE=0`` (off), ``SEGBENCH_ZYGOTE_PRELOAD`` (comma-separated modules),
``SEGBENCH_ZYGOTE_IDLE`` (seconds, default 300), ``SEGBENCH_ZYGOTE_DEBUG=1`` (say on stderr why a
command ran in-process). ``python -m segbench.zygote status|stop`` lists or stops this user's
zygotes. Stdlib only: the client must stay cheap to import.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import io
import json
import os
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, NoReturn

DEFAULT_PRELOAD = (
    "torch, numpy, scipy.stats, cv2, PIL.Image, yaml, pydantic, jinja2, tqdm, tifffile, skimage, "
    "mlflow, mlflow.store.tracking.sqlalchemy_store, sqlalchemy, segmentation_models_pytorch, "
    "segment_anything, albumentations, matplotlib"
)
DEFAULT_IDLE_SECONDS = 300.0
# Variables that libraries (or the interpreter, or the loader) read once at import or load time:
# a zygote that imported under other values would behave differently from a fresh process.
KEY_ENV_NAMES = ("HOME", "LANG", "TMPDIR", "TEMP", "TMP", "NO_ALBUMENTATIONS_UPDATE")
KEY_ENV_PREFIXES = (
    "PYTHON", "LD_", "LC_", "OMP_", "MKL_", "OPENBLAS_", "GOTO_", "BLIS_", "VECLIB_", "KMP_",
    "GOMP_", "NUMEXPR_", "CUDA_", "NVIDIA_", "HIP_", "ROCR_", "PYTORCH_", "TORCH_", "MPL",
    "OPENCV_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "MLFLOW_CONFIGURE_LOGGING",
    "MLFLOW_LOGGING_LEVEL", "XDG_CACHE_HOME", "XDG_CONFIG_HOME",
)  # fmt: skip
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
HANDSHAKE_SECONDS = 10.0  # generous: a fork of a process holding torch takes milliseconds
WATCHDOG_GRACE_SECONDS = 5.0  # between SIGTERM and SIGKILL once the client is gone
MAX_REQUEST_BYTES = 16 << 20
REQUEST_KEYS = {"module", "qualname", "argv", "sys_argv", "main_file", "cwd", "env", "sys_path"}
REQUEST_KEYS |= {"umask", "ignored_signals", "stdio", "unbuffered"}
# A zygote that crashed or gave up while starting is not started again for this long: each try
# imports for seconds beside the stage that runs in-process meanwhile.
RETRY_FAILED_START_SECONDS = 600.0
# The zygote imports this very file (its package directory goes first on sys.path), whatever the
# cwd, PYTHONPATH or an editable install would resolve `segbench` to.
_BOOTSTRAP = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); from segbench.zygote import main; main()"
)


class _InProcess(Exception):
    """The zygote cannot serve this command (the message says why); run it in-process."""


def run_stage(main: Callable[[list[str]], object], argv: list[str]) -> NoReturn:
    """Run ``main(argv)`` as this process's command and exit with its status.

    ``main`` must be a module-level function (the zygote's child imports it by
    ``main.__module__`` and ``main.__qualname__``). Its result becomes the exit status as with
    ``sys.exit(main(argv))``: None -> 0, an int -> that int, ``SystemExit`` -> its code, an
    uncaught exception -> its traceback and 1.
    """
    if os.environ.get("SEGBENCH_TIMINGS"):
        # Imported here, not at the top: the zygote itself must not hold a copy of it.
        from segbench import timing

        timing.client()
    try:
        status = _run_served(main, argv)
    except _InProcess as why:
        if os.environ.get("SEGBENCH_ZYGOTE_DEBUG") == "1":
            print(f"segbench.zygote: running in-process: {why}", file=sys.stderr, flush=True)
        status = None
    if status is None:  # outside the except: the command's own errors chain to nothing of ours
        sys.exit(main(argv))
    sys.exit(status)


# --- where and which zygote -----------------------------------------------------------------


def socket_dir() -> Path:
    """This user's zygote directory, created 0700; raises :class:`_InProcess` if unsafe."""
    configured = os.environ.get("SEGBENCH_ZYGOTE_DIR")
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    path = Path(configured) if configured else Path(base) / f"segbench-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        raise _InProcess(f"cannot create {path}: {exc}") from exc
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        # Anyone else who can write here could answer as our zygote and run code as us.
        raise _InProcess(f"{path} is not a directory of uid {os.getuid()} with mode 0700")
    return path.absolute()  # the zygote starts elsewhere


def preload_list() -> list[str]:
    """Modules the zygote imports before serving: ``$SEGBENCH_ZYGOTE_PRELOAD`` or the default."""
    names = os.environ.get("SEGBENCH_ZYGOTE_PRELOAD", DEFAULT_PRELOAD).split(",")
    return [name.strip() for name in names if name.strip()]


def zygote_key() -> str:
    """16 hex digits naming the zygote that may serve this process.

    Two processes share a zygote only if it imported its preloads as they would have: same
    interpreter, prefix, version, flags and -X/-W options, same zygote.py, same installed
    packages (site-packages mtimes), preload list, import-time environment variables, CPU
    affinity, resource limits and cgroup.
    """
    flags = {name: getattr(sys.flags, name) for name in sys.flags.__match_args__}
    for name in ("inspect", "interactive"):  # -i does not change what an import does
        flags.pop(name, None)
    env = {
        name: value
        for name, value in os.environ.items()
        if name in KEY_ENV_NAMES or name.startswith(KEY_ENV_PREFIXES)
    }
    parts = {
        "executable": sys.executable,
        "prefix": [sys.prefix, sys.base_prefix],
        "version": sys.version,
        "flags": flags,
        "xoptions": {k: str(v) for k, v in sys._xoptions.items()},
        "warnoptions": sys.warnoptions,
        "source": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        "site": _site_mtimes(),
        "preload": preload_list(),
        "env": env,
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "rlimits": _rlimits(),
        "cgroup": _read_text("/proc/self/cgroup"),
    }
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _site_mtimes() -> list[tuple[str, int]]:
    import site

    dirs = set(site.getsitepackages()) if hasattr(site, "getsitepackages") else set()
    if site.ENABLE_USER_SITE:
        dirs.add(site.getusersitepackages())
    dirs.update(p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages"))
    mtimes = []
    for d in sorted(dirs):
        with contextlib.suppress(OSError):
            mtimes.append((d, os.stat(d).st_mtime_ns))
    return mtimes


def _rlimits() -> list[tuple[int, int]]:
    import resource

    names = ("RLIMIT_AS", "RLIMIT_DATA", "RLIMIT_NOFILE", "RLIMIT_STACK", "RLIMIT_NPROC")
    return [resource.getrlimit(getattr(resource, n)) for n in names if hasattr(resource, n)]


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def _paths(directory: Path, key: str) -> tuple[Path, Path, Path]:
    """``(socket, lock, log)`` of the zygote ``key``."""
    stem = directory / f"zygote-{key}"
    return stem.with_suffix(".sock"), stem.with_suffix(".lock"), stem.with_suffix(".log")


# --- the client -----------------------------------------------------------------------------


def _run_served(main: Callable[[list[str]], object], argv: list[str]) -> int:
    """Have the zygote run ``main(argv)``; the child's exit status. Raises :class:`_InProcess`."""
    if os.environ.get("SEGBENCH_ZYGOTE", "1").strip().lower() in ("0", "false", "no", "off"):
        raise _InProcess("SEGBENCH_ZYGOTE=0")
    if not (hasattr(os, "fork") and hasattr(socket, "AF_UNIX") and hasattr(socket, "send_fds")):
        raise _InProcess("this platform has no fork, AF_UNIX or SCM_RIGHTS")
    if main.__module__ == "__main__" or "<locals>" in main.__qualname__:
        raise _InProcess(f"{main.__qualname__} is not importable by name")
    if threading.current_thread() is not threading.main_thread():
        raise _InProcess("signals can only be forwarded from the main thread")
    directory = socket_dir()
    key = zygote_key()
    sock_path, _, log_path = _paths(directory, key)
    if len(os.fsencode(sock_path)) >= 100:  # sun_path holds 108 bytes on Linux, 104 on macOS
        raise _InProcess(f"socket path too long: {sock_path}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(sock_path))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        started = _start_zygote(key, sock_path, log_path)
        raise _InProcess(f"no zygote was listening; {started}") from None
    except OSError as exc:
        sock.close()
        raise _InProcess(f"cannot connect to {sock_path}: {exc}") from exc
    with sock, sock.makefile("rb") as replies:
        pid = _handshake(sock, replies, _request(main, argv))
        return _wait_for_exit(replies, pid, log_path)


def _request(main: Callable[[list[str]], object], argv: list[str]) -> dict:
    """The JSON request: what the child needs to become this process's command."""
    umask = os.umask(0o022)
    os.umask(umask)
    streams = (sys.__stdin__, sys.__stdout__, sys.__stderr__)
    main_module = sys.modules.get("__main__")
    return {
        "module": main.__module__,
        "qualname": main.__qualname__,
        "argv": list(argv),
        "sys_argv": list(sys.argv),
        "main_file": getattr(main_module, "__file__", None),
        "cwd": _cwd(),
        "env": dict(os.environ),
        "sys_path": [p for p in sys.path if isinstance(p, str)],
        "umask": umask,
        "ignored_signals": [
            int(s) for s in FORWARDED_SIGNALS if signal.getsignal(s) is signal.SIG_IGN
        ],
        # How this interpreter made its stdio (PYTHONIOENCODING, -u, locale): the child does
        # the same on the received fds.
        "stdio": [[getattr(s, "encoding", None), getattr(s, "errors", None)] for s in streams],
        "unbuffered": bool(getattr(sys.__stdout__, "write_through", False)),
    }


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:  # removed while we run in it; the child gets it through an fd anyway
        return "?"


def _handshake(sock: socket.socket, replies: io.BufferedIOBase, request: dict) -> int:
    """Send the request with our fds; the child's pid once it is committed to run."""
    payload = json.dumps(request).encode()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()  # what this process printed so far comes before the child's output
    try:
        cwd_fd = os.open(".", getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY)
    except OSError as exc:
        raise _InProcess(f"cannot open the current directory: {exc}") from exc
    # Not inheritable: only this process holds the write end, so the child sees EOF when we die.
    lifeline_r, lifeline_w = os.pipe()
    try:
        sock.settimeout(HANDSHAKE_SECONDS)
        fds = [0, 1, 2, cwd_fd, lifeline_r]
        socket.send_fds(sock, [f"run {len(payload)}\n".encode()], fds)
        sock.sendall(payload)
        reply = replies.readline().decode("ascii", "replace").split()
        if len(reply) != 2 or reply[0] != "started" or not reply[1].isdigit():
            raise _InProcess(f"the zygote did not start the command: {' '.join(reply)!r}")
        sock.settimeout(None)  # from here on the command runs as long as it needs
        os.write(lifeline_w, b"go\n")
    except OSError as exc:  # includes the timeout: the child never runs without our "go"
        os.close(lifeline_w)
        raise _InProcess(f"handshake with the zygote failed: {exc!r}") from exc
    finally:
        os.close(cwd_fd)
        os.close(lifeline_r)
    return int(reply[1])  # lifeline_w stays open until this process exits


def _wait_for_exit(replies: io.BufferedIOBase, pid: int, log_path: Path) -> int:
    """Forward signals to the child's process group until the zygote reports its status."""

    def forward(signum, _frame):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signum)

    for signum in FORWARDED_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, forward)
    try:
        reply = replies.readline().decode("ascii", "replace").split()
    except OSError:
        reply = []
    if len(reply) == 2 and reply[0] == "exit" and reply[1].lstrip("-").isdigit():
        return int(reply[1])
    print(
        f"error: the stage's worker process ended without an exit status (log: {log_path}); "
        "run with SEGBENCH_ZYGOTE=0 to run stages without the zygote",
        file=sys.stderr,
        flush=True,
    )
    return 1


def _start_zygote(key: str, sock_path: Path, log_path: Path) -> str:
    """Start a detached zygote unless one holds the lock; what happened, in a few words."""
    import subprocess

    lock = _probe_lock(sock_path)
    if lock.held:
        return f"one is starting (pid {lock.pid or '?'})"
    if lock.state in ("starting", "failed") and lock.age < RETRY_FAILED_START_SECONDS:
        return (
            f"the last one (pid {lock.pid}) failed to start, see {log_path}; not trying again "
            f"for {RETRY_FAILED_START_SECONDS - lock.age:.0f} s or until `python -m "
            "segbench.zygote stop`"
        )
    src = str(Path(__file__).resolve().parents[1])
    command = [sys.executable, *subprocess._args_from_interpreter_flags(), "-c", _BOOTSTRAP]
    try:
        if log_path.exists() and log_path.stat().st_size > 1 << 20:
            os.replace(log_path, log_path.with_suffix(".log.1"))
        with open(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
            # Detached: its own session, no inherited fds, so that a caller reading our output
            # through a pipe (DVC, CI, pytest) never waits for it.
            proc = subprocess.Popen(
                [*command, src, "serve", key],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=sock_path.parent,
                env={**os.environ, "SEGBENCH_ZYGOTE_DIR": str(sock_path.parent)},
                close_fds=True,
                start_new_session=True,
            )
    except OSError as exc:
        return f"could not start one: {exc}"  # nothing lost: this command runs in-process
    proc.returncode = 0  # it outlives us by design: no "still running" warning, no reaping
    return "started one"


# --- the zygote -----------------------------------------------------------------------------


def _log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} zygote[{os.getpid()}] {message}", file=sys.stderr, flush=True)


class _Job:
    """A request read in full: the connection, its JSON and its fds (0, 1, 2, cwd, lifeline)."""

    def __init__(self, conn: socket.socket, request: dict, fds: list[int]):
        self.conn, self.request, self.fds = conn, request, fds


class _Pending:
    """A connection whose request is still arriving."""

    def __init__(self, conn: socket.socket, fds: list[int] | None = None):
        self.conn, self.buf, self.fds = conn, b"", fds or []
        self.deadline = time.monotonic() + HANDSHAKE_SECONDS

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        self.conn.close()


class _Zygote:
    """The serving loop. :meth:`serve` returns None in the zygote when it is done, and a
    :class:`_Job` in a freshly forked child, which the caller then runs (outside this object,
    so that no cleanup of the zygote's ever runs in a child)."""

    def __init__(self, key: str, directory: Path, idle: float):
        import selectors

        self.key, self.idle = key, idle
        self.sock_path, self.lock_path, self.log_path = _paths(directory, key)
        self.selector = selectors.DefaultSelector()
        self.listener: socket.socket | None = None
        self.sock_ino = None
        self.lock_fd: int | None = None
        self.wake_r = self.wake_w = None  # the self-pipe of signal.set_wakeup_fd, once serving
        self.pending: dict[socket.socket, _Pending] = {}
        self.children: dict[int, socket.socket] = {}
        self.started = time.time()
        self.last_active = time.monotonic()
        self.stop_requested = False
        self.preloaded: list[str] = []

    def lock(self) -> bool:
        """Take the key's lock (state ``starting``); False if another zygote holds it.

        A client probing the lock holds it for microseconds: that is waited out (up to a
        second). A live zygote that holds it has written so: then we give up at once, so that a
        zygote that lost a start race does not linger and take over after a ``stop``."""
        self.lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        for _ in range(20):
            if _try_lock(self.lock_fd):
                _write_state(self.lock_fd, "starting")
                return True
            pid, state = _read_state(self.lock_fd)
            if state in ("starting", "serving") and _alive(pid):
                break
            time.sleep(0.05)
        os.close(self.lock_fd)
        self.lock_fd = None
        return False

    def fail(self, why: str) -> None:
        """Give up starting (state ``failed``: clients do not start another for a while)."""
        _log(f"not serving: {why}")
        _write_state(self.lock_fd, "failed")

    def listen(self) -> None:
        import selectors

        self.sock_path.unlink(missing_ok=True)  # stale: we hold the lock, so nobody serves it
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket file is created 0600
        try:
            self.listener.bind(str(self.sock_path))
        finally:
            os.umask(old_umask)
        self.sock_ino = os.stat(self.sock_path).st_ino
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, "listen")
        # SIGCHLD and SIGTERM wake the loop through this pipe; a child's exit is reported at once.
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_stop_signal)
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")

    def _on_stop_signal(self, signum, _frame) -> None:
        self.stop_requested = True

    def serve(self) -> _Job | None:
        while self.listener is not None or self.children:
            if self.stop_requested and self.listener is not None:
                _log("stop requested by a signal")
                self.stop_listening()
            idle_left = self._idle_left()
            if idle_left is not None and idle_left <= 0:
                _log(f"idle for {self.idle:g} s: exiting")
                self.stop_listening()
                continue
            now = time.monotonic()
            timeouts = [p.deadline - now for p in self.pending.values()]
            timeouts += [idle_left] if idle_left is not None else []
            for key, _ in self.selector.select(max(min(timeouts), 0) if timeouts else None):
                if key.data == "listen" and self.listener is not None:
                    self._accept()
                elif key.data == "wake":
                    while _read_nonblocking(self.wake_r):
                        pass
                elif (p := self.pending.get(key.fileobj)) and (job := self._read(p)):  # noqa: SIM102
                    if self._fork(job) == 0:
                        return job  # we are the child
            self._reap()
            self._expire_pending()
        return None

    def _idle_left(self) -> float | None:
        """Seconds until the idle timeout; None while anything is running or arriving."""
        if self.listener is None or self.children or self.pending:
            return None
        return self.last_active + self.idle - time.monotonic()

    def _accept(self) -> None:
        import selectors

        while True:
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # out of fds: its client times out and runs in-process
                _log(f"accept failed: {exc}")
                time.sleep(0.1)  # the listener stays readable: do not spin on it
                return
            conn.setblocking(False)
            self.pending[conn] = _Pending(conn)
            self.selector.register(conn, selectors.EVENT_READ, "request")
            self.last_active = time.monotonic()

    def _read(self, p: _Pending) -> _Job | None:
        """Read what has arrived of ``p``'s request; the job once it is complete."""
        try:
            flags = socket.MSG_DONTWAIT | getattr(socket, "MSG_CMSG_CLOEXEC", 0)
            data, fds, msg_flags, _ = socket.recv_fds(p.conn, 1 << 16, 8, flags)
        except BlockingIOError:
            return None
        except OSError:
            data, fds, msg_flags = b"", [], 0
        p.fds += fds
        p.buf += data
        if not data or msg_flags & socket.MSG_CTRUNC or len(p.buf) > MAX_REQUEST_BYTES:
            return self._drop(p, "refused bad request\n" if data else None)
        header, newline, body = p.buf.partition(b"\n")
        if not newline:
            return None
        words = header.decode("ascii", "replace").split()
        if words == ["status"]:
            return self._drop(p, json.dumps(self.status()) + "\n")
        if words == ["stop"]:
            self._forget(p)
            _log("stop requested")
            self.stop_listening()
            return self._drop(p, f"stopping {len(self.children)}\n")
        if len(words) != 2 or words[0] != "run" or not words[1].isdigit() or len(p.fds) != 5:
            return self._drop(p, "refused bad request\n")
        if len(body) < int(words[1]):
            return None
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if not isinstance(request, dict) or not request.keys() >= REQUEST_KEYS:
            return self._drop(p, "refused bad request\n")
        self._forget(p)
        return _Job(p.conn, request, p.fds)

    def _forget(self, p: _Pending) -> None:
        if self.pending.pop(p.conn, None) is not None:
            self.selector.unregister(p.conn)

    def _drop(self, p: _Pending, reply: str | None) -> None:
        """Reply (if anything) and close ``p``."""
        if reply is not None:
            _send(p.conn, reply)
        self._forget(p)
        p.close()

    def _fork(self, job: _Job) -> int:
        """Fork a child for ``job``: 0 in the child, its pid (or -1 if none) in the zygote."""
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # or the child would print the zygote's buffered log lines again
        try:
            pid = os.fork()
        except OSError as exc:  # out of processes or memory: the client runs it in-process
            _log(f"fork failed: {exc}")
            self._drop(_Pending(job.conn, job.fds), f"refused fork failed: {exc}\n")
            return -1
        if pid == 0:
            self._close_in_child(job)
            return 0
        with contextlib.suppress(OSError):  # also here: the client may signal the group at once
            os.setpgid(pid, pid)
        for fd in job.fds:  # or the zygote would hold the client's stdout pipe open
            os.close(fd)
        self.children[pid] = job.conn
        self.last_active = time.monotonic()
        r = job.request
        _log(f"started {pid}: {r['module']}:{r['qualname']} {r['argv']} in {r['cwd']}")
        _send(job.conn, f"started {pid}\n")
        return pid

    def _close_in_child(self, job: _Job) -> None:
        """Close the zygote's fds in a new child, so that it holds no socket, lock or pipe of
        the zygote's (the listening socket would keep clients waiting after the zygote exits)."""
        signal.set_wakeup_fd(-1)
        job.conn.close()  # so that the client sees EOF if the zygote dies while we run
        self.selector.close()  # closes the epoll fd only; the zygote's registrations stay
        if self.listener is not None:
            self.listener.close()
        for fd in (self.wake_r, self.wake_w, self.lock_fd):
            if fd is not None:
                os.close(fd)
        for p in self.pending.values():
            p.close()
        for conn in self.children.values():
            conn.close()

    def _reap(self) -> None:
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(wait_status)
            status = code if code >= 0 else 128 - code
            _log(f"exit {pid}: {status}")
            conn = self.children.pop(pid, None)
            if conn is not None:
                _send(conn, f"exit {status}\n")
                conn.close()
            self.last_active = time.monotonic()

    def _expire_pending(self) -> None:
        now = time.monotonic()
        for p in [p for p in self.pending.values() if p.deadline < now]:
            self._drop(p, "refused request incomplete\n")

    def stop_listening(self) -> None:
        """Stop taking requests: remove the socket, release the lock; children run on."""
        if self.listener is None:
            return
        try:
            if os.stat(self.sock_path).st_ino == self.sock_ino:
                self.sock_path.unlink()
        except OSError:
            pass
        self.selector.unregister(self.listener)
        self.listener.close()
        self.listener = None
        for p in list(self.pending.values()):
            self._drop(p, "refused the zygote is stopping\n")
        if self.lock_fd is not None:
            _write_state(self.lock_fd, "stopped")
            os.close(self.lock_fd)
            self.lock_fd = None

    def status(self) -> dict:
        return {
            "key": self.key,
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 1),
            "children": sorted(self.children),
            "preloaded": self.preloaded,
            "log": str(self.log_path),
        }


def _send(conn: socket.socket, text: str) -> None:
    """Send a short reply without ever blocking the zygote (the peer may be gone)."""
    with contextlib.suppress(OSError):
        conn.send(text.encode(), socket.MSG_DONTWAIT)


def _read_nonblocking(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except BlockingIOError:
        return b""


def _preload(names: list[str]) -> list[str]:
    """Import ``names`` (never segbench: its code must be fresh in every child); those loaded."""
    loaded = []
    for name in names:
        if name == "segbench" or name.startswith("segbench."):
            _log(f"preload: skipped {name} (segbench is imported fresh by each command)")
            continue
        start = time.monotonic()
        try:
            importlib.import_module(name)
        except Exception as exc:
            _log(f"preload: skipped {name}: {exc!r}")
            continue
        loaded.append(name)
        _log(f"preload: {name} in {time.monotonic() - start:.2f} s")
    return loaded


def _serve(key: str) -> _Job | None:
    """Run a zygote for ``key``: None when it exits, a :class:`_Job` in a forked child."""
    import gc

    _log(f"starting for key {key}")
    try:
        idle = float(os.environ.get("SEGBENCH_ZYGOTE_IDLE", DEFAULT_IDLE_SECONDS))
    except ValueError:
        idle = DEFAULT_IDLE_SECONDS
    zygote = _Zygote(key, socket_dir(), idle)
    if not zygote.lock():
        _log("not serving: another zygote for this key is starting or serving")
        return None
    if key != (own_key := zygote_key()):
        return zygote.fail(f"this process's key is {own_key}, not {key}: flags not reproduced?")
    os.chdir("/")  # hold no directory; each child changes to its client's
    sys.path[:] = [p for p in sys.path if p != ""]  # `-c` put the cwd there: no imports from "/"
    zygote.preloaded = _preload(preload_list())
    if threading.active_count() != 1:
        names = ", ".join(t.name for t in threading.enumerate())
        return zygote.fail(f"preloading started threads ({names}); a fork copies no threads")
    gc.collect()
    gc.freeze()  # the children's garbage collector then does not write to (copy) these pages
    try:
        zygote.listen()
    except OSError as exc:
        return zygote.fail(f"cannot listen on {zygote.sock_path}: {exc}")
    _write_state(zygote.lock_fd, "serving")
    native = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else "?"
    _log(f"serving {zygote.sock_path} (python {sys.version.split()[0]}, {native} OS threads)")
    job = zygote.serve()
    if job is None:
        _log("exited")
    return job


# --- the child ------------------------------------------------------------------------------


def _become_command(job: _Job) -> NoReturn:
    """In a forked child: become the client's command, run it, exit with its status."""
    r = job.request
    with contextlib.suppress(OSError):  # its own group: forwarded signals reach its subprocesses
        os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    for signum in (signal.SIGPIPE, signal.SIGXFSZ, *r["ignored_signals"]):
        signal.signal(signum, signal.SIG_IGN)  # as CPython sets them, and as the client had them
    stdin, stdout, stderr, cwd, lifeline = job.fds
    if _read_line(lifeline) != b"go\n":
        os._exit(0)  # the client gave up before it committed: it runs the command itself
    for target, fd in zip((0, 1, 2), (stdin, stdout, stderr), strict=True):
        os.dup2(fd, target)
    os.fchdir(cwd)
    for fd in (stdin, stdout, stderr, cwd):
        os.close(fd)
    _rebuild_stdio(r["stdio"], unbuffered=r["unbuffered"])
    os.environ.clear()
    os.environ.update(r["env"])
    time.tzset()
    os.umask(r["umask"])
    sys.path[:] = r["sys_path"]
    sys.argv[:] = r["sys_argv"]
    for name in [n for n in sys.modules if n == "segbench" or n.startswith("segbench.")]:
        del sys.modules[name]  # the command imports segbench fresh, from the client's sys.path
    importlib.invalidate_caches()
    _fresh_main_module(r["main_file"])
    _reseed()
    threading.Thread(
        target=_watchdog, args=(lifeline,), name="zygote-watchdog", daemon=True
    ).start()
    interrupted = False
    try:
        main = importlib.import_module(r["module"])
        for part in r["qualname"].split("."):
            main = getattr(main, part)
        status = _exit_status(main(r["argv"]))
    except SystemExit as exc:
        status = _exit_status(exc.code)
    except BaseException as exc:
        tb = exc.__traceback__.tb_next  # the traceback starts at the command, not here
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        status, interrupted = 1, isinstance(exc, KeyboardInterrupt)
    _exit(status, interrupted=interrupted)


def _exit_status(code: object) -> int:
    """The status ``sys.exit(code)`` ends a plain interpreter with (a non-int code is printed)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _exit(status: int, *, interrupted: bool) -> NoReturn:
    """End the child as the interpreter ends: wait for non-daemon threads, run atexit handlers,
    collect garbage, flush stdio (status 120 if that fails), die of SIGINT after an uncaught
    KeyboardInterrupt. Unlike the interpreter it does not then tear down every module: in a
    child that would touch (and so copy) every page of the preloaded libraries, ~0.6 s after
    even a trivial command. Objects still referenced from module globals at exit are therefore
    not finalized, as in multiprocessing's forked children (Python never promised it)."""
    import atexit
    import gc

    threading._shutdown()  # what the interpreter calls: joins threads, concurrent.futures too
    atexit._run_exitfuncs()
    gc.collect()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            status = 120
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(status)


def _rebuild_stdio(stdio: list, *, unbuffered: bool) -> None:
    """New ``sys.stdin/stdout/stderr`` on fds 0, 1, 2, made as CPython makes them at start-up:
    line-buffered if a tty (stderr always), write-through under -u / PYTHONUNBUFFERED."""
    streams = []
    for fd, (encoding, errors), name in zip(
        (0, 1, 2), stdio, ("<stdin>", "<stdout>", "<stderr>"), strict=True
    ):
        write = fd != 0
        buffered = not (write and unbuffered)
        mode = "wb" if write else "rb"
        buf = open(fd, mode, buffering=-1 if buffered else 0, closefd=False)  # noqa: SIM115
        raw = buf.raw if buffered else buf
        raw.name = name
        line_buffering = not unbuffered and (raw.isatty() or fd == 2)
        text = io.TextIOWrapper(
            buf, encoding, errors, newline="\n", line_buffering=line_buffering,
            write_through=unbuffered,
        )  # fmt: skip
        text.mode = "w" if write else "r"
        streams.append(text)
    sys.stdin, sys.stdout, sys.stderr = streams
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = streams


def _fresh_main_module(main_file: str | None) -> None:
    """A ``__main__`` like the client's (multiprocessing's spawn re-runs it in its workers)."""
    import types

    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = __builtins__
    if main_file is not None:
        module.__file__ = main_file
    sys.modules["__main__"] = module


def _reseed() -> None:
    """Reseed what a fresh process seeds from OS entropy at import (``random`` is reseeded by
    CPython at fork); otherwise every child would draw the zygote's numbers."""
    if "numpy.random" in sys.modules:
        sys.modules["numpy.random"].seed()
    if "torch" in sys.modules and hasattr(sys.modules["torch"], "default_generator"):
        sys.modules["torch"].default_generator.seed()  # CPU only: CUDA stays untouched


def _read_line(fd: int) -> bytes:
    """Bytes from ``fd`` up to a newline or EOF (blocking)."""
    line = b""
    while not line.endswith(b"\n") and (chunk := os.read(fd, 1)):
        line += chunk
    return line


def _watchdog(lifeline: int) -> None:
    """End the child's process group once the client is gone (EOF: it died, e.g. SIGKILL)."""
    try:
        while os.read(lifeline, 64):
            pass
    except OSError:
        pass
    group = os.getpgid(0)
    os.killpg(group, signal.SIGTERM)
    time.sleep(WATCHDOG_GRACE_SECONDS)
    os.killpg(group, signal.SIGKILL)


# --- command line ---------------------------------------------------------------------------


def _ask(sock_path: Path, command: str) -> str | None:
    """Send ``command`` to the zygote at ``sock_path``; its reply line, or None if none listens."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(HANDSHAKE_SECONDS)
            sock.connect(str(sock_path))
            sock.sendall(f"{command}\n".encode())
            return sock.makefile("rb").readline().decode().strip() or None
    except OSError:
        return None


class _Lock(NamedTuple):
    """What a key's lock file says: whether a zygote holds it, and the last ``<pid> <state>``
    written (state: ``starting``, ``serving``, ``failed``, ``stopped`` or ``""``), how many
    seconds ago."""

    held: bool
    pid: int
    state: str
    age: float


def _probe_lock(sock_path: Path) -> _Lock:
    """Read ``sock_path``'s lock file, taking the lock for a moment only. If nobody held it, a
    socket file there is a dead zygote's, and is removed: a live zygote holds the lock from
    before it binds until after it removes its socket."""
    try:
        fd = os.open(sock_path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return _Lock(True, 0, "", 0.0)  # cannot tell: act as if one were starting
    try:
        held = not _try_lock(fd)
        if not held:
            sock_path.unlink(missing_ok=True)
        pid, state = _read_state(fd)
        return _Lock(held, pid, state, time.time() - os.fstat(fd).st_mtime)
    except OSError:
        return _Lock(True, 0, "", 0.0)
    finally:
        os.close(fd)  # and with it our lock, if we took it


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_state(fd: int) -> tuple[int, str]:
    words = os.pread(fd, 64, 0).decode("ascii", "replace").split()
    pid = int(words[0]) if words and words[0].isdigit() else 0
    return pid, words[1] if len(words) > 1 else ""


def _write_state(fd: int, state: str) -> None:
    os.ftruncate(fd, 0)
    if state:
        os.pwrite(fd, f"{os.getpid()} {state}\n".encode(), 0)


def _forget_state(sock_path: Path) -> None:
    """Clear a key's recorded state (a failed start), so that the next client tries again."""
    with contextlib.suppress(OSError):
        fd = os.open(sock_path.with_suffix(".lock"), os.O_WRONLY | os.O_CLOEXEC)
        _write_state(fd, "")
        os.close(fd)


def _is_zygote(pid: int, key: str) -> bool:
    """Whether ``pid`` is the zygote for ``key`` (not a process that reused a stale pid)."""
    cmdline = _read_text(f"/proc/{pid}/cmdline") or ""
    return cmdline.split("\0")[-3:] == ["serve", key, ""]


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def main(argv: list[str] | None = None) -> int:
    """``serve <key>`` (started by clients), ``status``, ``stop``."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["serve"] and len(args) == 2:
        job = _serve(args[1])
        if job is not None:
            _become_command(job)
        return 0
    if args not in (["status"], ["stop"]):
        print("usage: python -m segbench.zygote status|stop", file=sys.stderr)
        return 2
    try:
        directory = socket_dir()
    except _InProcess as why:
        print(f"error: {why}", file=sys.stderr)
        return 1
    keys = {p.name.split(".")[0].removeprefix("zygote-") for p in directory.glob("zygote-*.*")}
    for key in sorted(keys):
        if line := _status_or_stop(directory, key, stop=args[0] == "stop"):
            print(f"{key}: {line}")
    return 0


def _status_or_stop(directory: Path, key: str, *, stop: bool) -> str | None:
    """Ask (or stop) the zygote ``key`` in ``directory``: one line on what it is or what was
    done, None if there is nothing (left from an earlier zygote) to tell."""
    sock_path, _, log_path = _paths(directory, key)
    stale = sock_path.exists()
    reply = _ask(sock_path, "stop" if stop else "status") if stale else None
    if reply is not None and not stop:
        s = json.loads(reply)
        return f"pid {s['pid']}, up {s['uptime']} s, running {s['children']}, log {s['log']}"
    if reply is not None:
        return reply
    lock = _probe_lock(sock_path)  # removes a stale socket
    if lock.held and stop and _is_zygote(lock.pid, key):
        os.kill(lock.pid, signal.SIGTERM)  # still importing: nothing to finish
        _forget_state(sock_path)
        return f"stopped pid {lock.pid}, which was starting"
    if lock.held:
        return f"starting (pid {lock.pid or '?'})"
    if lock.state in ("starting", "failed") and stop:
        _forget_state(sock_path)
        return f"forgot the failed start of pid {lock.pid} (log {log_path})"
    if lock.state in ("starting", "failed"):
        return f"failed to start {lock.age:.0f} s ago (pid {lock.pid}, log {log_path})"
    return "stale socket removed" if stale else None


if __name__ == "__main__":
    sys.exit(main())
