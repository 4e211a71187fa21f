"""The training loop: one backward and optimizer step per loss a method yields.

It knows nothing method-specific: views come from two batched augmenters, the method turns them
into losses, and the loop steps, schedules and reports. Loss values stay on the device until the
end of the epoch, so the hot loop never waits on a host synchronisation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.config import OptimConfig
from bench.devices import autocast, grad_scaler
from bench.seeding import epoch_generator
from methods.base import ParamGroup, SSLBatch, SSLMethod

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


class Trainer:
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
    ) -> None:
        if batch_size > len(images):
            raise ValueError(f"batch size {batch_size} is larger than the training set ({len(images)} images)")
        self.method, self.images, self.views = method, images, views
        self.epochs, self.batch_size, self.seed, self.device = epochs, batch_size, seed, device
        self.batches_per_epoch = len(images) // batch_size
        self.optimizer = build_optimizer(method.param_groups(), optim)
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
        self.method.train()
        order = torch.randperm(len(self.images), generator=epoch_generator(self.seed, epoch, DATA_ORDER_STREAM))
        aug_generator = epoch_generator(self.seed, epoch, AUGMENT_STREAM, self.device)
        sums = {name: torch.zeros((), device=self.device) for name in self.method.step_names}
        lr = self.optimizer.param_groups[-1]["lr"]
        start = time.perf_counter()
        bar = tqdm(
            range(self.batches_per_epoch),
            desc=f"{self.method.name} epoch {epoch + 1}/{self.epochs}",
            unit="batch",
            leave=False,
            disable=not self.progress,
        )
        for b in bar:
            index = order[b * self.batch_size : (b + 1) * self.batch_size].sort().values.numpy()
            images = torch.from_numpy(np.ascontiguousarray(self.images[index])).to(self.device, non_blocking=True)
            batch = SSLBatch(self.views[0](images, aug_generator), self.views[1](images, aug_generator), aug_generator)
            progress = (epoch * self.batches_per_epoch + b + 1) / (self.epochs * self.batches_per_epoch)
            self._train_batch(batch, progress, sums)
            lr = self.optimizer.param_groups[-1]["lr"]
            self.scheduler.step()
            if self.progress and (b % 10 == 0 or b == self.batches_per_epoch - 1):
                bar.set_postfix(loss=f"{sum(sums.values()).item() / (b + 1):.4g}")
        seconds = time.perf_counter() - start
        losses = {name: total.item() / self.batches_per_epoch for name, total in sums.items()}
        bad = [name for name, value in losses.items() if not math.isfinite(value)]
        if bad:
            raise TrainingFailed(f"loss became non-finite in epoch {epoch + 1} ({', '.join(bad)})")
        images_seen = self.batches_per_epoch * self.batch_size
        return EpochStats(epoch, losses, lr, seconds, images_seen / seconds)

    def _train_batch(self, batch: SSLBatch, progress: float, sums: dict[str, torch.Tensor]) -> None:
        steps = self.method.training_steps(batch)
        while True:
            with autocast(self.device):
                step = next(steps, None)
            if step is None:
                return
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(step.loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.method.after_optimizer_step(progress)
            sums[step.name] += step.loss.detach()

    def state_dict(self) -> dict:
        return {
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


def build_optimizer(groups: list[ParamGroup], optim: OptimConfig) -> torch.optim.Optimizer:
    param_groups = [{"params": g.params, "lr": optim.lr * g.lr_scale} for g in groups if g.params]
    if optim.name == "sgd":
        return torch.optim.SGD(param_groups, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    if optim.name == "adamw":
        return torch.optim.AdamW(param_groups, lr=optim.lr, weight_decay=optim.weight_decay)
    raise ValueError(f"unknown optimizer {optim.name!r}")


def warmup_cosine(batch: int, warmup: int, total: int) -> float:
    """LR multiplier: linear warm-up, then cosine annealing to 0 over the remaining batches."""
    if batch < warmup:
        return (batch + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (batch - warmup) / max(1, total - warmup)))
