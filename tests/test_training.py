"""The trainer: seeded runs repeat bit for bit, the schedule is right, and failures are reported."""

import math

import pytest
import torch

from bench.ledger import Ledger
from bench.resolve import load_preset
from bench.run import execute
from bench.schema import OptimConfig
from bench.seeding import seed_everything
from bench.sweep import expand
from bench.tracking import Tracker
from bench.trainer import Trainer, TrainingFailed, warmup_cosine
from datasets import DataRequest, load_dataset
from datasets.augment import build_views
from methods import build_method
from methods.backbones import Backbone
from methods.base import StepLoss


def smoke_config(method, **train):
    tree = load_preset("smoke")
    tree["train"] = {**tree["train"], **train}
    return expand({**tree, "methods": [method]})[0]


@pytest.mark.parametrize("method", ["simclr", "fgssl"])
def test_two_seeded_runs_repeat_bit_for_bit(tmp_path, method):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "repeat")
    ledger = Ledger(tmp_path)
    config = smoke_config(method)
    first = execute(config, tracker, ledger, progress=False)
    second = execute(config, tracker, ledger, progress=False, force=True)
    assert first.status == second.status == "FINISHED"
    assert first.metrics == second.metrics
    client = tracker.client
    losses = [[m.value for m in client.get_metric_history(o.run_id, "train.loss")] for o in (first, second)]
    assert losses[0] == losses[1] and len(losses[0]) == 2
    other_seed = execute(smoke_config(method, seed=1), tracker, ledger, progress=False)
    assert [m.value for m in client.get_metric_history(other_seed.run_id, "train.loss")] != losses[0]


def make_trainer(method_name="barlow", epochs=2, options=None):
    data = load_dataset("synthetic", DataRequest(image_size=32, synthetic_sizes=(64, 8, 8)))
    seed_everything(0)
    method = build_method(method_name, Backbone(), options or {"proj_dims": [32, 32]})
    views = build_views(method.view_recipe, 32)
    return Trainer(
        method,
        data.train.images,
        views,
        OptimConfig(lr=0.05, warmup_epochs=1),
        epochs=epochs,
        batch_size=16,
        seed=0,
        device=torch.device("cpu"),
        progress=False,
    )


def test_trainer_steps_once_per_yielded_loss_and_anneals_the_lr():
    trainer = make_trainer(
        "fgssl", options={"grids": [8, 4, 2], "block_mid_channels": 16, "block_out_channels": 32, "embed_dim": 16}
    )
    steps = []
    trainer.method.after_optimizer_step = steps.append
    history = trainer.fit()
    assert len(steps) == 2 * 4 * 4  # epochs x batches x FG-SSL steps per batch
    assert set(history[0].losses) == {"level1", "level2", "level3", "concat"}
    assert history[0].lr == pytest.approx(0.05 * warmup_cosine(3, 4, 8))
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_warmup_cosine_shape():
    assert warmup_cosine(0, 2, 10) == pytest.approx(0.5)
    assert warmup_cosine(1, 2, 10) == pytest.approx(1.0)
    assert warmup_cosine(2, 2, 10) == pytest.approx(1.0)
    assert warmup_cosine(6, 2, 10) == pytest.approx(0.5)
    assert warmup_cosine(10, 0, 10) == pytest.approx(0.0)


def test_non_finite_loss_stops_the_run_with_a_reason():
    trainer = make_trainer()
    trainer.method.training_steps = lambda batch: iter(
        [StepLoss("loss", trainer.method.backbone(batch.view1).sum() * math.nan)]
    )
    with pytest.raises(TrainingFailed, match="non-finite in epoch 1"):
        trainer.fit()


def test_batch_larger_than_training_set_is_refused():
    data = load_dataset("synthetic", DataRequest(image_size=32, synthetic_sizes=(8, 4, 4)))
    method = build_method("barlow", Backbone(), {"proj_dims": [16, 16]})
    with pytest.raises(ValueError, match="larger than the training set"):
        Trainer(
            method,
            data.train.images,
            build_views(method.view_recipe, 32),
            OptimConfig(),
            epochs=1,
            batch_size=16,
            seed=0,
            device=torch.device("cpu"),
        )
