"""Shared helpers for the ratio benchmarks: a subject and its reference timed in the same process.

Every benchmark here asserts a ratio, never an absolute time. The subject goes through
``benchmark.pedantic`` (so it lands in ``--benchmark-json``); the reference runs in pedantic's
``setup`` hook, i.e. interleaved round by round with the subject, so a change in machine load during
the test hits both sides alike. Ratios use medians; minima go to ``extra_info`` as well.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bench.devices import place
from bench.resolve import load_preset
from bench.schema import OptimConfig
from bench.trainer import Trainer
from methods import build_method
from methods.backbones import Backbone
from methods.base import SSLBatch, SSLMethod

IMAGE_SIZE, BATCH = 64, 64  # the cpu preset's image size and batch size


def pytest_configure(config: pytest.Config) -> None:
    """Create the folder of ``--benchmark-json`` (``tox -e bench`` writes .benchmarks/latest.json, and
    .benchmarks/ is not in a fresh clone): pytest-benchmark opens the file without creating it."""
    path = config.getoption("benchmark_json", None)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)


# glibc's mallopt parameters: hand large blocks back only above these sizes (defaults: 128 KiB, raised on
# the fly up to 32 MiB by glibc's own heuristic).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_REUSE_BLOCKS_UP_TO = 1 << 30


@pytest.fixture(scope="session", autouse=True)
def reused_memory(request: pytest.FixtureRequest) -> bool:
    """Keep freed large blocks in the heap for the whole benchmark session, so a timing never depends on
    whether the allocator happened to return fresh pages.

    By default glibc maps a block above its (moving) mmap threshold freshly and unmaps it on free, so a
    new 38.5 MB batch pays about 9,000 page faults (13 ms here) before its first byte is written; below
    the threshold it reuses heap memory that is already mapped (1.7 ms for the same ``clone``). Where
    that threshold stands at any moment depends on what the process freed before, so the same clone
    took 2 ms in one test and 16 ms in the next. Pinning it measures every subject and reference at
    steady state, pages already mapped, which is also the conservative side for the ratios whose
    reference is a plain copy. Child processes (fixed cost, memory) start with glibc's defaults."""
    option = request.config.getoption
    skipped = option("benchmark_skip", False) or option("benchmark_disable", False)
    if skipped and not option("benchmark_only", False):  # --benchmark-only wins over pyproject's --benchmark-skip
        return False
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    pinned = libc.mallopt(_M_MMAP_THRESHOLD, _REUSE_BLOCKS_UP_TO) == 1
    return pinned and libc.mallopt(_M_TRIM_THRESHOLD, 2 * _REUSE_BLOCKS_UP_TO) == 1


def seconds(function: Callable[[], Any], timer: Callable[[], float] = time.perf_counter) -> float:
    started = timer()
    function()
    return timer() - started


def median_seconds(
    function: Callable[[], Any], rounds: int, warmup: int = 1, timer: Callable[[], float] = time.perf_counter
) -> tuple[float, float]:
    """(median, min) time of ``function`` over ``rounds`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        function()
    timings = [seconds(function, timer) for _ in range(rounds)]
    return statistics.median(timings), min(timings)


@dataclass
class Timing:
    subject_median: float
    subject_min: float
    reference_median: float
    reference_min: float
    reference_samples: list[float] = field(default_factory=list)


class RatioBench:
    """Wraps the pytest-benchmark fixture: interleaved timing plus one uniform ratio report."""

    def __init__(self, benchmark, reused_memory: bool) -> None:
        self.benchmark = benchmark
        self.reused_memory = reused_memory
        # References use the subject's clock, so ``--benchmark-timer time.process_time`` (a fallback on a
        # machine shared with other work; the suite runs torch single-threaded) applies to both sides.
        self.timer: Callable[[], float] = getattr(benchmark, "_timer", time.perf_counter)

    def interleaved(
        self,
        subject: Callable[[], Any],
        reference: Callable[[], Any],
        *,
        rounds: int,
        warmup: int = 1,
        reference_every: int = 1,
    ) -> Timing:
        """Time ``subject`` with pedantic and ``reference`` in its setup hook (every ``reference_every``-th
        round, for references much slower than the subject). Warm-up rounds run both, untimed."""
        reference_times: list[float] = []
        calls = 0

        def setup() -> None:
            nonlocal calls
            calls += 1
            if calls <= warmup:
                reference()
            elif (calls - warmup - 1) % reference_every == 0:
                reference_times.append(seconds(reference, self.timer))

        self.benchmark.pedantic(subject, setup=setup, rounds=rounds, warmup_rounds=warmup)
        if self.benchmark.stats is None:
            pytest.skip("benchmarks disabled: no timing to compare")
        stats = self.benchmark.stats.stats
        return Timing(
            stats.median, stats.min, statistics.median(reference_times), min(reference_times), reference_times
        )

    def median(self, function: Callable[[], Any], rounds: int, warmup: int = 1) -> tuple[float, float]:
        """(median, min) of ``function`` timed alone on the benchmark's clock (not in the JSON)."""
        return median_seconds(function, rounds, warmup, self.timer)

    def record(self, function: Callable[[], Any], *, rounds: int, warmup: int = 1) -> tuple[float, float]:
        """Time ``function`` alone with pedantic; (median, min)."""
        self.benchmark.pedantic(function, rounds=rounds, warmup_rounds=warmup)
        if self.benchmark.stats is None:
            pytest.skip("benchmarks disabled: no timing to compare")
        stats = self.benchmark.stats.stats
        return stats.median, stats.min

    def report(self, label: str, ratio: float, target: str, details: str = "", **extra: float) -> None:
        """Print the ratio line (what the suite's output table is made of) and store it in the JSON."""
        info = self.benchmark.extra_info
        info.update(extra)
        info["ratio"] = ratio
        info["target"] = target
        info["torch_threads"] = torch.get_num_threads()
        info["large_blocks_reused"] = self.reused_memory
        memory = "large blocks reused" if self.reused_memory else "glibc's default mmap threshold"
        threads = torch.get_num_threads()
        print(f"\nRATIO {label}: {ratio:.3g} (target {target}; {threads} torch threads, {memory}) {details}")

    def report_value(self, label: str, value: float, unit: str, target: str, details: str = "", **extra: float) -> None:
        """Like ``report`` for the two targets the issue states in absolute units (seconds, GiB)."""
        info = self.benchmark.extra_info
        info.update(extra)
        info["value"], info["unit"], info["target"] = value, unit, target
        print(f"\nVALUE {label}: {value:.3g} {unit} (target {target}) {details}")


@pytest.fixture
def ratio_bench(benchmark, reused_memory: bool) -> RatioBench:
    return RatioBench(benchmark, reused_memory)


class CpuPreset:
    """Methods, optimizer and trainer exactly as ``bench run --preset cpu`` builds them."""

    image_size, batch = IMAGE_SIZE, BATCH

    def __init__(self) -> None:
        self.config = load_preset("cpu")
        assert self.config["data"]["image_size"] == IMAGE_SIZE and self.config["train"]["batch_size"] == BATCH

    def options(self, name: str) -> dict[str, Any]:
        return dict(self.config["method_options"].get(name, {}))

    def method(self, name: str, seed: int = 0) -> SSLMethod:
        torch.manual_seed(seed)
        model = self.config["model"]
        method = build_method(name, Backbone(model["backbone"], model["stem"]), self.options(name))
        return place(method, torch.device("cpu")).train()  # in the layout bench run trains in

    def optim(self) -> OptimConfig:
        return OptimConfig(**self.config["optim"])

    def trainer(self, method: SSLMethod, **options: Any) -> Trainer:
        """A Trainer over ``method`` (``options``: e.g. ``compile``); its image array only sizes the epoch."""
        images = np.zeros((BATCH, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        return Trainer(
            method,
            images,
            (lambda x, g: x, lambda x, g: x),
            self.optim(),
            epochs=1000,
            batch_size=BATCH,
            seed=0,
            device=torch.device("cpu"),
            progress=False,
            **options,
        )

    def training_step(self, method: SSLMethod, batch: SSLBatch, progress: float = 0.5, **options: Any):
        """One training iteration through the trainer on views prepared once: what ``run_epoch`` does per
        batch minus augmentation (``test_input_pipeline`` covers that). The trainer still reads its
        (in-memory, uint8) batch; its views hand over ``batch``'s tensors, and the step runs the
        trainer's own ``_train_batch`` and scheduler step. Returns (step function, loss sums)."""
        trainer = self.trainer(method, **options)
        trainer.views = (lambda x, g: batch.view1, lambda x, g: batch.view2)
        index = torch.arange(BATCH)
        sums = {name: torch.zeros(()) for name in method.step_names}

        def step() -> None:
            trainer._train_batch(index, batch.generator, progress, sums)
            trainer.scheduler.step()

        step.trainer = trainer  # type: ignore[attr-defined]
        return step, sums

    @staticmethod
    def uint8_batch(seed: int = 0, batch: int = BATCH, size: int = IMAGE_SIZE) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return torch.randint(0, 256, (batch, 3, size, size), generator=generator, dtype=torch.uint8)


@pytest.fixture(scope="session")
def cpu_preset() -> CpuPreset:
    return CpuPreset()
