"""Commands for tests/test_zygote.py to run through :func:`segbench.zygote.run_stage`.

Each is a module-level ``main(argv)`` as a stage's would be; what they print is read by the
tests, so the formats are fixed: ``report`` prints one line of JSON.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def report(argv: list[str]) -> None:
    """One JSON line on stdout: who ran the command and in which surroundings."""
    print(
        json.dumps(
            {
                "pid": os.getpid(),
                "ppid": os.getppid(),
                "pgid": os.getpgid(0),
                "argv": argv,
                "sys_argv": sys.argv,
                "cwd": os.getcwd(),
                "var": os.environ.get("ZYGOTE_TEST_VAR"),
                "stdout_tty": sys.stdout.isatty(),
                "stdout_line_buffering": sys.stdout.line_buffering,
                "stderr_line_buffering": sys.stderr.line_buffering,
                "umask": _umask(),
                "sigint": str(signal.getsignal(signal.SIGINT)),
                "sigterm": str(signal.getsignal(signal.SIGTERM)),
                "sigpipe": str(signal.getsignal(signal.SIGPIPE)),
                "main_file": getattr(sys.modules["__main__"], "__file__", None),
                "segbench": sys.modules["segbench"].__file__ if "segbench" in sys.modules else None,
            }
        )
    )
    print("to stderr", file=sys.stderr)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def echo_stdin(argv: list[str]) -> None:
    """Copy stdin to stdout, upper-cased."""
    sys.stdout.write(sys.stdin.read().upper())


def exit_with(argv: list[str]) -> object:
    """``int N``: return N; ``message M``: sys.exit(M); ``raise``: an uncaught error;
    ``signal S``: kill itself with signal S."""
    kind, value = argv
    print(f"exiting with {kind} {value}")
    if kind == "int":
        return int(value)
    if kind == "message":
        sys.exit(value)
    if kind == "raise":
        raise RuntimeError(value)
    if kind == "interrupt":
        raise KeyboardInterrupt
    if kind == "signal":
        sys.stdout.flush()
        os.kill(os.getpid(), int(value))
        time.sleep(60)
    raise ValueError(kind)


def shutdown_order(argv: list[str]) -> None:
    """Leave a non-daemon thread, an executor never shut down and an atexit handler behind;
    each prints a line (the interpreter joins the thread and the executor, then runs atexit)."""
    import atexit
    import threading
    from concurrent.futures import ThreadPoolExecutor

    atexit.register(print, "atexit handler ran")
    threading.Thread(target=lambda: (time.sleep(0.2), print("thread finished"))).start()
    ThreadPoolExecutor(1).submit(lambda: (time.sleep(0.1), print("executor job finished")))
    print("command returned")


def wait_for_interrupt(argv: list[str]) -> int:
    """Write ``<dir>/ready``, wait for Ctrl-C, then write ``<dir>/interrupted``; exit 130."""
    marker_dir = Path(argv[0])
    _write_atomically(marker_dir / "ready", str(os.getpid()))
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        _write_atomically(marker_dir / "interrupted", "yes")
        return 130
    return 0


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader polling for ``path`` never sees it empty."""
    path.with_suffix(".tmp").write_text(text)
    os.replace(path.with_suffix(".tmp"), path)


def sleep_with_subprocess(argv: list[str]) -> None:
    """Start a sleeping subprocess, write ``{"pid": ..., "sub": ...}`` to ``<argv[0]>``, sleep."""
    sub = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    _write_atomically(Path(argv[0]), json.dumps({"pid": os.getpid(), "sub": sub.pid}))
    time.sleep(60)


def progress(argv: list[str]) -> None:
    """A tqdm bar over three steps on stderr, with nothing time-dependent in its format."""
    from tqdm import tqdm

    for _ in tqdm(range(3), mininterval=0, bar_format="{l_bar}{bar:10}| {n_fmt}/{total_fmt}"):
        pass


def torch_op(argv: list[str]) -> None:
    """One JSON line: whether torch was preloaded, whether CUDA was initialised before this
    command touched torch, and a tiny tensor op's result."""
    preloaded = "torch" in sys.modules
    import torch

    cuda_initialised = torch.cuda.is_initialized()
    a = torch.arange(64 * 64, dtype=torch.float32).reshape(64, 64) / 4096
    value = float((a @ a.T).sum())
    print(
        json.dumps(
            {
                "ppid": os.getppid(),
                "preloaded": preloaded,
                "cuda_initialised": cuda_initialised,
                "value": round(value, 3),
                "seed": torch.initial_seed(),
            }
        )
    )
