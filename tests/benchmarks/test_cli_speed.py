"""How fast the command line answers ``--help`` and a mistyped flag, as a ratio to a bare interpreter
(``python -c pass``) measured in the same run, so the figure survives a busy machine.

Both are read as the child process's CPU seconds (user + system, ``RUSAGE_CHILDREN``): the suite's timer
is the parent's process time, which a subprocess does not move. Target: at most 3x a bare interpreter
start (about 0.1 s: well under a second on a quiet machine); before the parser stopped importing torch
and MLflow, ``bench --help`` cost about 5 s of CPU."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

MAX_RATIO = 3.0
ROUNDS = 10


def child_cpu_seconds(argv: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, *argv], capture_output=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@pytest.fixture(scope="module")
def bare_interpreter_seconds() -> float:
    return min(child_cpu_seconds(["-c", "pass"]) for _ in range(ROUNDS))


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["run", "--no-such-flag"]], ids=" ".join)
def test_help_answers_within_a_few_interpreter_starts(benchmark, bare_interpreter_seconds, argv):
    samples: list[float] = []
    benchmark.pedantic(lambda: samples.append(child_cpu_seconds(["-m", "bench", *argv])), rounds=ROUNDS, iterations=1)
    ratio = min(samples) / bare_interpreter_seconds
    benchmark.extra_info.update(
        {"cpu_s": min(samples), "bare_interpreter_cpu_s": bare_interpreter_seconds, "ratio": ratio}
    )
    print(f"bench {' '.join(argv)}: {min(samples):.3f} CPU s, {ratio:.2f}x python -c pass")
    assert ratio <= MAX_RATIO
