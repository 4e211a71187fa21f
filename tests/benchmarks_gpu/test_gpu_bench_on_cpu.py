"""The GPU benchmark's own functions, run tiny on the CPU in the default suite: what the GPU times is
built and trained as the harness does, its bare references compute the methods' own losses, and the
plan's arithmetic is right. (No timing is asserted here.)"""

from __future__ import annotations

import math

import pytest
import torch
from gpu_plan import DATASET_IMAGES, REPRODUCE_METHODS, Protocol, Rates, dataset_hours, measure, plan_text
from gpu_rates import Scale, bare_steps, build, pipeline, prepared_views, trainer_epoch, trunk_steps

# The smoke preset's narrow heads: the paper's (Barlow Twins' 8192-wide projector) take seconds per step here.
TINY = Scale("resnet18", image_size=32, batch=4, finetune_batch=4, eval_batch=4, steps=1, preset="smoke")
CPU = torch.device("cpu")


@pytest.mark.parametrize("name", ["simclr", "byol", "barlow"])
def test_the_bare_step_is_the_methods_training_written_out(name):
    method, optim = build(name, TINY, CPU)
    bare_method, _ = build(name, TINY, CPU)
    batch = prepared_views(method, TINY, CPU)
    stats = trainer_epoch(method, batch, optim, TINY, CPU)()
    before = bare_method.backbone.layer4[0].conv1.weight.detach().clone()
    bare_loss = bare_steps(bare_method, batch, optim, TINY, CPU)()
    # Same weights, same views: the first step's loss is the method's own, and the step trains.
    assert bare_loss.item() == pytest.approx(stats.losses["loss"], rel=1e-5)
    assert not torch.equal(before, bare_method.backbone.layer4[0].conv1.weight)


def test_the_plan_from_rates_measured_on_the_cpu():
    rates = measure(TINY, CPU, REPRODUCE_METHODS, rounds=1, warmup=0)
    assert set(rates.ssl) == set(REPRODUCE_METHODS) and all(r > 0 for r in rates.ssl.values())
    protocol = Protocol.paper(REPRODUCE_METHODS)
    assert (protocol.ssl_epochs, protocol.finetune_epochs) == (1000, 100)  # bench/presets/paper.yaml
    # bench reproduce fine-tunes every method progressively: three levels and their concatenation
    assert set(protocol.finetune_steps.values()) == {4} and protocol.seeds == 3
    assert {"fgssl", "barlow", "barlow+fgssl", "simclr"} <= set(protocol.finetune_steps)
    text = plan_text(rates, protocol, "cpu")
    assert all(f"| {dataset} |" in text for dataset in DATASET_IMAGES)


def test_the_pipeline_and_the_bare_resnet_step_run():
    fgssl, optim = build("fgssl", TINY, CPU)
    pipeline(fgssl.view_recipe, TINY, CPU)()
    trunk_steps(prepared_views(fgssl, TINY, CPU), optim, TINY, CPU)()


def test_the_plans_arithmetic():
    rates = Rates({"a": 1000.0, "b": 1000.0}, finetune_step=500.0, eval_forward=2000.0)
    protocol = Protocol(ssl_epochs=10, finetune_epochs=2, finetune_steps={"a": 1, "b": 4}, seeds=3)
    train, val, test = DATASET_IMAGES["isic2017"]
    assert (train, val, test) == (2000, 150, 600)
    # per run: SSL 10 x 2000 / 1000 = 20 s; fine-tune 2 x (2000 x steps / 500 + 150 / 2000) + 2750 / 2000 s
    rest = sum(2 * (2000 * steps / 500 + 150 / 2000) + 2750 / 2000 for steps in (1, 4))
    ssl_hours, rest_hours = dataset_hours("isic2017", rates, protocol)
    assert math.isclose(ssl_hours, 3 * 40 / 3600) and math.isclose(rest_hours, 3 * rest / 3600)
