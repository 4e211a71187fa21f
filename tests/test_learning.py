"""Every method actually learns on the synthetic data: its loss falls and kNN beats chance.

A budget a test can afford (8 epochs of 512 images at 64 px; 5 for FG-SSL, whose four steps per batch
make each epoch about four times as long); the stronger claim, every method beating a randomly
initialised backbone, is measured at the ``cpu`` preset (docs/results.md).
"""

import os

import pytest
import torch

from bench.ledger import Ledger
from bench.resolve import deep_merge, load_preset
from bench.run import execute
from bench.sweep import expand
from bench.tracking import Tracker

pytestmark = pytest.mark.slow
CHANCE = 0.25  # four balanced classes
EPOCHS = {"fgssl": 5}  # the others: 8


@pytest.fixture
def own_cores():
    """Pure computation in this process: both cores (the suite's default is one thread per process),
    unless other pytest-xdist workers share them (.ci/run's `-n 2`): two threads on a core another
    worker keeps busy spin-wait: the test took 3.5-5x as long there as alone."""
    before = torch.get_num_threads()
    torch.set_num_threads(1 if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1 else 2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("method", ["simclr", "byol", "barlow", "fgssl"])
def test_loss_falls_and_knn_beats_chance(tmp_path, method, own_cores):
    tree = deep_merge(
        load_preset("smoke"),
        {
            "methods": [method],
            "data": {"image_size": 64, "synthetic_sizes": [512, 128, 128], "train_limit": None, "eval_limit": None},
            "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-6},
            "train": {"epochs": EPOCHS.get(method, 8), "batch_size": 64},
            # The cpu preset's view options, made for this data (FG-SSL's views get colour jitter).
            "views": load_preset("cpu")["views"],
        },
    )
    (config,) = expand(tree)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "learning")
    outcome = execute(config, tracker, Ledger(tmp_path), progress=False)
    assert outcome.status == "FINISHED"
    losses = [m.value for m in tracker.client.get_metric_history(outcome.run_id, "train.loss")]
    assert losses[-1] < losses[0]
    # A collapsed or untrained-by-mistake encoder lands near chance (sd ~0.04 for 128 images).
    assert outcome.metrics["knn.val.accuracy"] > CHANCE + 0.04, outcome.metrics
