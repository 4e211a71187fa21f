"""Estimated GPU-hours of ``bench reproduce --scale paper`` per dataset, from rates measured on this GPU.

Per method and seed: the paper preset's SSL epochs over the training split at the method's measured
training rate; its fine-tune epochs, each a pass over train (one optimizer step per batch for a plain
fine-tune, one per level plus the concatenation for the progressive one, each costed as a full bare
step: an upper bound) and a forward pass over validation; one forward pass over every split for the
frozen-feature probes. Augmentation runs beside training on the device and is not added (the
benchmark checks it is at least 3x faster than training).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import yaml
from gpu_rates import Scale, build, eval_forward, median_seconds, prepared_views, run_config, supervised_steps
from gpu_rates import trainer_epoch as training

from bench.references import REFERENCES
from bench.reproduce import SCALES_FILE
from bench.sweep import expand_methods

# (train, val, test) images per dataset as the harness splits them.
DATASET_IMAGES: dict[str, tuple[int, int, int]] = {
    "isic2017": (2000, 150, 600),  # the official Part 3 splits
    "isic2018": (10015, 193, 1512),  # the official Task 3 training, validation and test sets
    "aptos2019": (2563, 549, 550),  # the 3662 images of train.csv, split 70/15/15
}
# What `bench reproduce --scale paper` pretrains and over how many seeds, read from its own sweep file
# (its references, such as random_init, pretrain nothing and their fine-tune is not costed here).
_PAPER_SCALE = yaml.safe_load(SCALES_FILE.read_text())["scales"]["paper"]
REPRODUCE_METHODS: tuple[str, ...] = tuple(m for m in expand_methods(_PAPER_SCALE["methods"]) if m not in REFERENCES)
SEEDS = len(_PAPER_SCALE["seeds"])


@dataclass(frozen=True)
class Rates:
    """Images per second on one device: SSL training per method, a bare fine-tune step, eval forward."""

    ssl: Mapping[str, float]
    finetune_step: float
    eval_forward: float


@dataclass(frozen=True)
class Protocol:
    ssl_epochs: int
    finetune_epochs: int
    finetune_steps: Mapping[str, int]  # optimizer steps per fine-tune batch, per method
    seeds: int = SEEDS

    @classmethod
    def paper(cls, methods: Sequence[str], seeds: int = SEEDS) -> Protocol:
        """The paper preset's epochs, and each method's fine-tune as `bench reproduce` runs it (its sweep file's
        evaluation section: the progressive fine-tune for every method)."""
        evaluation = yaml.safe_load(SCALES_FILE.read_text())["protocol"]["eval"]
        configs = {m: run_config(m, Scale.paper(), **evaluation) for m in methods}
        first = next(iter(configs.values()))
        steps = {
            m: len(c.eval.finetune_grids) + 1 if c.eval.finetune_mode == "progressive" else 1
            for m, c in configs.items()
        }
        return cls(first.train.epochs, first.eval.finetune_epochs, steps, seeds)


def run_hours(method: str, images: tuple[int, int, int], rates: Rates, protocol: Protocol) -> tuple[float, float]:
    """(SSL, fine-tune and evaluation) GPU-hours of one run."""
    train, val, test = images
    ssl = protocol.ssl_epochs * train / rates.ssl[method]
    per_epoch = train * protocol.finetune_steps[method] / rates.finetune_step + val / rates.eval_forward
    rest = protocol.finetune_epochs * per_epoch + (train + val + test) / rates.eval_forward
    return ssl / 3600, rest / 3600


def dataset_hours(dataset: str, rates: Rates, protocol: Protocol) -> tuple[float, float]:
    """(SSL, fine-tune and evaluation) GPU-hours of every method and seed on ``dataset``."""
    runs = [run_hours(m, DATASET_IMAGES[dataset], rates, protocol) for m in protocol.finetune_steps]
    return protocol.seeds * sum(r[0] for r in runs), protocol.seeds * sum(r[1] for r in runs)


def plan_text(rates: Rates, protocol: Protocol, device_name: str) -> str:
    methods = list(protocol.finetune_steps)
    lines = [
        f"Estimated GPU-hours of `bench reproduce DATASET --scale paper` on {device_name}: {len(methods)} methods "
        f"x {protocol.seeds} seeds, {protocol.ssl_epochs} SSL epochs, {protocol.finetune_epochs} fine-tune epochs",
        "| dataset | train/val/test images | SSL h | fine-tune + eval h | total h |",
        "|---|---|---|---|---|",
    ]
    for dataset, images in DATASET_IMAGES.items():
        ssl, rest = dataset_hours(dataset, rates, protocol)
        lines.append(f"| {dataset} | {'/'.join(map(str, images))} | {ssl:.1f} | {rest:.1f} | {ssl + rest:.1f} |")
    measured = ", ".join(f"{m} {rates.ssl[m]:.0f}" for m in methods)
    lines.append(
        f"from images/s measured here: SSL training {measured}; bare fine-tune step {rates.finetune_step:.0f}; "
        f"eval forward {rates.eval_forward:.0f}"
    )
    return "\n".join(lines)


def measure(
    scale: Scale,
    device: torch.device,
    methods: Sequence[str],
    known: Mapping[str, float] | None = None,
    finetune_seconds: float | None = None,
    rounds: int = 3,
    warmup: int = 1,
) -> Rates:
    """The rates a plan needs, measuring what the benchmark's tests did not already (``known`` SSL rates,
    the fine-tune step's seconds per call); each a median of ``rounds`` calls after ``warmup``."""
    ssl = dict(known or {})
    for method in methods:
        if method not in ssl:
            model, optim = build(method, scale, device)
            run = training(model, prepared_views(model, scale, device), optim, scale, device)
            ssl[method] = scale.images_per_call / median_seconds(run, device, rounds, warmup)
            del model, run
    finetune_seconds = finetune_seconds or median_seconds(supervised_steps(scale, device), device, rounds, warmup)
    forward = scale.eval_batch * scale.steps / median_seconds(eval_forward(scale, device), device, rounds, warmup)
    return Rates({m: ssl[m] for m in methods}, scale.finetune_batch * scale.steps / finetune_seconds, forward)
