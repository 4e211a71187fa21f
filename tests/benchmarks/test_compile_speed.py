"""``train.compile`` against eager execution: one training step at the cpu preset, through the trainer.

No target: the option exists to find out whether torch.compile pays on a given machine. On the 2-core
CPU machine the first compiled step takes one to several minutes (inductor builds C++ kernels), so this
benchmark is marked ``slow`` and left out of the default ``tox -e bench``; run it with
``tox -e bench -- -m slow -k compile``. It reports the compile time and the steady-state step ratio
(compiled / eager, interleaved round by round), and checks that the compiled step computes the same loss.
"""

from __future__ import annotations

import copy

import pytest
import torch
from test_training_overhead import prepared_views

from bench.trainer import Trainer

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["simclr", "fgssl"])
def test_compiled_step_vs_eager(ratio_bench, cpu_preset, name) -> None:
    eager_method = cpu_preset.method(name)
    compiled_method = copy.deepcopy(eager_method)
    # one batch each: FG-SSL draws its jigsaw orders from the batch's generator, which each step advances
    batches = {label: prepared_views(cpu_preset, eager_method.view_recipe) for label in ("eager", "compiled")}
    trainers = {}
    for label, method in (("eager", eager_method), ("compiled", compiled_method)):
        trainers[label] = Trainer(
            method,
            cpu_preset.uint8_batch().numpy(),
            (lambda x, g: x, lambda x, g: x),
            cpu_preset.optim(),
            epochs=1000,
            batch_size=cpu_preset.batch,
            seed=0,
            device=torch.device("cpu"),
            progress=False,
            compile=label == "compiled",
        )
    assert trainers["compiled"].compiled, "compile=True compiled no module"
    sums = {label: {step: torch.zeros(()) for step in eager_method.step_names} for label in trainers}

    def step(label: str) -> None:
        trainers[label]._train_batch(batches[label], 0.5, sums[label])
        trainers[label].scheduler.step()

    step("eager")
    compile_seconds, _ = ratio_bench.median(lambda: step("compiled"), rounds=1, warmup=0)
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
