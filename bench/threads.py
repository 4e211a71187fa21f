"""How many torch threads to use: the cores that are free now, not all of them.

Two torch threads on two cores that another process keeps busy spend most of their time waiting for
each other (OpenMP spin-waits): FG-SSL's smoke run took 54-81 s instead of 22 s at one thread. So
unless told (``--threads N`` or ``OMP_NUM_THREADS``), a run measures how busy the cores are over a
quarter of a second and takes the free ones, saying so in one line when that is fewer than all.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError

SAMPLE_SECONDS = 0.25
PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    source: str  # "--threads", "OMP_NUM_THREADS" or "free cores"
    cores: int
    busy_cores: float | None = None  # measured, for "free cores"

    @property
    def note(self) -> str | None:
        """One line for the user when the machine is busy and fewer threads than cores were chosen."""
        if self.source != "free cores" or self.threads >= self.cores:
            return None
        return (
            f"bench: {self.busy_cores:.1f} of {self.cores} cores are busy: using {self.threads} torch thread(s) "
            "(--threads N to choose)"
        )


def choose_threads(requested: int | None, environ: dict[str, str] | None = None) -> ThreadChoice:
    """``--threads`` if given, else ``OMP_NUM_THREADS`` if set, else the cores free right now (at least 1)."""
    env = os.environ if environ is None else environ
    cores = available_cores()
    if requested is not None:
        if requested < 1:
            raise BenchError(f"--threads must be at least 1, got {requested}")
        return ThreadChoice(requested, "--threads", cores)
    if env.get("OMP_NUM_THREADS", "").strip().isdigit() and int(env["OMP_NUM_THREADS"]) >= 1:
        return ThreadChoice(int(env["OMP_NUM_THREADS"]), "OMP_NUM_THREADS", cores)
    busy = busy_cores(cores)
    return ThreadChoice(free_threads(cores, busy), "free cores", cores, busy)


def free_threads(cores: int, busy: float) -> int:
    """Cores not busy, rounded to the nearest whole core, at least 1 and at most ``cores``."""
    return max(1, min(cores, int(cores - busy + 0.5)))


def available_cores() -> int:
    """The cores this process may run on (a container's or taskset's limit, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def busy_cores(cores: int, seconds: float = SAMPLE_SECONDS) -> float:
    """How many of ``cores`` other work kept busy over ``seconds``: from /proc/stat where it exists (it
    sees a process that started a moment ago), else from the one-minute load average."""
    if not PROC_STAT.is_file():
        return min(float(cores), os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0.0
    busy_before, total_before = _cpu_ticks()
    time.sleep(seconds)
    busy_after, total_after = _cpu_ticks()
    machine_cores = os.cpu_count() or cores
    share = (busy_after - busy_before) / max(1, total_after - total_before)
    return min(float(cores), share * machine_cores)


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot, from the first line of /proc/stat."""
    fields = [int(v) for v in PROC_STAT.read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])
