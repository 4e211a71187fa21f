"""Making the next batch while the current one trains (bench/prefetch.py): the same batches in the same
order, failures raised where they belong, the thread joined on every way out, and seeded training bit
for bit the same with and without it, resumed or not. Also the GPU data path's decisions, on the CPU."""

from __future__ import annotations

import hashlib
import threading
import time

import numpy as np
import pytest
import torch

from bench.prefetch import Ahead, DeviceImages, cache_fits, free_device_memory, tensors_in
from bench.schema import OptimConfig
from bench.seeding import seed_everything
from bench.trainer import Trainer, TrainingFailed
from datasets import DataRequest, load_dataset
from datasets.augment import build_views
from methods import build_method
from methods.backbones import Backbone
from methods.base import SSLBatch, StepLoss

FGSSL_SMALL = {"grids": [8, 4, 2], "block_mid_channels": 16, "block_out_channels": 32, "embed_dim": 16}
SMALL = {
    "barlow": {"proj_dims": [32, 32]},
    "fgssl": FGSSL_SMALL,
    "rotation": {},
    "rotation+fgssl": {"rotation": {}, "fgssl": FGSSL_SMALL},
}


def prefetch_threads_alive() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.endswith("prefetch")]


# ----- Ahead -----


def test_items_come_in_order_from_a_background_thread_one_ahead():
    made: list[tuple[int, str]] = []
    taken: list[int] = []

    def make(index: int) -> int:
        made.append((index, threading.current_thread().name))
        return index * 10

    with Ahead(make, 5, name="test prefetch") as items:
        for item in items:
            time.sleep(0.05)  # the consumer's "step": the thread has time to run ahead, if it would
            taken.append(item)
            # never more than one item made beyond those taken
            assert len(made) <= len(taken) + 1
    assert taken == [0, 10, 20, 30, 40]
    assert [index for index, _ in made] == [0, 1, 2, 3, 4]
    assert {name for _, name in made} == {"test prefetch"}
    assert not prefetch_threads_alive()


def test_depth_zero_makes_each_item_in_the_callers_thread():
    threads = []
    with Ahead(lambda i: threads.append(threading.current_thread()) or i, 3, depth=0) as items:
        assert list(items) == [0, 1, 2]
    assert threads == [threading.current_thread()] * 3


def test_a_failure_in_the_thread_is_raised_at_its_item_and_the_thread_is_joined():
    def make(index: int) -> int:
        if index == 2:
            raise ValueError("bad batch 2")
        return index

    taken = []
    with pytest.raises(ValueError, match="bad batch 2"), Ahead(make, 5) as items:
        for item in items:
            taken.append(item)
    assert taken == [0, 1]
    assert not prefetch_threads_alive()


def test_leaving_early_stops_the_thread_after_the_item_in_hand():
    made = []
    ahead = Ahead(lambda i: made.append(i) or i, 100)
    with pytest.raises(KeyboardInterrupt), ahead as items:
        for item in items:
            if item == 3:
                raise KeyboardInterrupt  # Ctrl-C, or SIGTERM as bench/workers.py raises it
    assert not prefetch_threads_alive()
    assert max(made) <= 4  # at most the one item ahead of the one in use


def test_a_thread_that_dies_without_a_result_is_an_error_not_a_hang():
    class Dying(Ahead):
        def _work(self) -> None:  # ends without putting anything, as a killed thread would
            return

    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="ended without making the next batch"), Dying(lambda i: i, 3) as items:
        next(items)
    assert time.perf_counter() - started < 10


def test_close_is_idempotent_and_puts_the_thread_count_back():
    before = torch.get_num_threads()
    ahead = Ahead(lambda i: torch.ones(4).sum(), 3, threads=1)
    assert len(list(ahead)) == 3
    ahead.close()
    ahead.close()
    assert torch.get_num_threads() == before
    assert not prefetch_threads_alive()


def test_tensors_in_finds_every_tensor_of_a_prepared_batch():
    a, b, c, d = (torch.zeros(1) for _ in range(4))
    batch = SSLBatch(a, b, None, {"x.puzzles": (c, [d]), "x.note": "text"})
    assert {id(t) for t in tensors_in(batch)} == {id(a), id(b), id(c), id(d)}


# ----- the device data path (exercised on the CPU) -----


def test_the_cache_goes_to_the_device_only_when_it_leaves_most_memory_to_training():
    gib = 1 << 30
    isic2018_224 = 10015 * 3 * 224 * 224  # about 1.5 GB
    assert cache_fits(isic2018_224, 16 * gib) and cache_fits(isic2018_224, 6 * gib)
    assert not cache_fits(isic2018_224, 4 * gib)
    assert cache_fits(2000 * 3 * 64 * 64, 1 * gib)  # ISIC 2017 at 64 px fits anything
    assert free_device_memory(torch.device("cpu")) is None


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (40, 3, 8, 8), dtype=np.uint8)


def test_cpu_batches_are_read_from_the_cache(images):
    source = DeviceImages(images, torch.device("cpu"))
    assert not source.resident
    index = torch.tensor([1, 5, 7])
    assert torch.equal(source.batch(index), torch.from_numpy(images[[1, 5, 7]]))


def test_a_resident_cache_gathers_the_same_rows(images):
    source = DeviceImages(images, torch.device("cpu"), resident=True)
    assert source.resident
    index = torch.tensor([0, 3, 39])
    assert torch.equal(source.batch(index), torch.from_numpy(images[[0, 3, 39]]))


def test_staging_buffers_are_reused_without_mixing_up_batches(images):
    source = DeviceImages(images, torch.device("cpu"), pin=False)
    order = np.random.default_rng(1).permutation(40)
    outputs = [source.stage(np.sort(order[i : i + 8])) for i in range(0, 40, 8)]
    outputs.append(source.stage(np.arange(3)))  # a short last batch reuses a larger buffer
    for out, start in zip(outputs, range(0, 40, 8), strict=False):
        assert torch.equal(out, torch.from_numpy(images[np.sort(order[start : start + 8])]))
    assert torch.equal(outputs[-1], torch.from_numpy(images[:3]))
    assert len(source._buffers) == 2  # two slots, each reused


# ----- the trainer -----


def make_trainer(name: str, *, prefetch: bool, epochs: int = 2) -> Trainer:
    data = load_dataset("synthetic", DataRequest(image_size=32, synthetic_sizes=(64, 8, 8)))
    seed_everything(0)
    method = build_method(name, Backbone(), SMALL[name])
    return Trainer(
        method,
        data.train.images,
        build_views(method.view_recipe, 32, color_jitter=1.0),
        OptimConfig(lr=0.05, warmup_epochs=1),
        epochs=epochs,
        batch_size=16,
        seed=0,
        device=torch.device("cpu"),
        progress=False,
        prefetch=prefetch,
    )


def fingerprint(trainer: Trainer) -> str:
    digest = hashlib.sha256()
    for value in trainer.state_dict()["method"].values():
        digest.update(value.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("name", ["fgssl", "rotation", "rotation+fgssl"])
def test_prefetch_changes_no_bit_of_a_seeded_run(name):
    """The methods that draw their own randomness (jigsaw, rotations) draw it in ``prepare``, so making
    the next batch ahead leaves every draw where it was."""
    runs = {}
    for prefetch in (False, True):
        trainer = make_trainer(name, prefetch=prefetch)
        history = trainer.fit()
        runs[prefetch] = ([stats.losses for stats in history], fingerprint(trainer))
    assert runs[True] == runs[False]
    assert not prefetch_threads_alive()


def test_a_resumed_run_with_prefetch_ends_bit_identical():
    whole = make_trainer("fgssl", prefetch=True, epochs=3)
    whole_history = whole.fit()
    first = make_trainer("fgssl", prefetch=True, epochs=3)
    first.run_epoch(0)  # then stopped: its checkpoint is the state after epoch 1
    state = first.state_dict()
    resumed = make_trainer("fgssl", prefetch=True, epochs=3)
    resumed.load_state_dict(state)
    resumed_history = resumed.fit(start_epoch=1)
    assert [s.losses for s in resumed_history] == [s.losses for s in whole_history[1:]]
    assert fingerprint(resumed) == fingerprint(whole)


def test_a_method_that_draws_in_its_steps_is_refused():
    trainer = make_trainer("barlow", prefetch=True)
    steps = trainer.method.training_steps

    def drawing(batch):
        torch.rand(1, generator=batch.generator)
        return steps(batch)

    trainer.method.training_steps = drawing
    with pytest.raises(RuntimeError, match="drew from batch.generator: draw in prepare"):
        trainer.fit()
    assert not prefetch_threads_alive()


def test_a_failing_epoch_leaves_no_prefetch_thread_behind():
    trainer = make_trainer("barlow", prefetch=True)
    trainer.method.training_steps = lambda batch: iter(
        [StepLoss("loss", trainer.method.backbone(batch.view1).sum() * torch.nan)]
    )
    with pytest.raises(TrainingFailed, match="non-finite"):
        trainer.fit()
    assert not prefetch_threads_alive()


def test_an_interrupt_mid_epoch_joins_the_thread():
    trainer = make_trainer("barlow", prefetch=True)
    steps = trainer.method.training_steps
    calls = []

    def interrupted(batch):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return steps(batch)

    trainer.method.training_steps = interrupted
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert not prefetch_threads_alive()


def test_a_failure_making_a_batch_reaches_the_training_thread():
    trainer = make_trainer("barlow", prefetch=True)

    def broken(images, generator):
        raise OSError("cache page unreadable")

    trainer.views = (broken, broken)
    with pytest.raises(OSError, match="cache page unreadable"):
        trainer.fit()
    assert not prefetch_threads_alive()


def test_views_do_not_depend_on_the_thread_count_that_makes_them():
    """The prefetch thread makes views with its own OpenMP team, narrower than the training's."""
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (64, 3, 64, 64), dtype=np.uint8))
    method = build_method("simclr", Backbone(), {"proj_hidden_dim": 32, "proj_dim": 16})
    first, second = build_views(method.view_recipe, 64, color_jitter=1.0, rotate=True)
    before = torch.get_num_threads()
    made = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            generator = torch.Generator().manual_seed(0)
            made.append((first(images, generator), second(images, generator)))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(made[0], made[1], strict=True))


@pytest.mark.slow
def test_runs_in_two_workers_match_runs_in_one_process(tmp_path):
    """``bench run --workers 2`` (one torch thread each, and a prefetch thread each) trains every
    configuration bit for bit as a single process at one thread does."""
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    sweep = ["--preset", "smoke", "--no-progress", "--methods", "fgssl", "rotation", "--epochs", "2"]
    results = {}
    for label, extra in (("one", ["--threads", "1"]), ("two", ["--threads", "2", "--workers", "2"])):
        uri = f"sqlite:///{tmp_path / label / 'mlflow.db'}"
        done = subprocess.run(
            [sys.executable, "-m", "bench", "run", *sweep, "--tracking-uri", uri, *extra],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        client = MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
        results[label] = {
            run.data.tags["config_hash"]: (
                [
                    m.value
                    for m in sorted(client.get_metric_history(run.info.run_id, "train.loss"), key=lambda m: m.step)
                ],
                {k: v for k, v in run.data.metrics.items() if k.startswith(("knn.", "linear."))},
            )
            for run in runs
            if run.info.status == "FINISHED"
        }
    assert len(results["one"]) == 2 and results["one"] == results["two"]
