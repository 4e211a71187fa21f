"""The slow suite's two workers (.ci/run: ``-n 2 --dist loadgroup``) keep the multi-process tests on one
worker. pytest-xdist drops the grouping silently when it and pytest disagree (pytest-xdist#1386 on pytest
9.2), and CI would then run two of those tests side by side on two cores: this runs a real xdist session
over quick tests of grouped modules and checks where each ran."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICK_GROUPED = ["tests/test_workers.py", "tests/test_process_faults.py"]  # grouped in tests/conftest.py
QUICK = "threads_are_split or in_memory_store"  # default tests of those modules that take a second each


def test_multiprocess_tests_run_on_one_worker_under_loadgroup():
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-k", QUICK, *QUICK_GROUPED],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    ran = re.findall(r"^\[(gw\d+)\] \[\s*\d+%\] PASSED (\S+)\s*$", result.stdout, flags=re.MULTILINE)
    assert len(ran) == 3, result.stdout[-3000:]
    assert all(test_id.endswith("@multiprocess") for _, test_id in ran), ran
    assert len({worker for worker, _ in ran}) == 1, ran
