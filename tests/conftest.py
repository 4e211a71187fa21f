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


# Modules whose tests start several training processes at once (torchrun, Ray nodes, `--workers`).
# .ci/run runs the slow suite on two pytest-xdist workers (`-n 2 --dist loadgroup`): these share one
# group, so they run one after another on one worker and never compete with each other for the cores.
MULTIPROCESS_MODULES = frozenset(
    {
        "test_ray_ddp",
        "test_ray_sweep",
        "test_process_faults",
        "test_distributed_trainer",
        "test_workers",
        "test_shared_sweep",
    }
)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the group into each test's id
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in MULTIPROCESS_MODULES:
            item.add_marker(pytest.mark.xdist_group("multiprocess"))
