"""The batched SimCLR view against torchvision's per-image PIL pipeline on the same 64 images.

Both are timed in this one test on the same machine; the figure that matters is the ratio. Both run on
one thread (PIL is single-threaded anyway), so the ratio is per core and does not swing with other load.
"""

from __future__ import annotations

import time

import pytest
import torch
from PIL import Image
from torchvision import transforms

from datasets.augment import IMAGENET_MEAN, IMAGENET_STD, blur_kernel_size, build_views
from methods.registry import get_method

BATCH, SIZE = 64, 64
MIN_SPEEDUP = 3.0


def pil_pipeline() -> transforms.Compose:
    """The simclr recipe as torchvision applies it, one PIL image at a time."""
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(SIZE, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)),
            transforms.RandomHorizontalFlip(0.5),
            transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            transforms.RandomGrayscale(0.2),
            transforms.RandomApply([transforms.GaussianBlur(blur_kernel_size(SIZE), sigma=(0.1, 2.0))], p=0.5),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def best_of(fn, rounds: int, timer=time.perf_counter) -> float:
    """Fastest of ``rounds`` calls, on ``timer`` (the benchmark's own clock, so both sides share one)."""
    times = []
    for _ in range(rounds):
        start = timer()
        fn()
        times.append(timer() - start)
    return min(times)


def test_batched_simclr_view_beats_per_image_pil(benchmark) -> None:
    images = torch.randint(
        0, 256, (BATCH, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    pil_images = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images]
    view, _ = build_views(get_method("simclr").view_recipe, SIZE)
    generator = torch.Generator().manual_seed(0)
    reference = pil_pipeline()
    torch.manual_seed(0)  # torchvision's transforms draw from the global generator

    def run_pil() -> torch.Tensor:
        return torch.stack([reference(image) for image in pil_images])

    assert run_pil().shape == view(images, generator).shape == (BATCH, 3, SIZE, SIZE)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # torchvision blurs PIL images with torch ops, so pin both sides
    try:
        pil_seconds = best_of(run_pil, rounds=7, timer=getattr(benchmark, "_timer", time.perf_counter))
        benchmark.pedantic(view, args=(images, generator), rounds=50, warmup_rounds=3)
    finally:
        torch.set_num_threads(threads)
    if benchmark.stats is None:
        pytest.skip("benchmarks disabled: no timing to compare")
    batched_seconds = benchmark.stats.stats.min
    ratio = pil_seconds / batched_seconds
    benchmark.extra_info["pil_seconds"] = pil_seconds
    benchmark.extra_info["speedup_vs_pil"] = ratio
    print(
        f"\nsimclr view, {BATCH} images at {SIZE}px, one thread each: "
        f"PIL {pil_seconds * 1e3:.1f} ms, batched {batched_seconds * 1e3:.1f} ms, ratio {ratio:.1f}x"
    )
    assert ratio >= MIN_SPEEDUP
