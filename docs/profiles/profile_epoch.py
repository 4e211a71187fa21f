"""Profile a shortened cpu-preset epoch per method with torch.profiler and write the top-op tables here.

Why a script and not the benchmark suite: a profile is for reading, not for a pass/fail target. Each
method trains, exactly as ``bench run --preset cpu`` builds it (ResNet-18, 64 px, batch 64, AdamW), on
the synthetic dataset's training split read from its memmap cache: one untimed warm-up batch, then an
epoch of ``--batches`` batches (default 5) under the profiler. Views, the jigsaw and the optimizer step
are labelled with ``record_function`` so the tables split the epoch into input, model and optimizer.

    OMP_NUM_THREADS=1 python docs/profiles/profile_epoch.py [--methods simclr byol barlow fgssl]
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

import methods.distributed
from bench.devices import place
from bench.resolve import load_preset
from bench.schema import OptimConfig
from bench.trainer import Trainer
from datasets import DataRequest, load_dataset
from datasets.augment import build_views
from methods import build_method
from methods.backbones import Backbone

HERE = Path(__file__).resolve().parent
ROWS = 25


def labelled(label: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` inside a profiler range, so its ops add up under one name in the tables."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with record_function(label):
            return function(*args, **kwargs)

    return wrapper


def profile_method(name: str, batches: int, images) -> str:
    config = load_preset("cpu")
    torch.manual_seed(0)
    model = config["model"]
    built = build_method(name, Backbone(model["backbone"], model["stem"]), config["method_options"].get(name, {}))
    method = place(built, torch.device("cpu"))
    first, second = build_views(method.view_recipe, config["data"]["image_size"])
    batch = config["train"]["batch_size"]
    trainer = Trainer(
        method,
        images[: batches * batch],
        (labelled("views", first), labelled("views", second)),
        OptimConfig(**config["optim"]),
        epochs=2,
        batch_size=batch,
        seed=0,
        device=torch.device("cpu"),
        progress=False,
    )
    trainer.optimizer.step = labelled("optimizer step", trainer.optimizer.step)
    warmup = Trainer(
        method,
        images[:batch],
        (first, second),
        OptimConfig(**config["optim"]),
        epochs=1,
        batch_size=batch,
        seed=0,
        device=torch.device("cpu"),
        progress=False,
    )
    warmup.run_epoch(0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        stats = trainer.run_epoch(0)
    averages = prof.key_averages()
    header = (
        f"{name}: cpu preset (ResNet-18, 64 px, batch {batch}, AdamW), {batches} batches after one warm-up batch, "
        f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}\n"
        f"epoch {stats.seconds:.2f} s under the profiler ({stats.seconds / batches:.2f} s per batch)\n"
    )
    labels = "\n".join(
        f"  {event.key:<16} {event.cpu_time_total / 1e6:8.2f} s  {event.cpu_time_total / 1e6 / stats.seconds:6.1%}"
        for event in sorted(averages, key=lambda e: -e.cpu_time_total)
        if event.key in ("views", "jigsaw", "optimizer step")
    )
    return (
        header
        + "\nlabelled ranges (inclusive time, share of the epoch):\n"
        + labels
        + "\n\ntop ops by self CPU time:\n"
        + averages.table(sort_by="self_cpu_time_total", row_limit=ROWS, max_name_column_width=60)
        + "\ntop ops by total CPU time (inclusive):\n"
        + averages.table(sort_by="cpu_time_total", row_limit=ROWS, max_name_column_width=60)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["simclr", "byol", "barlow", "fgssl"])
    parser.add_argument("--batches", type=int, default=5)
    args = parser.parse_args()
    methods.distributed.sharded_jigsaw = labelled("jigsaw", methods.distributed.sharded_jigsaw)
    config = load_preset("cpu")["data"]
    request = DataRequest(image_size=config["image_size"], synthetic_sizes=tuple(config["synthetic_sizes"]))
    images = load_dataset("synthetic", request).train.images
    for name in args.methods:
        text = profile_method(name, args.batches, images)
        (HERE / f"{name}.txt").write_text(text)
        print(text.split("\n\ntop ops")[0], flush=True)


if __name__ == "__main__":
    main()
