"""The input pipeline must outrun training: reading a batch from the memory-mapped uint8 cache and
making both views has to deliver at least 3x the images per second of a cpu-preset SimCLR training step
(ResNet-18, 64 px, batch 64, through the trainer), so augmentation stays a small share of an epoch.

The read is the trainer's: a sorted slice of a seeded epoch order, copied out of the memmap.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datasets.augment import build_views
from methods.base import SSLBatch
from methods.registry import get_method

MIN_SPEEDUP = 3.0
TRAIN_IMAGES = 1024  # the cpu preset's synthetic training set


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> np.ndarray:
    path = tmp_path_factory.mktemp("cache") / "train.npy"
    rng = np.random.default_rng(0)
    np.save(path, rng.integers(0, 256, (TRAIN_IMAGES, 3, 64, 64), dtype=np.uint8))
    return np.load(path, mmap_mode="r")


class Pipeline:
    """Batches of an epoch in the trainer's order, each read from the memmap and augmented twice."""

    def __init__(self, images: np.ndarray, recipe: str, batch: int, image_size: int) -> None:
        self.images, self.batch = images, batch
        self.views = build_views(get_method(recipe).view_recipe, image_size)
        self.order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
        self.generator = torch.Generator().manual_seed(1)
        self.position = 0

    def next_batch(self) -> SSLBatch:
        if self.position + self.batch > len(self.images):
            self.position = 0
        index = self.order[self.position : self.position + self.batch].sort().values.numpy()
        self.position += self.batch
        images = torch.from_numpy(np.ascontiguousarray(self.images[index]))
        return SSLBatch(self.views[0](images, self.generator), self.views[1](images, self.generator))


@pytest.mark.parametrize("recipe", ["fgssl", "simclr"])
def test_pipeline_outruns_training(ratio_bench, cpu_preset, cache, recipe) -> None:
    pipeline = Pipeline(cache, recipe, cpu_preset.batch, cpu_preset.image_size)
    training = Pipeline(cache, "simclr", cpu_preset.batch, cpu_preset.image_size).next_batch()
    train_step, _ = cpu_preset.training_step(cpu_preset.method("simclr"), training)

    # 16 pipeline rounds (one epoch of the cpu preset), one training step every 4th round
    timing = ratio_bench.interleaved(pipeline.next_batch, train_step, rounds=16, warmup=1, reference_every=4)
    pipeline_rate = cpu_preset.batch / timing.subject_median
    training_rate = cpu_preset.batch / timing.reference_median
    ratio = pipeline_rate / training_rate
    ratio_bench.report(
        f"pipeline({recipe})/simclr training images/s",
        ratio,
        f">= {MIN_SPEEDUP}",
        f"pipeline {pipeline_rate:.0f} img/s ({timing.subject_median * 1e3:.1f} ms/batch), "
        f"training {training_rate:.0f} img/s ({timing.reference_median * 1e3:.0f} ms/batch)",
        pipeline_images_per_second=pipeline_rate,
        training_images_per_second=training_rate,
    )
    assert ratio >= MIN_SPEEDUP
