"""``train.compile`` against eager execution: one training step at the cpu preset, through the trainer.

No target: the option exists to find out whether torch.compile pays on a given machine. On the 2-core
CPU machine the first compiled step takes one to several minutes (inductor builds C++ kernels), so this
benchmark is marked ``slow`` and left out of the default ``tox -e bench``; run it with
``tox -e bench -- -m slow -k compile``. It reports the compile time and the steady-state step ratio
(compiled / eager, interleaved round by round), and checks that the compiled step computes the same loss.
"""

from __future__ import annotations

import copy
import time

import pytest
import torch
from test_training_overhead import prepared_views

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["simclr", "fgssl"])
def test_compiled_step_vs_eager(ratio_bench, cpu_preset, name) -> None:
    eager_method = cpu_preset.method(name)
    compiled_method = copy.deepcopy(eager_method)
    # one batch each: FG-SSL draws its jigsaw orders from the batch's generator, which each step advances
    steps, sums, trainers = {}, {}, {}
    for label, method in (("eager", eager_method), ("compiled", compiled_method)):
        batch = prepared_views(cpu_preset, eager_method.view_recipe)
        steps[label], sums[label] = cpu_preset.training_step(method, batch, compile=label == "compiled")
        trainers[label] = steps[label].trainer
    assert trainers["compiled"].compiled, "compile=True compiled no module"

    def step(label: str) -> None:
        steps[label]()

    step("eager")
    started = time.perf_counter()  # wall clock: inductor compiles in worker processes
    step("compiled")
    compile_seconds = time.perf_counter() - started
    # Only the first optimizer step starts from identical weights: after one AdamW step (about lr * sign
    # of each gradient) rounding differences flip signs of near-zero gradients, so later steps differ.
    first_step = eager_method.step_names[0]
    torch.testing.assert_close(sums["compiled"][first_step], sums["eager"][first_step], rtol=1e-3, atol=1e-3)
    timing = ratio_bench.interleaved(lambda: step("compiled"), lambda: step("eager"), rounds=5, warmup=1)
    ratio = timing.subject_median / timing.reference_median
    ratio_bench.report(
        f"compiled/eager training step {name}",
        ratio,
        "none (an option: < 1 would mean it helps)",
        f"compiled {timing.subject_median * 1e3:.0f} ms, eager {timing.reference_median * 1e3:.0f} ms, "
        f"first compiled step (compilation) {compile_seconds:.0f} s; "
        f"compiled: {', '.join(trainers['compiled'].compiled)}",
        compiled_seconds=timing.subject_median,
        eager_seconds=timing.reference_median,
        compile_seconds=compile_seconds,
    )
