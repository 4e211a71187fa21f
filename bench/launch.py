"""Starting the processes of one run: ``bench run --nproc N`` re-runs itself as N ``torchrun``
processes on this machine (bench/process_group.py is what runs inside each of them)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch


def torchrun_executable() -> list[str]:
    """The ``torchrun`` of this interpreter's environment (beside ``sys.executable``), else the same
    launcher as ``python -m torch.distributed.run``."""
    candidate = Path(sys.executable).parent / ("torchrun.exe" if os.name == "nt" else "torchrun")
    return [str(candidate)] if candidate.is_file() else [sys.executable, "-m", "torch.distributed.run"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it), for a local rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def torchrun_command(nproc: int, program: Sequence[str], *, port: int | None = None) -> list[str]:
    """A single-machine ``torchrun`` command line for ``nproc`` processes rendezvousing on 127.0.0.1.

    ``program`` is what torchrun runs: a script and its arguments, or ``["-m", module, ...]``.
    """
    if nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {nproc}")
    return [
        *torchrun_executable(),
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(nproc),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(port if port is not None else free_port()),
        *program,
    ]


def under_torchrun() -> bool:
    """Whether this process is one of several that torchrun started (so it must not launch again)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def without_option(argv: Sequence[str], option: str) -> list[str]:
    """``argv`` without ``option VALUE`` and ``option=VALUE``: the command a launcher hands to its
    processes, which must not launch processes themselves."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            kept.append(arg)
    return kept


def launch(nproc: int, bench_argv: Sequence[str], *, threads: int | None = None) -> int:
    """What ``bench run --nproc N ...`` runs: ``bench ...`` again (``bench_argv``, without ``--nproc``)
    as ``nproc`` torchrun processes on this machine; returns torchrun's exit code (0: every rank did).

    The parent's torch threads (``threads``, else ``OMP_NUM_THREADS`` or the cores) are split evenly
    between the processes, as ``--workers`` does. On Ctrl-C (which torchrun and its workers receive
    too) it asks torchrun to stop its workers and waits for that, so none is left behind.
    """
    budget = threads if threads is not None else torch.get_num_threads()
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, budget // nproc))}
    process = subprocess.Popen(torchrun_command(nproc, ["-m", "bench", *bench_argv]), env=env)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGTERM)  # torchrun forwards it to every worker
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise
