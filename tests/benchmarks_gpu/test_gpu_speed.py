"""The GPU path's speed at the paper's scale (ResNet-50, 224 px, batch 200, the paper preset's SGD), all
on one GPU in one run, each figure a ratio of two things timed there:

- SSL training images/s of each method through the harness's Trainer (views made once), against the
  same training written out bare: at least 0.9x for SimCLR, BYOL and Barlow Twins. Every method is
  also given against the bare ResNet-50 forward + backward + step on its two views (no target).
- FG-SSL's four optimizer steps per batch against one Barlow Twins step: at most 4.4x.
- The input pipeline (device-resident uint8 cache, both views made on the GPU) against SimCLR's
  training rate: at least 3x.
- Last, the estimated GPU-hours of ``bench reproduce --scale paper`` per dataset from the rates
  measured here (``--plan``: only that).
"""

from __future__ import annotations

import gc

import pytest
import torch
from gpu_plan import REPRODUCE_METHODS, Protocol, measure, plan_text
from gpu_rates import bare_steps, build, pipeline, prepared_views, supervised_steps, trainer_epoch, trunk_steps

from bench.devices import mixed_precision

MIN_VS_BARE = 0.9
MAX_FGSSL_VS_BARLOW = 4.4
MIN_PIPELINE_VS_TRAINING = 3.0
WITH_BARE_STEP = ("simclr", "byol", "barlow")


@pytest.fixture(autouse=True)
def free_gpu_memory():
    yield
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@pytest.mark.parametrize("name", WITH_BARE_STEP)
def test_training_vs_the_bare_step(gpu_bench, scale, measured, cuda, name) -> None:
    method, optim = build(name, scale, cuda)
    bare_method, _ = build(name, scale, cuda)  # same weights, its own optimizer state
    batch = prepared_views(method, scale, cuda)
    trainer_seconds, bare_seconds = gpu_bench.interleaved(
        trainer_epoch(method, batch, optim, scale, cuda), bare_steps(bare_method, batch, optim, scale, cuda)
    )
    measured[name] = scale.images_per_call / trainer_seconds
    ratio = bare_seconds / trainer_seconds  # images/s through the trainer / images/s bare
    gpu_bench.report(
        f"{name} training / bare step, images/s",
        ratio,
        f">= {MIN_VS_BARE}",
        f"trainer {measured[name]:.0f} img/s, bare {scale.images_per_call / bare_seconds:.0f} img/s",
        images_per_second=measured[name],
    )
    assert ratio >= MIN_VS_BARE


@pytest.mark.parametrize("name", [m for m in REPRODUCE_METHODS if m not in WITH_BARE_STEP])
def test_training_vs_the_bare_resnet_step(gpu_bench, scale, measured, cuda, name) -> None:
    method, optim = build(name, scale, cuda)
    batch = prepared_views(method, scale, cuda)
    trainer_seconds, trunk_seconds = gpu_bench.interleaved(
        trainer_epoch(method, batch, optim, scale, cuda), trunk_steps(batch, optim, scale, cuda)
    )
    measured[name] = scale.images_per_call / trainer_seconds
    gpu_bench.report(
        f"{name} training / bare {scale.backbone} step on two views, images/s",
        trunk_seconds / trainer_seconds,
        "none (reported)",
        f"trainer {measured[name]:.0f} img/s, bare {scale.backbone} {scale.images_per_call / trunk_seconds:.0f} img/s",
        images_per_second=measured[name],
    )


def test_fgssl_four_steps_vs_one_barlow_step(gpu_bench, scale, cuda) -> None:
    fgssl, optim = build("fgssl", scale, cuda)
    barlow, barlow_optim = build("barlow", scale, cuda)
    assert len(fgssl.step_names) == 4
    batch = prepared_views(fgssl, scale, cuda)
    fgssl_seconds, barlow_seconds = gpu_bench.interleaved(
        trainer_epoch(fgssl, batch, optim, scale, cuda), trainer_epoch(barlow, batch, barlow_optim, scale, cuda)
    )
    ratio = fgssl_seconds / barlow_seconds
    gpu_bench.report(
        "fgssl 4-step iteration / barlow step",
        ratio,
        f"<= {MAX_FGSSL_VS_BARLOW}",
        f"fgssl {fgssl_seconds / scale.steps * 1e3:.0f} ms, barlow {barlow_seconds / scale.steps * 1e3:.0f} ms",
    )
    assert ratio <= MAX_FGSSL_VS_BARLOW


@pytest.mark.parametrize("recipe_of", ["fgssl", "simclr"])
def test_input_pipeline_vs_training(gpu_bench, scale, cuda, recipe_of) -> None:
    simclr, optim = build("simclr", scale, cuda)
    recipe = simclr.view_recipe if recipe_of == "simclr" else build(recipe_of, scale, cuda)[0].view_recipe
    training = trainer_epoch(simclr, prepared_views(simclr, scale, cuda), optim, scale, cuda)
    pipeline_seconds, training_seconds = gpu_bench.interleaved(pipeline(recipe, scale, cuda), training)
    ratio = training_seconds / pipeline_seconds  # pipeline images/s / training images/s
    gpu_bench.report(
        f"input pipeline ({recipe_of} views) / simclr training, images/s",
        ratio,
        f">= {MIN_PIPELINE_VS_TRAINING}",
        f"pipeline {scale.images_per_call / pipeline_seconds:.0f} img/s, "
        f"training {scale.images_per_call / training_seconds:.0f} img/s",
        pipeline_images_per_second=scale.images_per_call / pipeline_seconds,
    )
    assert ratio >= MIN_PIPELINE_VS_TRAINING


def test_plan(gpu_bench, scale, measured, cuda) -> None:
    """Last: GPU-hours of the paper's protocol from the rates measured above (the missing ones now)."""
    finetune_seconds = gpu_bench.alone(supervised_steps(scale, cuda))
    rates = measure(scale, cuda, REPRODUCE_METHODS, known=measured, finetune_seconds=finetune_seconds)
    name = f"{torch.cuda.get_device_name(cuda)} ({str(mixed_precision(cuda)).removeprefix('torch.')} autocast)"
    print("\n" + plan_text(rates, Protocol.paper(REPRODUCE_METHODS), name))
    assert all(rate > 0 for rate in rates.ssl.values())
