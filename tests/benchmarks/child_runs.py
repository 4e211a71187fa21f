"""Real ``bench`` subprocesses for the benchmarks that measure a whole run (fixed cost, memory).

The numbers come from the kernel (``wait4`` resource usage, /proc samples), not from the run's own logs,
so they include everything the process does: interpreter start, imports, data, MLflow, evaluation.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ChildRun:
    """What a finished ``bench`` subprocess cost, read from the kernel rather than from its own logs."""

    returncode: int
    wall: float  # seconds, start to exit, on this process's clock
    cpu: float  # user + system seconds of the child and the descendants it waited for
    max_rss: int  # bytes: the kernel's high-water mark of the largest single process (wait4)
    tree_rss_peak: int  # bytes: the largest sampled sum of RSS over the child's whole process tree
    mapped: set[str]  # paths the child had memory-mapped at some sample (only those matching map_filter)
    stdout: str
    stderr: str

    def check(self) -> ChildRun:
        assert self.returncode == 0, f"bench exited with {self.returncode}:\n{self.stderr[-3000:]}"
        return self


def bench_command(*args: str) -> list[str]:
    """``python -m bench`` with this interpreter, so tox, a venv and a bare checkout run the same code."""
    return [sys.executable, "-m", "bench", *args]


def run_child(
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    timeout: float,
    map_filter: str | None = None,
    sample_every: float = 0.2,
) -> ChildRun:
    """Run ``argv`` to completion, sampling its process tree's memory from /proc while it runs.

    The child is reaped with ``os.wait4`` so its own resource usage (CPU seconds, peak RSS) is read
    exactly, not mixed with earlier children as ``getrusage(RUSAGE_CHILDREN)`` would be. Sampling the
    tree catches worker processes (the decode pool) whose memory adds to the run's own.
    """
    out, err = cwd / "child.stdout", cwd / "child.stderr"
    started = time.perf_counter()
    with out.open("w") as stdout, err.open("w") as stderr:
        child = subprocess.Popen(argv, cwd=cwd, env=env, stdout=stdout, stderr=stderr)
    tree_peak, mapped = 0, set()
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
            break
        tree_peak = max(tree_peak, sum(_rss_bytes(p) for p in _process_tree(child.pid)))
        if map_filter is not None:
            mapped |= _mapped_files(child.pid, map_filter)
        if time.perf_counter() - started > timeout:
            child.kill()
            child.wait()
            raise TimeoutError(f"{' '.join(argv)} still running after {timeout:.0f} s")
        time.sleep(sample_every)
    wall = time.perf_counter() - started
    return ChildRun(
        child.returncode,
        wall,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss * 1024,
        max(tree_peak, usage.ru_maxrss * 1024),
        mapped,
        out.read_text(),
        err.read_text(),
    )


def _process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants, from the parent pids in /proc/*/stat."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def _rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def _mapped_files(pid: int, pattern: str) -> set[str]:
    try:
        lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:
        return set()
    return {line.split(maxsplit=5)[5] for line in lines if pattern in line and len(line.split(maxsplit=5)) == 6}


def child_env(tmp: Path, threads: int = 1, **extra: str) -> dict[str, str]:
    """The environment of a benchmarked ``bench`` subprocess: fixed thread count, private cache."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), BENCH_CACHE_DIR=str(tmp / "cache"), **extra)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env
