"""Shared fixtures: where the real third-party data lives (tests using it skip when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

# One intra-op thread per test process (and the bench processes tests start): two cores shared by a
# test runner and its subprocesses otherwise spend most of their time in OpenMP spin-waits.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``$BENCH_SHARED_DATA``, else ``<repo root>/../shared/data``; skips the test when absent."""
    repo_root = Path(__file__).resolve().parents[1]
    root = Path(os.environ.get("BENCH_SHARED_DATA") or repo_root.parent / "shared" / "data")
    if not root.is_dir():
        pytest.skip(f"real data not found at {root}; set BENCH_SHARED_DATA to the shared data folder to run this test")
    return root
