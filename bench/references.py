"""The reference arms a method is judged against, as small builders rather than branches in the run:
``random_init`` (the backbone as initialised: untrained, or the ``--weights`` file as it is) and
``supervised`` (cross-entropy on the train labels for the run's epochs, optimizer and batch size).

They are not SSL methods: they take no method options and log no SSL losses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from bench.devices import place
from bench.finetune import ClassifierTrainer, PlainClassifier
from bench.schema import RunConfig
from bench.trainer import EpochLoop
from datasets import Dataset
from datasets.augment import build_finetune_transform
from methods.backbones import Backbone


@dataclass
class Prepared:
    """What a run trains and evaluates: ``model`` (saved as model.pt), ``embed`` (frozen features for kNN
    and the linear probe), ``pretrained`` (what a fine-tune starts from) and its ``trainer`` (None: no
    training)."""

    model: nn.Module
    embed: Callable[[torch.Tensor], torch.Tensor]
    pretrained: nn.Module
    trainer: EpochLoop | None


@dataclass(frozen=True)
class Reference:
    name: str
    display_name: str
    trains: bool  # whether the run has a training loop (and so a batch size that must fit the data)
    build: Callable[[RunConfig, Dataset, Backbone, torch.device, bool], Prepared]


def _untrained(
    config: RunConfig, dataset: Dataset, backbone: Backbone, device: torch.device, progress: bool
) -> Prepared:
    return Prepared(place(backbone, device), backbone, backbone, None)


def _supervised(
    config: RunConfig, dataset: Dataset, backbone: Backbone, device: torch.device, progress: bool
) -> Prepared:
    classifier = place(PlainClassifier(backbone, dataset.num_classes), device)
    trainer = ClassifierTrainer(
        classifier,
        dataset.train,
        build_finetune_transform(dataset.image_size),
        config.optim,
        epochs=config.train.epochs,
        batch_size=config.train.batch_size,
        seed=config.train.seed,
        device=device,
        progress=progress,
        name="supervised",
    )
    return Prepared(classifier, backbone, backbone, trainer)


REFERENCES: dict[str, Reference] = {
    ref.name: ref
    for ref in (
        Reference("random_init", "random init", trains=False, build=_untrained),
        Reference("supervised", "supervised", trains=True, build=_supervised),
    )
}
