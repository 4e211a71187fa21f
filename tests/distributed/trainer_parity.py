"""Trainer parity: ``bench.trainer.Trainer`` under torchrun trains like one process on the global batch.

    torchrun --nproc-per-node 2 tests/distributed/trainer_parity.py OUT_DIR [float64|float32]

Imported, it is the experiment (``train``); run by torchrun, each rank trains every method with the
Trainer (DDP, global-batch BatchNorm) and writes ``OUT_DIR/rank<r>.pt``: per-epoch losses and the final
state (in full on rank 0, as digests on the others), what ``broadcast_from_main`` handed it, and how a
failure raised on rank 0 at the end of an epoch stopped it. The real pipeline runs: the synthetic
dataset, both augmenters, the seeded data order, the warm-up/cosine schedule and SGD with momentum.
float64 (after the float32 augmentation) keeps round-off far below the tolerance, so the comparison
shows the algorithm is the same rather than how much float32 drifts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from bench.process_group import (  # noqa: E402
    DistributedContext,
    broadcast_from_main,
    init_from_env,
    on_main_then_agree,
    shutdown,
)
from bench.schema import OptimConfig  # noqa: E402
from bench.seeding import seed_everything  # noqa: E402
from bench.trainer import Augment, EpochStats, Trainer, TrainingFailed  # noqa: E402
from datasets import DataRequest, load_dataset  # noqa: E402
from datasets.augment import build_views  # noqa: E402
from methods import build_method  # noqa: E402
from methods.backbones import Backbone  # noqa: E402

IMAGE_SIZE = 32
TRAIN_IMAGES = 32
GLOBAL_BATCH = 16  # two batches an epoch; 8 images per rank with two processes
EPOCHS = 2
OPTIM = OptimConfig(lr=0.05, warmup_epochs=1)  # the schedule warms up in epoch 1 and anneals in epoch 2
SMALL: dict[str, dict[str, Any]] = {
    "simclr": {"proj_hidden_dim": 32, "proj_dim": 16},
    "byol": {"proj_hidden_dim": 32, "proj_dim": 16},
    "barlow": {"proj_dims": [32, 32]},
    "fgssl": {"grids": [8, 4, 2], "block_mid_channels": 16, "block_out_channels": 32, "embed_dim": 16},
}
METHOD_NAMES = tuple(SMALL)
STOP_MESSAGE = "embeddings collapsed in epoch 1 (raised on rank 0 only)"


def as_dtype(view: Augment, dtype: torch.dtype) -> Augment:
    """The augmenter, its output cast to ``dtype`` (the augmentation itself stays float32)."""
    return lambda images, generator: view(images, generator).to(dtype)


def make_trainer(
    name: str,
    ctx: DistributedContext | None = None,
    *,
    dtype: torch.dtype = torch.float64,
    sync_batchnorm: bool = False,
    epochs: int = EPOCHS,
) -> Trainer:
    """The Trainer of one method on the synthetic data, seeded identically in every process."""
    data = load_dataset("synthetic", DataRequest(image_size=IMAGE_SIZE, synthetic_sizes=(TRAIN_IMAGES, 8, 8)))
    seed_everything(0)
    method = build_method(name, Backbone(), SMALL[name]).to(dtype)
    first, second = build_views(method.view_recipe, IMAGE_SIZE)
    return Trainer(
        method,
        data.train.images,
        (as_dtype(first, dtype), as_dtype(second, dtype)),
        OPTIM,
        epochs=epochs,
        batch_size=GLOBAL_BATCH,
        seed=0,
        device=torch.device("cpu"),
        progress=False,
        sync_batchnorm=sync_batchnorm,
        distributed=ctx,
    )


def train(name: str, ctx: DistributedContext | None = None, **options: Any) -> dict[str, Any]:
    """Per-epoch losses and the final state (parameters and buffers) of ``make_trainer``'s run."""
    trainer = make_trainer(name, ctx, **options)
    history = trainer.fit()
    state = {k: v.detach().clone() for k, v in trainer.method.state_dict().items()}
    return {"losses": [stats.losses for stats in history], "state": state}


def digest(tensor: torch.Tensor) -> tuple[float, float]:
    """Sum and sum of squares: equal for bitwise-equal tensors, and almost surely different otherwise."""
    t = tensor.double()
    return t.sum().item(), t.pow(2).sum().item()


def stop_on_main(ctx: DistributedContext) -> dict[str, Any]:
    """Rank 0's epoch-end callback fails after epoch 1 (as a collapse check does): every rank must stop
    there with the same error, instead of training on into a collective rank 0 never joins."""
    calls: list[int] = []

    def callback(stats: EpochStats) -> None:
        calls.append(stats.epoch)
        raise TrainingFailed(STOP_MESSAGE)

    trainer = make_trainer("barlow", ctx, dtype=torch.float32, epochs=EPOCHS)
    epochs_seen: list[int] = []
    agreed = on_main_then_agree(ctx, callback)
    try:
        trainer.fit(on_epoch_end=lambda stats: (epochs_seen.append(stats.epoch), agreed(stats)))
    except TrainingFailed as exc:
        return {"error": str(exc), "callback_calls": calls, "epochs": epochs_seen}
    return {"error": None, "callback_calls": calls, "epochs": epochs_seen}


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    dtype = getattr(torch, argv[1]) if len(argv) > 1 else torch.float64
    torch.set_num_threads(1)
    ctx = init_from_env(torch.device("cpu"))
    records: dict[str, Any] = {}
    try:
        for name in METHOD_NAMES:
            run = train(name, ctx, dtype=dtype, sync_batchnorm=True)
            if not ctx.is_main:
                run["state"] = {k: digest(v) for k, v in run["state"].items()}
            records[name] = run
        records["broadcast"] = broadcast_from_main({"sender": ctx.rank}, ctx)
        records["stop"] = stop_on_main(ctx)
    finally:
        shutdown()
    torch.save(records, out / f"rank{ctx.rank}.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
