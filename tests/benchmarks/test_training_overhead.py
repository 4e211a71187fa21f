"""What the harness costs on top of the arithmetic, at the cpu preset (ResNet-18, 64 px, batch 64, AdamW).

Subject: ``Trainer._train_batch`` plus the scheduler step, on views prepared once (what ``run_epoch``
does per batch apart from augmenting images, which ``test_input_pipeline`` covers; the trainer still
copies its uint8 batch out of an in-memory array, about 0.1 ms).
Reference: the same model's forward, loss, backward and AdamW step (and BYOL's EMA update) written out
below, on the same tensors, with an identical copy of the model. Target: at most 1.10x.

Second target: FG-SSL's four optimizer steps per batch against one Barlow Twins step on the same views,
both through the trainer: at most 4.4x.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch

from datasets.augment import build_views
from methods.base import SSLBatch, SSLMethod
from methods.byol import ema_tau
from methods.losses import barlow_twins, byol, nt_xent

MAX_OVERHEAD = 1.10
MAX_FGSSL_VS_BARLOW = 4.4
PROGRESS = 0.5  # BYOL's EMA schedule position; any value costs the same


def prepared_views(cpu_preset, recipe: str) -> SSLBatch:
    images = cpu_preset.uint8_batch(seed=0)
    first, second = build_views(recipe, cpu_preset.image_size)
    generator = torch.Generator().manual_seed(0)
    return SSLBatch(first(images, generator), second(images, generator), torch.Generator().manual_seed(1))


def bare_step(method: SSLMethod, lr: float, weight_decay: float) -> Callable[[SSLBatch], None]:
    """The training step written directly: no trainer, no method interface, no scheduler."""
    params = [p for group in method.param_groups() for p in group.params]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    name, options = method.name, method.config

    def step(batch: SSLBatch) -> None:
        if name == "byol":
            p1 = method.predictor(method.projector(method.backbone(batch.view1)))
            p2 = method.predictor(method.projector(method.backbone(batch.view2)))
            with torch.no_grad():
                t1 = method.target_projector(method.target_backbone(batch.view1))
                t2 = method.target_projector(method.target_backbone(batch.view2))
            loss = byol(p1, t2) + byol(p2, t1)
        else:
            z1 = method.projector(method.backbone(batch.view1))
            z2 = method.projector(method.backbone(batch.view2))
            if name == "simclr":
                loss = nt_xent(z1, z2, options.temperature)
            else:
                loss = barlow_twins(z1, z2, options.lambd, options.bt_variant)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if name == "byol":
            with torch.no_grad():
                tau = ema_tau(options.tau_base, PROGRESS)
                online = [*method.backbone.parameters(), *method.projector.parameters()]
                target = [*method.target_backbone.parameters(), *method.target_projector.parameters()]
                for t, o in zip(target, online, strict=True):
                    t.lerp_(o, 1 - tau)

    return step


def trainer_step(cpu_preset, method: SSLMethod, batch: SSLBatch) -> Callable[[], None]:
    return cpu_preset.training_step(method, batch, PROGRESS)[0]


@pytest.mark.parametrize("name", ["simclr", "byol", "barlow"])
def test_trainer_overhead(ratio_bench, cpu_preset, name) -> None:
    method = cpu_preset.method(name)
    bare_method = copy.deepcopy(method)  # same weights, its own optimizer state
    optim = cpu_preset.optim()
    assert optim.name == "adamw", "the bare reference below writes out AdamW"
    batch = prepared_views(cpu_preset, method.view_recipe)
    through_trainer = trainer_step(cpu_preset, method, batch)
    bare = bare_step(bare_method, optim.lr, optim.weight_decay)
    timing = ratio_bench.interleaved(through_trainer, lambda: bare(batch), rounds=5, warmup=1)
    ratio = timing.subject_median / timing.reference_median
    ratio_bench.report(
        f"trainer/bare {name}",
        ratio,
        f"<= {MAX_OVERHEAD}",
        f"trainer {timing.subject_median * 1e3:.0f} ms, bare {timing.reference_median * 1e3:.0f} ms "
        f"(min {timing.subject_min * 1e3:.0f} / {timing.reference_min * 1e3:.0f} ms)",
        trainer_seconds=timing.subject_median,
        bare_seconds=timing.reference_median,
    )
    assert ratio <= MAX_OVERHEAD


def test_fgssl_iteration_vs_barlow_step(ratio_bench, cpu_preset) -> None:
    fgssl, barlow = cpu_preset.method("fgssl"), cpu_preset.method("barlow")
    assert len(fgssl.step_names) == 4
    batch = prepared_views(cpu_preset, fgssl.view_recipe)
    fgssl_step, barlow_step = trainer_step(cpu_preset, fgssl, batch), trainer_step(cpu_preset, barlow, batch)
    timing = ratio_bench.interleaved(fgssl_step, barlow_step, rounds=4, warmup=1)
    ratio = timing.subject_median / timing.reference_median
    ratio_bench.report(
        "fgssl 4-step iteration/barlow step",
        ratio,
        f"<= {MAX_FGSSL_VS_BARLOW}",
        f"fgssl {timing.subject_median * 1e3:.0f} ms, barlow {timing.reference_median * 1e3:.0f} ms",
        fgssl_seconds=timing.subject_median,
        barlow_seconds=timing.reference_median,
    )
    assert ratio <= MAX_FGSSL_VS_BARLOW
