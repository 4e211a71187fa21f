"""Inside a run under ``torchrun``: join the process group, wrap the method, shard the batch, agree.

The parity contract (tests/test_distributed.py): W processes with B/W images each take the same
optimizer steps as one process with B images. What the trainer must do for that:

1. ``ctx = init_from_env(device)`` once per process (gloo on CPU, nccl on CUDA; a plain process gets
   a context of one and no group). Seed every rank with the *same* seed: model init, data order and
   augmentation draws must agree across ranks.
2. ``model = wrap(method, ctx, sync_batchnorm=...)``; build the optimizer from ``method.param_groups()``
   (before or after wrapping: parameters are shared). Keep ``method`` for ``after_optimizer_step``,
   ``embed``, ``state_dict``; rank 0 alone logs and writes checkpoints.
3. Per batch: every rank takes the same global batch indices (same ``order`` generator, global batch
   size B, same ``.sort()``), loads and augments the *whole* global batch with the shared augmentation
   generator, then keeps its rows ``rank_slice(B, ctx)`` of both views. Augmenting all B images on
   every rank costs a little duplicated work but draws exactly the single-process randomness and
   leaves the generator in the same state on every rank, which FG-SSL's jigsaw relies on
   (``methods.distributed.sharded_jigsaw`` draws the global batch's permutations and keeps its rows).
   Do not use ``DistributedSampler``: it interleaves indices, so rank batches would not be slices of
   the single-process batch.
4. Iterate ``methods.base.run_training_steps(model, batch)`` instead of ``method.training_steps(batch)``:
   DDP averages gradients only for work done inside its ``forward``.
5. Each yielded loss is the global batch's loss, identical on every rank: log it without a reduction;
   a NaN check raises on every rank at once.
6. ``shutdown()`` at the end.

``bench.trainer.Trainer(..., distributed=ctx, sync_batchnorm=...)`` does steps 2-5. Around it, the
command line (``bench.launch.launch``, ``broadcast_from_main``, ``on_main_then_agree``): ``bench run
--nproc N`` re-runs itself as N torchrun processes; rank 0 alone talks to MLflow, claims runs and writes
checkpoints, and hands every decision the other ranks need (which configuration, resume from which
state, stop after this epoch) to them, so all ranks issue the same collectives in the same order.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from methods.base import SSLMethod
from methods.distributed import convert_sync_batchnorm

T = TypeVar("T")
# How long a rank waits in a collective. The command line's follower ranks wait in one while rank 0
# evaluates a run (minutes to hours), far beyond torch's 30 minutes; a rank that dies makes torchrun
# stop the others, so a long wait never outlives a failure.
COMMAND_LINE_TIMEOUT = timedelta(days=7)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank among ``world_size`` processes and the device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs to MLflow and writes checkpoints."""
        return self.rank == 0


def backend_for(device: torch.device) -> str:
    """nccl for CUDA tensors, gloo otherwise (the only CPU backend that ships with torch)."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_from_env(device: torch.device, *, timeout: timedelta | None = None) -> DistributedContext:
    """Join the process group that ``torchrun`` describes in the environment.

    torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; without WORLD_SIZE (or
    with 1) this is a plain process and no group is created, so single-process runs are unchanged.
    Ray Train's workers (bench/ray_ddp.py) find the group already made and the same variables set:
    they get its context, and no second group.
    On CUDA each process takes GPU ``LOCAL_RANK``. ``timeout`` bounds every collective (torch's
    default when None).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistributedContext(0, 1, 0, device, None)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if "TORCHELASTIC_RUN_ID" in os.environ:  # started by torchrun's agent
        die_with_parent()
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = backend_for(device)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timeout, device_id=device if device.type == "cuda" else None)
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)


def die_with_parent() -> None:
    """Have Linux SIGKILL this process when its parent (torchrun's agent) dies.

    torchrun starts every worker in a session of its own, and SIGKILL cannot be forwarded, so killing
    ``bench run --nproc`` and its torchrun would otherwise leave the ranks training on as orphans,
    holding the run's lock and overwriting its checkpoint while a rerun wants to resume it.
    A no-op off Linux.
    """
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def shutdown() -> None:
    """Leave the process group (a no-op for a plain process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_batch_size(global_batch: int, world_size: int) -> int:
    """Images per process; the global batch must split evenly (every gather needs equal shapes)."""
    if global_batch % world_size:
        raise ValueError(
            f"batch size {global_batch} does not split evenly over {world_size} processes; "
            f"choose a multiple of {world_size}"
        )
    return global_batch // world_size


def rank_slice(global_batch: int, ctx: DistributedContext) -> slice:
    """The rows of the global batch this process trains on: a contiguous block, in rank order."""
    local = local_batch_size(global_batch, ctx.world_size)
    return slice(ctx.rank * local, (ctx.rank + 1) * local)


def wrap(method: SSLMethod, ctx: DistributedContext, *, sync_batchnorm: bool = False) -> nn.Module:
    """The module the trainer drives with ``run_training_steps``: the method itself for one process,
    else the method in ``DistributedDataParallel``.

    ``sync_batchnorm`` first makes every BatchNorm normalise with global-batch statistics (needed for
    exact parity with one process; BYOL and SimCLR papers use it). Methods whose steps leave some
    parameters without a gradient (FG-SSL) get ``find_unused_parameters`` so DDP does not wait for them.
    """
    if sync_batchnorm:
        convert_sync_batchnorm(method)
    if not ctx.enabled:
        return method
    return DistributedDataParallel(
        method,
        device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
        find_unused_parameters=not method.steps_use_every_parameter,
    )


def broadcast_from_main(value: T, ctx: DistributedContext) -> T:
    """Rank 0's ``value`` on every rank (other ranks pass anything, e.g. None); ``value`` itself for one
    process. How rank 0's decisions reach the ranks that only train. It is a collective: every rank
    must call it at the same point."""
    if not ctx.enabled:
        return value
    box: list[object] = [value if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0, device=ctx.device if ctx.device.type == "cuda" else None)
    return box[0]  # type: ignore[return-value]


def follow(ctx: DistributedContext, work: Callable[[T], None]) -> int:
    """The loop of a rank other than 0: ``work`` on each item rank 0 hands out with
    ``broadcast_from_main`` (under ``bench run --nproc``: a configuration to train together), until it
    hands out None (``end_followers``). Returns how many items there were.

    Rank 0 sends only when it is about to train together, so its skips, locks, waits and lone runs
    (references) need no message, and the ranks never disagree about what comes next.
    """
    done = 0
    while (item := broadcast_from_main(None, ctx)) is not None:
        work(item)
        done += 1
    return done


def end_followers(ctx: DistributedContext) -> None:
    """Rank 0, at the end of its sweep: release the other ranks from ``follow``."""
    if ctx.enabled and ctx.is_main:
        broadcast_from_main(None, ctx)


def on_main_then_agree(ctx: DistributedContext, callback: Callable[[T], None] | None) -> Callable[[T], None]:
    """An ``on_epoch_end`` for ``Trainer.fit`` on every rank: ``callback`` (log to MLflow, write the
    checkpoint, check for collapse, report to Optuna) runs on rank 0 alone, then every rank learns
    whether it raised, and raises too. So all ranks leave training after the same epoch: a rank that
    trained on alone would wait forever in its next all-reduce.
    """

    def on_epoch_end(stats: T) -> None:
        failure: Exception | None = None
        if ctx.is_main and callback is not None:
            try:
                callback(stats)
            except Exception as exc:  # handed to the other ranks, then re-raised here unchanged
                failure = exc
        shared = broadcast_from_main(_portable(failure), ctx)
        if failure is not None:
            raise failure
        if shared is not None:
            raise shared

    return on_epoch_end


def _portable(exc: Exception | None) -> Exception | None:
    """``exc`` if it survives pickling (as ``TrainingFailed`` and ``RunPruned`` do), else a
    ``RuntimeError`` naming it: some library exceptions cannot be rebuilt from their pickle."""
    if exc is None:
        return None
    try:
        restored = pickle.loads(pickle.dumps(exc))
    except Exception:
        restored = None
    if type(restored) is type(exc) and str(restored) == str(exc):
        return exc
    return RuntimeError(f"rank 0 failed: {type(exc).__name__}: {exc}")
