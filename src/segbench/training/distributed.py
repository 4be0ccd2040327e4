"""Several processes training one model: where this process stands (:class:`Dist`), joining
the process group, and ``train.devices > 1``: running ``segbench train`` as that many local DDP
processes (:func:`launch_local`).

This replaces ``torchrun --standalone`` for one machine because torchrun's rendezvous store (a
PyTorch TCPStore) listens on every interface whatever address it is given (measured with ``ss``),
and segbench's servers bind to 127.0.0.1. Here the processes meet through a file
(``torch.distributed.FileStore`` in a private temporary directory) and Gloo/NCCL are told to use
the loopback interface, so nothing listens beyond 127.0.0.1. Several machines still need
``torchrun`` (see README): :func:`segbench.training.train` reads the same environment
variables.

Each process gets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE`` and
``SEGBENCH_DIST_STORE`` (the store file). As with torchrun, the first process to fail stops the
others, and its exit status is the launcher's.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

STORE_ENV = "SEGBENCH_DIST_STORE"
LOOPBACK = "lo0" if sys.platform == "darwin" else "lo"


@dataclass(frozen=True)
class Dist:
    """This process's place in a DDP job (world 1 when not under torchrun or launch_local)."""

    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> Dist:
        return cls(
            int(os.environ.get("RANK", 0)),
            int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)),
        )

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(dist: Dist, device) -> None:
    """Join the process group (NCCL on CUDA, Gloo on CPU) when there is more than one process.

    :func:`launch_local` hands over a store file (nothing listens beyond loopback); under
    torchrun, its env:// rendezvous is used.
    """
    import torch
    import torch.distributed as td

    if dist.world > 1 and not td.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        store = os.environ.get(STORE_ENV)
        td.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            init_method=f"file://{store}" if store else "env://",
            rank=dist.rank,
            world_size=dist.world,
        )


def launch_local(devices: int, argv: list[str], *, grace_s: float = 10.0) -> int:
    """Run ``python -m segbench.cli *argv`` in ``devices`` processes; their exit status.

    0 when every process succeeds; otherwise the status of the first one to fail (the others
    are sent SIGTERM, then killed after ``grace_s`` seconds).
    """
    tmp = Path(tempfile.mkdtemp(prefix="segbench-ddp-"))
    env = dict(os.environ)
    # The user's choice wins: a machine whose GPUs talk over another interface can say so.
    env.setdefault("GLOO_SOCKET_IFNAME", LOOPBACK)
    env.setdefault("NCCL_SOCKET_IFNAME", LOOPBACK)
    env.update(WORLD_SIZE=str(devices), LOCAL_WORLD_SIZE=str(devices))
    env[STORE_ENV] = str(tmp / "store")
    procs: list[subprocess.Popen] = []
    previous = signal.signal(signal.SIGTERM, _raise_exit)  # a killed launcher takes its workers
    try:
        for rank in range(devices):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "segbench.cli", *argv],
                    env=env | {"RANK": str(rank), "LOCAL_RANK": str(rank)},
                )
            )
        return _wait(procs)
    finally:
        _stop(procs, grace_s)
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(tmp, ignore_errors=True)


def _wait(procs: list[subprocess.Popen]) -> int:
    while True:
        codes = [p.poll() for p in procs]
        failed = [c for c in codes if c not in (None, 0)]
        if failed:
            return failed[0]
        if all(c == 0 for c in codes):
            return 0
        time.sleep(0.2)


def _stop(procs: list[subprocess.Popen], grace_s: float) -> None:
    alive = [p for p in procs if p.poll() is None]
    for p in alive:
        p.terminate()
    deadline = time.monotonic() + grace_s
    for p in alive:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)
