"""Joining a Ray cluster (``RAY_ADDRESS``) or starting a local one, and checking that a trial's
resource request fits somewhere before any trial is queued.

A local Ray is started loopback-only: Ray binds its servers (GCS, raylets, workers) to the node
IP, and on Linux it refuses 127.0.0.1 as a node IP unless clusters are disabled for the process
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), which a one-machine Ray does not need. Checked with
``ss -ltn``: nothing listens beyond 127.0.0.1 then.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlparse

from segbench.errors import SegbenchError

CONNECT_TIMEOUT_S = 5.0
INIT_TIMEOUT_S = 90.0  # joining a cluster: Ray's own retries have no overall limit


def _host_port(address: str) -> tuple[str, int] | None:
    """``host:port`` of a Ray address (``10.0.0.1:6379``, ``ray://head:10001``); None for
    ``auto``/``local``, which Ray resolves itself."""
    if address in ("auto", "local"):
        return None
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    if parsed.hostname is None or parsed.port is None:
        raise SegbenchError(
            f"RAY_ADDRESS: {address!r} is not host:port (e.g. 127.0.0.1:6379 or ray://head:10001)"
        )
    return parsed.hostname, parsed.port


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fail within ``timeout_s`` if nothing accepts connections at ``address`` (Ray's own
    connection attempts retry for minutes before giving up)."""
    target = _host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout_s):
            pass
    except OSError as exc:
        raise SegbenchError(
            f"RAY_ADDRESS: cannot reach a Ray cluster at {address} within {timeout_s:g} s "
            f"({exc.strerror or exc}); start one with `ray start --head`, fix the address, or "
            "unset RAY_ADDRESS to run on a local Ray on this machine"
        ) from None


def _use_token_if_present() -> None:
    """Send the cluster token when there is one (``RAY_AUTH_TOKEN``, ``~/.ray/auth_token``), as
    ``ray start`` does for the head: a driver joining an address does not by itself (Ray 2.60),
    and a head started where a token exists requires it. ``RAY_AUTH_MODE``, if set, wins."""
    from ray._private.authentication.authentication_token_setup import (
        maybe_enable_token_auth_if_token_available,
    )

    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _is_loopback(address: str) -> bool:
    target = _host_port(address)
    return target is not None and (target[0] == "localhost" or target[0].startswith("127."))


@contextlib.contextmanager
def _deadline(seconds: float, message: str) -> Iterator[None]:
    """Raise a :class:`SegbenchError` if the block runs longer than ``seconds`` (main thread
    only: a SIGALRM timer; elsewhere the block runs unbounded)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise SegbenchError(
            f"{message} within {seconds:g} s; check that the address is the head's as seen from "
            "this machine (`ray status` on the head prints it) and that RAY_AUTH_TOKEN matches"
        )

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def local_cpus() -> int:
    """CPUs this process may use (its affinity, which containers and CI runners restrict)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


@contextlib.contextmanager
def ray_session(*, num_cpus: int | None = None, num_gpus: int | None = None) -> Iterator[str]:
    """Connect to ``RAY_ADDRESS`` or start a local, loopback-only Ray; yield a description.

    Always ``ray.shutdown()`` on the way out: a Ray left connected keeps the process (and a
    Prefect task around it) from exiting cleanly.
    """
    address = os.environ.get("RAY_ADDRESS")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home
    if address:
        check_reachable(address)
    loopback = not address or _is_loopback(address)
    if loopback:
        # Else Ray swaps 127.0.0.1 for this machine's network IP, where a loopback-only head
        # does not listen, and retries forever.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from ray._private import ray_constants

    if loopback:  # the variable is read once, when ray is first imported (maybe before now)
        ray_constants.ENABLE_RAY_CLUSTER = False

    try:
        if address:
            _use_token_if_present()
            with _deadline(INIT_TIMEOUT_S, f"RAY_ADDRESS: no Ray cluster answered at {address}"):
                try:
                    ray.init(address=address, log_to_driver=True)
                except ConnectionError as exc:
                    raise SegbenchError(
                        f"RAY_ADDRESS: could not join the Ray cluster at {address} ({exc}); a "
                        "cluster with token authentication needs its token in RAY_AUTH_TOKEN "
                        "(or ~/.ray/auth_token)"
                    ) from None
            where = f"the Ray cluster at {address}"
        else:
            if num_gpus is None:
                import torch

                num_gpus = torch.cuda.device_count()
            ray.init(
                address="local",  # a new Ray: never join one that `ray start` left running
                num_cpus=num_cpus or local_cpus(),
                num_gpus=num_gpus,
                include_dashboard=False,
                log_to_driver=True,
            )
            where = "a local Ray on this machine"
        yield where
    finally:
        ray.shutdown()


def check_fits(cpu: float, gpu: float) -> dict[str, float]:
    """Stop at once, with the numbers, if no alive node of the connected Ray can ever hold one
    trial (Ray would otherwise wait forever for resources that do not exist); return the
    cluster's totals."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    require_a_node_that_fits(nodes, cpu, gpu)
    total = ray.cluster_resources()
    return {"cpu": total.get("CPU", 0.0), "gpu": total.get("GPU", 0.0), "nodes": len(nodes)}


def require_a_node_that_fits(nodes: list[dict[str, float]], cpu: float, gpu: float) -> None:
    """A :class:`SegbenchError` with the numbers unless one of ``nodes`` (each Ray's
    ``{"CPU": .., "GPU": ..}`` resources) holds ``cpu`` CPUs and ``gpu`` GPUs."""
    fits = [n for n in nodes if n.get("CPU", 0) >= cpu and n.get("GPU", 0) >= gpu]
    if not fits:
        largest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
        raise SegbenchError(
            f"sweep.resources: each trial asks for {cpu:g} CPU and {gpu:g} GPU, but the "
            f"largest of the cluster's {len(nodes)} node(s) has {largest.get('CPU', 0):g} CPU "
            f"and {largest.get('GPU', 0):g} GPU; lower sweep.resources or add nodes"
        )
