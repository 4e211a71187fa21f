"""The contract between a method and the trainer: the trainer knows nothing method-specific.

A method turns one batch of two augmented views into a sequence of losses; the trainer
backpropagates and steps the optimizer after each one, so step k+1 sees the weights step k
updated. That is what makes FG-SSL's progressive schedule expressible next to one-step methods.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from methods import distributed
from methods.backbones import Backbone


@dataclass(frozen=True)
class SSLBatch:
    """Two augmented views of the same images, plus the generator for any randomness a method
    draws itself (FG-SSL's jigsaw), so a seeded run repeats exactly."""

    view1: torch.Tensor
    view2: torch.Tensor
    generator: torch.Generator | None = None


@dataclass(frozen=True)
class StepLoss:
    """One optimizer step's loss. ``name`` keys the per-step metric (e.g. ``level1``); ``embedding``
    (detached, this process's rows) is what the loss compared, watched by the trainer for collapse."""

    name: str
    loss: torch.Tensor
    embedding: torch.Tensor | None = None


@dataclass(frozen=True)
class ParamGroup:
    """Parameters that share a learning-rate multiplier (FG-SSL trains its backbone 10x slower)."""

    params: list[nn.Parameter]
    lr_scale: float = 1.0


class SSLMethod(nn.Module, ABC):
    """Base class of every SSL method: a backbone plus whatever heads the method trains.

    Under torch.distributed each rank holds a slice of the global batch, and every loss a method
    yields is the loss of the *global* batch (embeddings gathered with ``distributed.gather``), the
    same value on every rank, so logging and NaN checks agree across ranks without a reduction.
    """

    name: ClassVar[str]
    view_recipe: ClassVar[str]
    config_class: ClassVar[type]
    # Whether every step's loss depends on every trainable parameter. DistributedDataParallel must be
    # told (find_unused_parameters=True) when it does not, e.g. FG-SSL's per-level steps.
    steps_use_every_parameter: ClassVar[bool] = True

    def __init__(self, backbone: Backbone, config: Any) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = config

    @abstractmethod
    def training_steps(self, batch: SSLBatch) -> Iterator[StepLoss]:
        """Yield one loss per optimizer step for this batch."""

    def forward(self, steps: Iterator[StepLoss]) -> StepLoss:
        """Compute the next step of a ``training_steps`` iterator.

        Only so that a DistributedDataParallel wrapper can run each step inside its ``forward``
        (see ``run_training_steps``); a single-process trainer may iterate ``training_steps`` directly.
        """
        step = next(steps, None)
        if step is None:
            raise RuntimeError(f"{type(self).__name__}.training_steps yielded fewer steps than step_names")
        return step

    @property
    @abstractmethod
    def step_names(self) -> tuple[str, ...]:
        """Names of the losses ``training_steps`` yields, in order (for logging)."""

    def after_optimizer_step(self, progress: float) -> None:
        """Called after every optimizer step with training progress in [0, 1] (BYOL's EMA)."""

    def param_groups(self) -> list[ParamGroup]:
        """Trainable parameters grouped by learning-rate multiplier; default: one group."""
        return [ParamGroup([p for p in self.parameters() if p.requires_grad])]

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen representation for evaluation: the backbone's pooled features, for every method,
        so kNN and linear-probe numbers compare like with like."""
        return self.backbone(x)


class SymmetricMethod(SSLMethod):
    """A method that projects both views with the same network and takes one loss between them
    (SimCLR, Barlow Twins): subclasses build ``self.projector`` and define ``pair_loss``."""

    projector: nn.Module

    @property
    def step_names(self) -> tuple[str, ...]:
        return ("loss",)

    @abstractmethod
    def pair_loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """The objective between the two views' projections, given the global batch of each."""

    def training_steps(self, batch: SSLBatch) -> Iterator[StepLoss]:
        z1 = self.projector(self.backbone(batch.view1))
        z2 = self.projector(self.backbone(batch.view2))
        yield StepLoss("loss", self.pair_loss(distributed.gather(z1), distributed.gather(z2)), z1.detach())


def unwrap(model: nn.Module) -> SSLMethod:
    """The method inside a ``DistributedDataParallel`` wrapper (or the method itself)."""
    method = model.module if isinstance(model, DistributedDataParallel) else model
    if not isinstance(method, SSLMethod):
        raise TypeError(f"expected an SSLMethod or a DistributedDataParallel around one, got {type(method).__name__}")
    return method


def run_training_steps(model: nn.Module, batch: SSLBatch) -> Iterator[StepLoss]:
    """The method's ``training_steps``, each step computed inside a call of ``model``.

    DistributedDataParallel averages gradients only for work done inside its ``forward``: that is
    where it arms its backward hooks and, with ``find_unused_parameters``, finds the parameters a step
    used. A method computes its steps lazily, one per ``next``, so calling the wrapper with the
    iterator (``SSLMethod.forward``) computes exactly one step under DDP's bookkeeping. Given the bare
    method (one process) it yields the same steps, computed the same way.
    """
    method = unwrap(model)
    steps = method.training_steps(batch)
    for _ in method.step_names:
        yield model(steps)


def build_config(config_class: type, options: Mapping[str, Any], method: str) -> Any:
    """Make a method's typed config from loose options, naming any unknown key and the valid ones."""
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for method {method!r}; valid: {', '.join(fields)}")
    coerced = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    return config_class(**coerced)
