"""What the GPU benchmark times, written for any device: on CUDA at the paper's scale, and (tiny) on the
CPU in the default suite, so the logic is checked on machines without a GPU.

Everything is built as ``bench run`` builds it: the run config from the paper preset (so methods get
the preset's options and the dataset's jigsaw grids), the method from the registry, placed in
channels_last, trained by the harness's Trainer under the device's autocast. Every timed call ends
with the device idle (``synchronize``), so a time covers the GPU's work, not only its queueing.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.devices import autocast, grad_scaler, place
from bench.resolve import build_run_config, deep_merge, load_preset
from bench.schema import EvalConfig, OptimConfig, RunConfig
from bench.trainer import Trainer
from datasets.augment import build_views
from methods import build_method
from methods.backbones import Backbone
from methods.base import SSLBatch, SSLMethod
from methods.byol import ema_tau
from methods.losses import barlow_twins, byol, nt_xent

PROGRESS = 0.5  # BYOL's EMA schedule position: any value costs the same


@dataclass(frozen=True)
class Scale:
    """Sizes of one benchmark: the paper preset's on a GPU, tiny ones on the CPU."""

    backbone: str
    image_size: int
    batch: int  # SSL batch
    finetune_batch: int
    eval_batch: int
    steps: int = 8  # batches per timed call
    dataset: str = "isic2017"  # whose jigsaw grids FG-SSL trains with (16, 8, 4)
    preset: str = "paper"  # whose optimizer and method options (head widths) the methods get

    @classmethod
    def paper(cls, batch: int | None = None, steps: int = 8) -> Scale:
        tree = load_preset("paper")
        evaluation = tree.get("eval", {})
        return cls(
            backbone=tree["model"]["backbone"],
            image_size=tree["data"]["image_size"],
            batch=batch or tree["train"]["batch_size"],
            finetune_batch=evaluation.get("finetune_batch_size", EvalConfig.finetune_batch_size),
            eval_batch=evaluation.get("batch_size", EvalConfig.batch_size),
            steps=steps,
        )

    @property
    def images_per_call(self) -> int:
        return self.batch * self.steps


def run_config(method: str, scale: Scale, **eval_section: Any) -> RunConfig:
    """The run config of ``method`` at ``scale`` (its preset, sizes and backbone), from random weights
    (speed does not depend on them, and the benchmark needs no download)."""
    overrides = {
        "model": {"backbone": scale.backbone, "weights": None},
        "data": {"image_size": scale.image_size},
        "eval": eval_section,
    }
    return build_run_config(deep_merge(load_preset(scale.preset), overrides), method, scale.dataset, scale.batch, 0)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], Any], device: torch.device) -> Callable[[], None]:
    """``function`` followed by waiting for the device: what a wall-clock timer of it should see."""

    def call() -> None:
        function()
        synchronize(device)

    return call


def median_seconds(function: Callable[[], Any], device: torch.device, rounds: int = 3, warmup: int = 1) -> float:
    call = timed(function, device)
    for _ in range(warmup):
        call()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build(method: str, scale: Scale, device: torch.device, seed: int = 0) -> tuple[SSLMethod, OptimConfig]:
    config = run_config(method, scale)
    torch.manual_seed(seed)
    model = build_method(method, Backbone(config.model.backbone, config.model.stem), config.method_options)
    return place(model, device).train(), config.optim


def device_images(scale: Scale, device: torch.device, count: int, seed: int = 0) -> torch.Tensor:
    """Random uint8 images resident on ``device``: the decoded cache as the GPU path holds it."""
    generator = torch.Generator().manual_seed(seed)
    shape = (count, 3, scale.image_size, scale.image_size)
    return torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8).to(device)


def prepared_views(method: SSLMethod, scale: Scale, device: torch.device) -> SSLBatch:
    """One batch of the method's two views, made once on the device."""
    first, second = build_views(method.view_recipe, scale.image_size)
    generator = torch.Generator(device).manual_seed(0)
    images = device_images(scale, device, scale.batch)
    return SSLBatch(first(images, generator), second(images, generator), torch.Generator(device).manual_seed(1))


def trainer_epoch(method: SSLMethod, batch: SSLBatch, optim: OptimConfig, scale: Scale, device: torch.device):
    """``scale.steps`` batches through the harness's own epoch loop (data order, autocast, GradScaler,
    one optimizer step per loss, the method's hooks, learning-rate schedule, on-device loss sums), on
    views made once: the training half of an epoch. Each call is one more epoch."""
    trainer = Trainer(
        method,
        np.zeros((scale.images_per_call, 3, scale.image_size, scale.image_size), dtype=np.uint8),
        (lambda images, generator: batch.view1, lambda images, generator: batch.view2),
        optim,
        epochs=1_000_000,
        batch_size=scale.batch,
        seed=0,
        device=device,
        progress=False,
    )
    epochs = iter(range(1_000_000))
    return lambda: trainer.run_epoch(next(epochs))


def bare_steps(method: SSLMethod, batch: SSLBatch, optim: OptimConfig, scale: Scale, device: torch.device):
    """The same training written out without the harness: the method's networks called directly, its
    loss, backward and an SGD step under the same autocast and loss scaling, ``scale.steps`` times.
    For the methods the issue sets a target for (a test may name them)."""
    params = [p for group in method.param_groups() for p in group.params]
    optimizer = torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    scaler = grad_scaler(device)
    name, options = method.name, method.config
    online = target = []
    if name == "byol":
        online = [*method.backbone.parameters(), *method.projector.parameters()]
        target = [*method.target_backbone.parameters(), *method.target_projector.parameters()]

    def loss() -> torch.Tensor:
        if name == "byol":
            p1 = method.predictor(method.projector(method.backbone(batch.view1)))
            p2 = method.predictor(method.projector(method.backbone(batch.view2)))
            with torch.no_grad():
                t1 = method.target_projector(method.target_backbone(batch.view1))
                t2 = method.target_projector(method.target_backbone(batch.view2))
            return byol(p1, t2) + byol(p2, t1)
        z1 = method.projector(method.backbone(batch.view1))
        z2 = method.projector(method.backbone(batch.view2))
        if name == "simclr":
            return nt_xent(z1, z2, options.temperature)
        if name == "barlow":
            return barlow_twins(z1, z2, options.lambd, options.bt_variant)
        raise ValueError(f"no bare step written for {name}")

    def steps() -> torch.Tensor:
        """The last step's loss (left on the device: reading it would wait for the GPU)."""
        for _ in range(scale.steps):
            with autocast(device):
                value = loss()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(value).backward()
            scaler.step(optimizer)
            scaler.update()
            if target:
                with torch.no_grad():
                    torch._foreach_lerp_(target, online, 1 - ema_tau(options.tau_base, PROGRESS))
        return value.detach()

    return steps


def trunk_steps(batch: SSLBatch, optim: OptimConfig, scale: Scale, device: torch.device):
    """The bare ResNet forward + backward + SGD step on both views, nothing else (no heads, no loss to
    speak of): the yardstick every method's training rate is also given against."""
    torch.manual_seed(0)
    backbone = place(Backbone(scale.backbone, "imagenet"), device).train()
    optimizer = torch.optim.SGD(
        backbone.parameters(), lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay
    )
    scaler = grad_scaler(device)

    def steps() -> None:
        for _ in range(scale.steps):
            with autocast(device):
                value = backbone(batch.view1).float().mean() + backbone(batch.view2).float().mean()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(value).backward()
            scaler.step(optimizer)
            scaler.update()

    return steps


def supervised_steps(scale: Scale, device: torch.device, classes: int = 7):
    """The bare ResNet forward + backward + AdamW step of a fine-tune batch (one view, cross-entropy):
    the unit the fine-tune's cost is estimated in."""
    config = run_config("random_init", scale, protocols=["knn", "linear", "finetune"])
    torch.manual_seed(0)
    backbone = Backbone(config.model.backbone, config.model.stem)
    model = place(torch.nn.Sequential(backbone, torch.nn.Linear(backbone.out_dim, classes)), device).train()
    evaluation = config.eval
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=evaluation.finetune_lr, weight_decay=evaluation.finetune_weight_decay
    )
    scaler = grad_scaler(device)
    images = _normalised(device_images(scale, device, scale.finetune_batch))
    labels = torch.arange(scale.finetune_batch, device=device) % classes

    def steps() -> None:
        for _ in range(scale.steps):
            with autocast(device):
                value = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(value).backward()
            scaler.step(optimizer)
            scaler.update()

    return steps


def eval_forward(scale: Scale, device: torch.device):
    """Frozen-feature extraction: the backbone's forward under no_grad at the eval batch size."""
    torch.manual_seed(0)
    backbone = place(Backbone(scale.backbone, "imagenet"), device).eval()
    images = _normalised(device_images(scale, device, scale.eval_batch))

    @torch.no_grad()
    def forward() -> None:
        for _ in range(scale.steps):
            with autocast(device):
                backbone(images)

    return forward


def pipeline(recipe: Any, scale: Scale, device: torch.device, cached: int | None = None):
    """Both views of ``scale.steps`` batches drawn from a device-resident uint8 cache (the trainer's
    sorted slice of a seeded epoch order), augmented on the device."""
    images = device_images(scale, device, cached or 4 * scale.batch)
    first, second = build_views(recipe, scale.image_size)
    order = torch.Generator().manual_seed(0)
    augment = torch.Generator(device).manual_seed(1)

    def batches() -> None:
        for _ in range(scale.steps):
            index = torch.randperm(len(images), generator=order)[: scale.batch].sort().values.to(device)
            chosen = images[index]
            first(chosen, augment)
            second(chosen, augment)

    return batches


def _normalised(images: torch.Tensor) -> torch.Tensor:
    return (images.float() / 255 - 0.45).contiguous(memory_format=torch.channels_last)
