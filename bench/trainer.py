"""The training loop: one backward and optimizer step per loss a method yields.

It knows nothing method-specific: views come from two batched augmenters, the method turns them
into losses, and the loop steps, schedules and reports. Loss values stay on the device until the
end of the epoch, so the hot loop never waits on a host synchronisation (the progress bar's running
loss is copied without blocking and shown once it has arrived).

A batch is made in two parts: ``_prepare`` reads its images and draws everything random (the two
views, then whatever the method draws itself: ``SSLMethod.prepare``), and ``_train_prepared`` takes its
optimizer steps. With ``prefetch`` the first part of batch b + 1 runs in a background thread while the
steps of batch b compute (bench/prefetch.py); the draws are the same, in the same order, so results
are bit for bit those without it.

Under ``torchrun`` (a ``DistributedContext`` of W > 1) the same loop runs in every process and W
processes with a global batch of B images train like one process with B: every rank draws the same
data order and augments the whole global batch with the shared generator (so every random draw is
the single-process one), then trains on its ``rank_slice`` of the rows in a DDP wrapper. With one
process nothing is wrapped or sliced, so single-process runs are exactly what they were.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from bench.collapse import embedding_spread
from bench.devices import autocast, grad_scaler
from bench.prefetch import Ahead, DeviceImages
from bench.process_group import DistributedContext, rank_slice, wrap
from bench.schema import OptimConfig
from bench.seeding import epoch_generator
from methods.base import ParamGroup, SSLBatch, SSLMethod, StepLoss, run_training_steps

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
DATA_ORDER_STREAM, AUGMENT_STREAM = 0, 1


class TrainingFailed(RuntimeError):
    """The run cannot produce a meaningful result (for example the loss became NaN)."""


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    losses: dict[str, float]
    lr: float
    seconds: float
    images_per_second: float
    embedding_spread: float = math.nan  # bench/collapse.py, on the last batch's first step; NaN if unknown


class EpochLoop:
    """What every training loop here shares: data order and augmentation seeded per (seed, epoch),
    warm-up + cosine learning rate per batch, one backward and optimizer step per loss, losses summed
    on the device until the epoch ends, a progress bar, the non-finite check, and checkpointable state.
    Subclasses say what one batch is (``_train_batch``)."""

    state_key: str  # the module's key in ``state_dict`` (checkpoints)
    streams: tuple[int, int] = (DATA_ORDER_STREAM, AUGMENT_STREAM)  # random streams of order, augmentation
    # Make batch b + 1 (``_prepare``) in a background thread while batch b trains.
    prefetch: bool = False

    def __init__(
        self,
        module: nn.Module,
        groups: list[ParamGroup],
        optim: OptimConfig,
        *,
        items: int,
        step_names: tuple[str, ...],
        name: str,
        epochs: int,
        batch_size: int,
        seed: int,
        device: torch.device,
        progress: bool,
    ) -> None:
        if batch_size > items:
            raise ValueError(f"batch size {batch_size} is larger than the training set ({items} images)")
        self.module, self.items, self.step_names, self.name = module, items, step_names, name
        self.epochs, self.batch_size, self.seed, self.device = epochs, batch_size, seed, device
        self.batches_per_epoch = items // batch_size
        self.optimizer = build_optimizer(groups, optim, device)
        total = epochs * self.batches_per_epoch
        warmup = optim.warmup_epochs * self.batches_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda b: warmup_cosine(b, warmup, total))
        self.scaler = grad_scaler(device)
        self.progress = progress

    def fit(self, start_epoch: int = 0, on_epoch_end: Callable[[EpochStats], None] | None = None) -> list[EpochStats]:
        history = []
        for epoch in range(start_epoch, self.epochs):
            stats = self.run_epoch(epoch)
            history.append(stats)
            if on_epoch_end is not None:
                on_epoch_end(stats)
        return history

    def run_epoch(self, epoch: int) -> EpochStats:
        self.module.train()
        order_stream, augment_stream = self.streams
        order = torch.randperm(self.items, generator=epoch_generator(self.seed, epoch, order_stream))
        generator = epoch_generator(self.seed, epoch, augment_stream, self.device)
        size, count = self.batch_size, self.batches_per_epoch
        indices = [order[b * size : (b + 1) * size].sort().values for b in range(count)]
        sums = {name: torch.zeros((), device=self.device) for name in self.step_names}
        lr = self.optimizer.param_groups[-1]["lr"]
        start = time.perf_counter()
        bar = tqdm(
            range(count),
            desc=f"{self.name} epoch {epoch + 1}/{self.epochs}",
            unit="batch",
            leave=False,
            disable=not self.progress,
        )
        running = RunningLoss(self.device) if self.progress else None
        embedding = None
        # One Ahead per epoch: it draws only from this epoch's generator, so a checkpoint taken after the
        # epoch (and a resume from it) sees exactly what an uninterrupted run does.
        with Ahead(
            lambda b: self._prepare(indices[b], generator),
            count,
            depth=1 if self.prefetch else 0,
            device=self.device,
            threads=1 if self.device.type == "cpu" else None,
            name=f"{self.name} prefetch",
        ) as batches:
            for b, prepared in zip(bar, batches, strict=True):
                progress = (epoch * count + b + 1) / (self.epochs * count)
                embedding = self._train_prepared(prepared, progress, sums)
                lr = self.optimizer.param_groups[-1]["lr"]
                self.scheduler.step()
                if running is not None and (b % 10 == 0 or b == count - 1):
                    shown = running.update(sums, b + 1)
                    if shown is not None:
                        bar.set_postfix(loss=f"{shown:.4g}")
        seconds = time.perf_counter() - start
        totals = torch.stack(list(sums.values())).tolist()  # the epoch's one host synchronisation
        losses = {name: total / count for name, total in zip(sums, totals, strict=True)}
        bad = [name for name, value in losses.items() if not math.isfinite(value)]
        if bad:
            raise TrainingFailed(f"{self.name} loss became non-finite in epoch {epoch + 1} ({', '.join(bad)})")
        spread = embedding_spread(embedding) if embedding is not None and len(embedding) > 1 else math.nan
        images_seen = count * self.batch_size
        return EpochStats(epoch, losses, lr, seconds, images_seen / seconds, spread)

    def _prepare(self, index: torch.Tensor, generator: torch.Generator) -> Any:
        """Everything of the batch at ``index`` (sorted) that draws from ``generator``, made now: with
        ``prefetch`` in a background thread one batch ahead. Default: nothing ahead (``_train_batch``)."""
        return index, generator

    def _train_prepared(self, prepared: Any, progress: float, sums: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Train on a batch ``_prepare`` made; returns an embedding to watch for collapse, or None."""
        index, generator = prepared
        return self._train_batch(index, generator, progress, sums)

    def _train_batch(
        self, index: torch.Tensor, generator: torch.Generator, progress: float, sums: dict[str, torch.Tensor]
    ) -> torch.Tensor | None:
        """Train on the images at ``index`` (sorted); returns an embedding to watch for collapse, or None."""
        raise NotImplementedError

    def _step_through(
        self, steps: Iterator[StepLoss], sums: dict[str, torch.Tensor], after_step: Callable[[], None] | None = None
    ) -> torch.Tensor | None:
        """One backward and optimizer step per loss ``steps`` yields (each computed under autocast after the
        previous step), losses summed on the device; returns the first step's embedding (collapse watch)."""
        embedding = None
        while True:
            with autocast(self.device):
                step = next(steps, None)
            if step is None:
                return embedding
            if embedding is None:
                embedding = step.embedding
            self._optimizer_step(step.loss)
            if after_step is not None:
                after_step()
            sums[step.name] += step.loss.detach()

    def _optimizer_step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        return {
            self.state_key: self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state[self.state_key])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


class Trainer(EpochLoop):
    """SSL pretraining: two augmented views per image, the method's steps, its hook after each step."""

    state_key = "method"

    def __init__(
        self,
        method: SSLMethod,
        images: np.ndarray,
        views: tuple[Augment, Augment],
        optim: OptimConfig,
        *,
        epochs: int,
        batch_size: int,
        seed: int,
        device: torch.device,
        progress: bool = True,
        compile: bool = False,
        sync_batchnorm: bool = False,
        distributed: DistributedContext | None = None,
        prefetch: bool = True,
        resident: bool | None = None,
    ) -> None:
        if batch_size > len(images):
            raise ValueError(f"batch size {batch_size} is larger than the training set ({len(images)} images)")
        # ``batch_size`` is the global batch; each of the context's processes trains on its slice of it.
        self.context = distributed if distributed is not None else DistributedContext(0, 1, 0, device, None)
        if self.context.device != device:
            raise ValueError(f"trainer device {device} is not the process group's device {self.context.device}")
        self.rows = rank_slice(batch_size, self.context)  # refuses a batch that does not split evenly
        # Convert BatchNorm before compiling, so the layers that run are the ones compiled.
        self.model = wrap(method, self.context, sync_batchnorm=sync_batchnorm)
        self.method, self.images, self.views = method, images, views
        self.prefetch = prefetch
        # The batches' uint8 images on the device: on a GPU the whole cache when it fits (``resident``:
        # None decides by free memory), else pinned, non-blocking copies; on the CPU read from the cache.
        self.source = DeviceImages(images, device, resident=resident)
        # What ``training_steps`` gets as its batch's generator: drawing from it would come after the next
        # batch's views (prefetch), so it must stay untouched; the method draws in ``prepare``.
        self._sealed = torch.Generator(device=device).manual_seed(0)
        self._sealed_state = self._sealed.get_state()
        super().__init__(
            method,
            method.param_groups(),
            optim,
            items=len(images),
            step_names=method.step_names,
            name=method.name,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            device=device,
            progress=progress and self.context.is_main,  # one bar, not one per rank
        )
        self.compiled = compile_method(method) if compile else []

    def _prepare(self, index: torch.Tensor, generator: torch.Generator) -> SSLBatch:
        """The batch's images on the device, both views, this rank's rows of them, and the method's own
        draws (``SSLMethod.prepare``): every draw of the batch, in the order the steps would make them."""
        images = self.source.batch(index)
        batch = SSLBatch(self.views[0](images, generator), self.views[1](images, generator), generator)
        if self.context.enabled:  # every rank augmented the global batch: keep this rank's rows
            batch = SSLBatch(batch.view1[self.rows], batch.view2[self.rows], generator)
        return self.method.prepare(batch)

    def _train_prepared(self, batch: SSLBatch, progress: float, sums: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Every step of one prepared batch; returns the first step's embedding (for the collapse watch)."""
        # Through the (possibly DDP-wrapped) model: DDP averages gradients only of work in its forward.
        steps = run_training_steps(self.model, dataclasses.replace(batch, generator=self._sealed))
        embedding = self._step_through(steps, sums, lambda: self.method.after_optimizer_step(progress))
        if not torch.equal(self._sealed.get_state(), self._sealed_state):
            raise RuntimeError(
                f"{self.method.name}.training_steps drew from batch.generator: draw in prepare() instead, "
                "where the draws keep their order when the next batch is made ahead"
            )
        return embedding

    def _train_batch(
        self, index: torch.Tensor, generator: torch.Generator, progress: float, sums: dict[str, torch.Tensor]
    ) -> torch.Tensor | None:
        """Every step of one batch, made now; returns the first step's embedding (for the collapse watch)."""
        return self._train_prepared(self._prepare(index, generator), progress, sums)


class RunningLoss:
    """The progress bar's mean loss so far, without a host synchronisation on a GPU: the sum is copied
    to pinned memory without blocking, and shown at a later update once the copy has landed (so it
    lags by up to ten batches). On the CPU it is read at once."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._pending: tuple[torch.Tensor, Any, int] | None = None
        self._shown: float | None = None

    def update(self, sums: dict[str, torch.Tensor], batches: int) -> float | None:
        total = sum(sums.values())
        if self.device.type != "cuda":
            return float(total) / batches
        if self._pending is not None and self._pending[1].query():
            value, _, seen = self._pending
            self._shown, self._pending = value.item() / seen, None
        if self._pending is None:
            value = torch.empty((), pin_memory=True)
            value.copy_(total, non_blocking=True)
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))
            self._pending = (value, event, batches)
        return self._shown


def compile_method(method: nn.Module) -> list[str]:
    """``torch.compile`` in place every module ``method`` calls in its training steps; returns their names.

    Not the method's own ``forward``: that only advances its ``training_steps`` generator (so that a
    DistributedDataParallel wrapper sees each step), which dynamo cannot trace, so compiling it would
    compile nothing. The arithmetic is in the backbone's stages and the heads, so those are compiled.
    ``nn.Module.compile`` swaps a module's call for a compiled one without wrapping it, so parameters,
    optimizer groups and ``state_dict`` keys (checkpoints) are the same with and without the option.
    Containers have no call of their own and a backbone is entered through ``stages(x, upto=k)`` as
    well as its forward, so their members are compiled instead.
    """
    compiled: list[str] = []

    def visit(name: str, module: nn.Module) -> None:
        children = list(module.named_children())
        if children and (isinstance(module, (nn.ModuleList, nn.ModuleDict)) or hasattr(module, "stages")):
            for child_name, child in children:
                visit(f"{name}.{child_name}", child)
        elif any(True for _ in module.parameters()):
            module.compile()
            compiled.append(name)

    for name, child in method.named_children():
        visit(name, child)
    return compiled


def build_optimizer(
    groups: list[ParamGroup], optim: OptimConfig, device: torch.device | None = None
) -> torch.optim.Optimizer:
    """SGD or AdamW over ``groups``. On CUDA the fused implementation: one kernel per step, and a
    gradient scaler hands it its inf check on the device instead of reading it on the host every step.
    On the CPU the default one, whose results the seeded CPU runs repeat bit for bit."""
    param_groups = [{"params": g.params, "lr": optim.lr * g.lr_scale} for g in groups if g.params]
    fused = {"fused": True} if device is not None and device.type == "cuda" else {}
    if optim.name == "sgd":
        return torch.optim.SGD(
            param_groups, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay, **fused
        )
    if optim.name == "adamw":
        return torch.optim.AdamW(param_groups, lr=optim.lr, weight_decay=optim.weight_decay, **fused)
    raise ValueError(f"unknown optimizer {optim.name!r}")


def warmup_cosine(batch: int, warmup: int, total: int) -> float:
    """LR multiplier: linear warm-up, then cosine annealing to 0 over the remaining batches."""
    if batch < warmup:
        return (batch + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (batch - warmup) / max(1, total - warmup)))
