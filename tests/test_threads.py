"""The thread choice: what the user asked for wins; otherwise the cores another process leaves free."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.errors import BenchError
from bench.threads import ThreadChoice, busy_cores, choose_threads, free_threads


@pytest.mark.parametrize(
    ("cores", "busy", "expected"), [(2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.9, 1), (8, 3.2, 5)]
)
def test_free_threads_rounds_the_idle_cores_and_keeps_at_least_one(cores, busy, expected):
    assert free_threads(cores, busy) == expected


def test_what_the_user_asked_for_wins():
    assert choose_threads(3, {"OMP_NUM_THREADS": "1"}).threads == 3
    choice = choose_threads(None, {"OMP_NUM_THREADS": "1"})
    assert (choice.threads, choice.source, choice.note) == (1, "OMP_NUM_THREADS", None)
    with pytest.raises(BenchError, match="--threads must be at least 1, got 0"):
        choose_threads(0, {})


def test_a_busy_machine_is_said_in_one_line():
    note = ThreadChoice(1, "free cores", 2, 1.3).note
    assert note is not None and "\n" not in note and "1.3 of 2 cores are busy: using 1 torch thread" in note
    assert ThreadChoice(2, "free cores", 2, 0.1).note is None


def test_a_spinning_process_is_seen_as_a_busy_core():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert busy_cores(cores=2, seconds=0.5) >= 0.6
    finally:
        spinner.kill()
        spinner.wait()
