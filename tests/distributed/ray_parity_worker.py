"""Ray Train driver for the gradient-parity test: every registered method in DDP over two Ray workers.

    python tests/distributed/ray_parity_worker.py RAY_ADDRESS OUT_DIR STORAGE [NAME ...]

Ray Train's ``TorchTrainer`` starts the workers and joins them in a gloo process group; each worker
takes that group through ``init_from_env``, as ``bench run --ray --nproc`` does, and runs
``parity.run`` on its rows of every global batch. Each rank writes ``OUT_DIR/<name>.rank<r>.pt`` per
method (gradients in full on rank 0, as digests on the other), one file at a time: a composite's
float64 gradients over several steps are too large to hold for every method at once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import parity  # noqa: E402

from bench.process_group import init_from_env, wrap  # noqa: E402
from methods import build_method  # noqa: E402
from methods.backbones import Backbone  # noqa: E402
from methods.registry import METHODS  # noqa: E402

WORLD_SIZE = 2
NAMES = tuple(METHODS)


def options(name: str) -> dict[str, Any]:
    """parity's small options; a composite it lacks gets its parts' small options."""
    return parity.SMALL.get(name) or {part: parity.SMALL[part] for part in name.split("+")}


def build(name: str):
    """The method with the same initial weights in every process, in float64 (as ``parity.build``)."""
    torch.manual_seed(0)
    return build_method(name, Backbone("resnet18"), options(name)).double().train()


def batches(name: str) -> int:
    return parity.BATCHES.get(name, 1)


def train(settings: dict[str, Any]) -> None:
    """One Ray Train worker: every method on this rank's half of each global batch, in DDP."""
    torch.set_num_threads(1)
    ctx = init_from_env(torch.device("cpu"))
    assert ctx.world_size == WORLD_SIZE, ctx
    out = Path(settings["out"])
    for name in settings["names"]:
        model = wrap(build(name), ctx, sync_batchnorm=True)
        records = parity.run(model, ctx.rank, ctx.world_size, batches(name), full=ctx.is_main)
        torch.save(records, out / f"{name}.rank{ctx.rank}.pt")


def main(argv: list[str]) -> int:
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    address, out, storage, *names = argv
    ray.init(address=address, logging_level="ERROR")
    trainer = TorchTrainer(
        train,
        train_loop_config={"out": out, "names": names or list(NAMES)},
        scaling_config=ray.train.ScalingConfig(num_workers=WORLD_SIZE, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(
            name="parity", storage_path=storage, failure_config=ray.train.FailureConfig(max_failures=0)
        ),
    )
    trainer.fit()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
