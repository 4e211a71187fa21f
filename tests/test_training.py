"""The trainer: seeded runs repeat bit for bit, the schedule is right, and failures are reported."""

import math

import pytest
import torch

from bench.ledger import Ledger
from bench.progress import EpochClock, epoch_line, epoch_metrics, loss_metrics, without_single_step
from bench.resolve import load_preset
from bench.run import execute
from bench.schema import OptimConfig
from bench.seeding import seed_everything
from bench.sweep import expand
from bench.tracking import Tracker
from bench.trainer import EpochStats, Trainer, TrainingFailed, warmup_cosine
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
    steps = {m for m in client.get_run(first.run_id).data.metrics if m.startswith("train.loss.")}
    assert steps == (
        {"train.loss.level1", "train.loss.level2", "train.loss.level3", "train.loss.concat"}
        if method == "fgssl"
        else set()
    )
    digests = [{i.dataset.digest for i in client.get_run(o.run_id).inputs.dataset_inputs} for o in (first, other_seed)]
    assert digests[0] == digests[1] and len(digests[0]) == 3  # the same three splits, whatever the seed trains


def test_one_step_methods_log_their_loss_once_and_several_steps_each_and_their_sum():
    assert loss_metrics("train.loss", {"loss": 2.0}) == {"train.loss": 2.0}
    assert loss_metrics("train.loss", {"level1": 1.0, "concat": 2.5}) == {
        "train.loss.level1": 1.0,
        "train.loss.concat": 2.5,
        "train.loss": 3.5,
    }
    stats = EpochStats(epoch=0, losses={"loss": 2.0}, lr=0.1, seconds=3.0, images_per_second=200.0)
    assert set(epoch_metrics(stats)) == {"train.loss", "train.lr", "train.epoch_seconds", "train.images_per_second"}
    # A checkpoint written before the rename: its lone step name is not re-logged beside train.loss.
    old = {"train.loss.loss": 2.0, "train.loss": 2.0, "train.lr": 0.1}
    assert without_single_step(old) == {"train.loss": 2.0, "train.lr": 0.1}
    four = {"train.loss.level1": 1.0, "train.loss.concat": 2.0, "train.loss": 3.0}
    assert without_single_step(four) == four


def test_each_epoch_line_says_how_long_the_rest_of_the_training_takes():
    clock = EpochClock(epochs=8)
    stats = EpochStats(epoch=0, losses={"loss": 5.2}, lr=0.1, seconds=3.1, images_per_second=200.0)
    line = epoch_line("simclr-synthetic-b32-s0", stats, 8, 5.2, clock.left(0, 3.1))
    assert line == "simclr-synthetic-b32-s0 epoch 1/8: loss 5.2, 3.1 s, 200 img/s; about 22 s of training left"
    assert clock.left(1, 4.9) == pytest.approx(4.0 * 6)  # the mean of the epochs timed so far
    assert "about 2.0 min" in epoch_line("x", stats, 8, 1.0, 120.0) and "about 1.5 h" in epoch_line(
        "x", stats, 8, 1.0, 5400
    )
    last = EpochStats(epoch=7, losses={"loss": 1.0}, lr=0.0, seconds=3.0, images_per_second=200.0)
    assert epoch_line("x", last, 8, 1.0, clock.left(7, 3.0)).endswith("200 img/s")  # nothing left to estimate


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
