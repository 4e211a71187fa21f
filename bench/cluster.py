"""Joining a Ray cluster for ``--ray ADDRESS``: every way it can fail is one line and exit 2, before
anything is submitted (Ray missing, no cluster at the address, more CPUs or GPUs per run than any
node has, which Ray would otherwise wait for forever)."""

from __future__ import annotations

import socket
from types import ModuleType

from bench.errors import BenchError

INSTALL_HINT = "pip install -e '.[ray]'"
CONNECT_TIMEOUT_SECONDS = 5


def import_ray() -> ModuleType:
    """Ray is an optional extra; without it ``--ray`` says how to get it."""
    try:
        import ray
    except ImportError:
        raise BenchError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def check_request(cpus: float, gpus: float) -> None:
    """Per-run resources, before the cluster is even asked."""
    if cpus <= 0:
        raise BenchError(f"--cpus-per-run must be positive, got {cpus}")
    if gpus < 0:
        raise BenchError(f"--gpus-per-run must be 0 or more, got {gpus}")


def connect(address: str) -> ModuleType:
    """``local`` starts a one-machine cluster in this process; ``auto`` joins the cluster started on this
    machine (``ray start``); ``host:port`` joins the cluster whose head listens there. A ``host:port``
    that does not answer is refused at once (Ray itself retries it for minutes)."""
    ray = import_ray()
    check_address(address)
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=True, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise BenchError(f"cannot join the Ray cluster at {address!r} ({first}); start it with `ray start`") from None
    return ray


def check_address(address: str) -> None:
    """A ``host:port`` that nothing listens on, refused in seconds (Ray itself retries it for minutes)."""
    if address in ("auto", "local"):
        return
    host, _, port = address.rpartition(":")
    host = host.removeprefix("ray://")
    if not host or not port.isdigit():
        raise BenchError(f"--ray takes auto, local or HOST:PORT (the head node's GCS address), got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_SECONDS):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise BenchError(
            f"Ray cluster {address} is unreachable ({reason.lower()}); start its head with `ray start --head`"
        ) from None


def check_fits(ray: ModuleType, cpus: float, gpus: float) -> None:
    """A run must fit on one node: Ray would keep a task that fits nowhere pending without end."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    if gpus > 0 and not any(node.get("GPU", 0) for node in nodes):
        raise BenchError(f"--gpus-per-run {gpus:g} asked for, but no node of the Ray cluster has a GPU")
    if not any(node.get("CPU", 0) >= cpus and node.get("GPU", 0) >= gpus for node in nodes):
        most = max((node.get("CPU", 0) for node in nodes), default=0)
        raise BenchError(
            f"no node of the Ray cluster has {cpus:g} CPU(s) and {gpus:g} GPU(s) for one run (largest: {most:g} CPUs)"
        )
