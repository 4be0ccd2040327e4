"""Where a stage process's time goes: written only when ``SEGBENCH_TIMINGS`` names a file.

``benchmarks/fresh_clone.py`` sets it for ``make run`` and reads one JSON line per process:

- ``{"kind": "client", ...}`` from the stage script's own process (the one DVC started): its
  command line, its start (the kernel's process start time, so interpreter start-up counts)
  and its end;
- ``{"kind": "command", ...}`` from the process that ran the command (the same one, or the
  zygote's child, see :mod:`segbench.zygote`): the seconds spent in each :func:`phase`,
  exclusive of the phases nested in it (``compute``: the stage's pipeline function;
  ``mlflow``: MLflow calls inside or outside it).

Everything else in a client's span (interpreter start, imports, handing over to the zygote) is
what the benchmark reports as outside compute. Stdlib only, cheap to import.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ENV = "SEGBENCH_TIMINGS"
_CLIENT_ENV = "SEGBENCH_TIMINGS_CLIENT"  # the client's pid, handed to the command's process

_totals: dict[str, float] = {}
_stack: list[list] = []  # [name, started at, time paused by nested phases]
_registered = False


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def process_start() -> float:
    """This process's start, as a Unix time (Linux: from /proc, to 10 ms; elsewhere: now)."""
    try:
        # Field 22 of /proc/self/stat (after the parenthesised command name): the start, in
        # clock ticks since boot. Measured back from now on the boot clock (btime in /proc/stat
        # is whole seconds: up to a second off).
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        since_start = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - since_start
    except (OSError, ValueError, IndexError, AttributeError):
        return time.time()


def _write(record: dict) -> None:
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(os.environ[ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one write per line: processes side by side do not interleave
    finally:
        os.close(fd)


def client() -> None:
    """Record this process as a stage's client (its start now, its end at exit)."""
    if not enabled():
        return
    start = process_start()
    os.environ[_CLIENT_ENV] = str(os.getpid())
    atexit.register(
        lambda: _write(
            {"kind": "client", "pid": os.getpid(), "argv": sys.argv, "start": start,
             "end": time.time()}
        )
    )  # fmt: skip


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Count the block's wall time as ``name`` (less the phases nested in it)."""
    if not enabled():
        yield
        return
    global _registered
    if not _registered:
        _registered = True
        atexit.register(_write_command)
    now = time.perf_counter()
    if _stack:
        _stack[-1][2] -= now  # the enclosing phase pauses from now ...
    _stack.append([name, now, 0.0])
    try:
        yield
    finally:
        name, started, paused = _stack.pop()
        end = time.perf_counter()
        _totals[name] = _totals.get(name, 0.0) + end - started - paused
        if _stack:
            _stack[-1][2] += end  # ... until now


def _write_command() -> None:
    _write(
        {
            "kind": "command",
            "pid": os.getpid(),
            "client": int(os.environ.get(_CLIENT_ENV, os.getpid())),
            "argv": sys.argv,
            "phases": _totals,
        }
    )
