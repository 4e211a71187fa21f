"""The GPU benchmark (``tox -e bench-gpu``): every test needs the ``cuda`` fixture, which skips it with
the reason where there is no CUDA device, so the suite passes (all skipped) on CPU-only machines.

Options, when pytest is given this folder: ``--plan`` runs only the GPU-hours estimate of
``bench reproduce --scale paper``; ``--gpu-batch N`` trains at batch N instead of the paper preset's
(a GPU with too little memory for 2 x 200 views of ResNet-50 at 224 px).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch
from gpu_rates import Scale, synchronize, timed

from bench.devices import mixed_precision

PLAN_TEST = "test_plan"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bench-gpu")
    group.addoption("--plan", action="store_true", help="only print the estimated GPU-hours of the paper's protocol")
    group.addoption("--gpu-batch", type=int, help="SSL batch size to time (default: the paper preset's)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("plan", default=False):
        chosen = [item for item in items if item.originalname == PLAN_TEST]
        config.hook.pytest_deselected(items=[item for item in items if item not in chosen])
        items[:] = chosen


@pytest.fixture(scope="session")
def cuda() -> torch.device:
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA support"
        pytest.skip(
            f"no CUDA device: torch.cuda.is_available() is False (torch {torch.__version__}, built with {build}); "
            "this benchmark measures the GPU path, the CPU's is tests/benchmarks (tox -e bench)"
        )
    return torch.device("cuda")


@pytest.fixture(scope="session")
def scale(request: pytest.FixtureRequest, cuda: torch.device) -> Scale:
    return Scale.paper(batch=request.config.getoption("gpu_batch", default=None))


@pytest.fixture(scope="session")
def measured() -> dict[str, float]:
    """SSL training images/s per method, filled by the tests and read by the plan at the end."""
    return {}


class GpuBench:
    """A subject timed by pytest-benchmark and a reference timed in its setup hook, round by round on
    the same GPU, each call ending with the GPU idle; ratios use medians."""

    def __init__(self, benchmark: Any, device: torch.device) -> None:
        self.benchmark, self.device = benchmark, device
        self.timer: Callable[[], float] = getattr(benchmark, "_timer", time.perf_counter)

    def interleaved(
        self, subject: Callable[[], Any], reference: Callable[[], Any], rounds: int = 5, warmup: int = 2
    ) -> tuple[float, float]:
        """(subject, reference) median seconds per call."""
        times: list[float] = []
        calls = 0
        timed_reference = timed(reference, self.device)

        def setup() -> None:
            nonlocal calls
            calls += 1
            synchronize(self.device)
            start = self.timer()
            timed_reference()
            if calls > warmup:
                times.append(self.timer() - start)

        self.benchmark.pedantic(timed(subject, self.device), setup=setup, rounds=rounds, warmup_rounds=warmup)
        if self.benchmark.stats is None:
            pytest.skip("benchmarks disabled: no timing to compare")
        return self.benchmark.stats.stats.median, statistics.median(times)

    def alone(self, subject: Callable[[], Any], rounds: int = 5, warmup: int = 2) -> float:
        self.benchmark.pedantic(timed(subject, self.device), rounds=rounds, warmup_rounds=warmup)
        if self.benchmark.stats is None:
            pytest.skip("benchmarks disabled: no timing to compare")
        return self.benchmark.stats.stats.median

    def report(self, label: str, value: float, target: str, details: str = "", **extra: float) -> None:
        info = self.benchmark.extra_info
        info.update(extra, value=value, target=target, device=torch.cuda.get_device_name(self.device))
        info["autocast"] = str(mixed_precision(self.device)).removeprefix("torch.")
        print(f"\nGPU {label}: {value:.3g} (target {target}; {info['device']}, {info['autocast']}) {details}")


@pytest.fixture
def gpu_bench(benchmark: Any, cuda: torch.device) -> GpuBench:
    return GpuBench(benchmark, cuda)
