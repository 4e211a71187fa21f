"""Why the cache exists: an epoch read from it must be at least 20x faster than decoding JPEGs."""

from __future__ import annotations

import time

import numpy as np
import pytest
from official_layouts import write_image

from datasets.cache import cached_images
from datasets.decode import decode_all

IMAGES, SIZE, BATCH, MIN_RATIO = 256, 32, 64, 20


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jpegs")
    return [write_image(folder / f"{n}.jpg", n, (256, 256)) for n in range(IMAGES)]


def read_epoch(images: np.ndarray) -> int:
    """What a training loop does per epoch: copy every batch out of the array."""
    return sum(
        int(np.ascontiguousarray(images[start : start + BATCH])[:, 0, 0, 0].sum())
        for start in range(0, len(images), BATCH)
    )


def fastest(function, repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        timings.append(time.perf_counter() - started)
    return min(timings)


def test_cached_epoch_is_20x_faster_than_decoding(benchmark, jpegs, tmp_path):
    images = cached_images("bench", "train", jpegs, SIZE, tmp_path / "cache")
    out = np.empty((IMAGES, 3, SIZE, SIZE), dtype=np.uint8)
    decoding = fastest(lambda: decode_all(jpegs, SIZE, out, workers=1), repeats=2)
    reading = fastest(lambda: read_epoch(images), repeats=20)
    benchmark(read_epoch, images)
    ratio = decoding / reading
    print(
        f"\n{IMAGES} images at {SIZE} px: decode {decoding * 1e3:.1f} ms, cached epoch {reading * 1e3:.3f} ms, "
        f"ratio {ratio:.0f}x"
    )
    assert np.array_equal(out, images)
    assert ratio >= MIN_RATIO, f"cached epoch only {ratio:.1f}x faster than decoding"
