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
from typing import Any, ClassVar, TypeAlias

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from methods import distributed
from methods.backbones import Backbone

# A view recipe is data that datasets/augment.py interprets, so methods/ never imports datasets/: two
# views, each a sequence of (op, parameters) pairs in the order they apply. The ops and parameters:
#   ("crop", {"scale_min": s})                  random resized crop to scale (s, 1); views.crop_scale_min overrides s
#   ("geometry", {})                            where views.rotate asks for it: rotation by any angle, vertical flip
#   ("hflip", {"p": p})                         horizontal flip
#   ("color_jitter", {"amplitudes": (b, c, s, h), "p": p, "optional": bool})
#                                               scaled by views.color_jitter; "optional": only when that is set
#   ("grayscale", {"p": p}), ("blur", {"p": p}), ("solarize", {"p": p})
ViewOp: TypeAlias = tuple[str, Mapping[str, Any]]
ViewRecipe: TypeAlias = tuple[tuple[ViewOp, ...], tuple[ViewOp, ...]]
# A tuning search space is data too (no optuna import here): option -> ("float", low, high, log) or
# ("categorical", (choices...)); bench/tune.py turns each entry into a trial.suggest_* call.
SearchSpace: TypeAlias = Mapping[str, tuple[Any, ...]]


@dataclass(frozen=True)
class FinetuneDefaults:
    """What ``eval.finetune_mode: auto`` means for a method: PMG's progressive fine-tune for methods with a
    hierarchy (its jigsaw ``grids``), else plain cross-entropy (``grids`` None: the dataset's paper grids)."""

    mode: str = "plain"
    grids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class SSLBatch:
    """Two augmented views of the same images, plus the generator for any randomness a method
    draws itself (FG-SSL's jigsaw), so a seeded run repeats exactly, and ``prepared``: what the
    method's ``prepare`` drew and computed from that generator ahead of its steps (keys prefixed with
    the method's name)."""

    view1: torch.Tensor
    view2: torch.Tensor
    generator: torch.Generator | None = None
    prepared: Mapping[str, Any] = dataclasses.field(default_factory=dict)


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
    display_name: ClassVar[str]  # how reports show the method (logged as a run tag; reports read only MLflow)
    report_order: ClassVar[int]  # its place in report tables and plots, also logged as a tag
    # The method the reports test every other method against (paired tests, the batch-size claim).
    report_baseline: ClassVar[bool] = False
    view_recipe: ClassVar[ViewRecipe]
    config_class: ClassVar[type]
    search_space: ClassVar[SearchSpace] = {}
    # Options whose default comes from the dataset: option -> name of a fact bench passes in
    # (``dataset_facts``: ``paper_grids``, ``image_size``), e.g. FG-SSL's jigsaw grids.
    dataset_defaults: ClassVar[Mapping[str, str]] = {}
    # A composite method (``barlow+fgssl``) keeps each part's options under the part's name; bench reads
    # this to type-check each part's options against that part's config. Empty for a single method.
    parts: ClassVar[Mapping[str, type[SSLMethod]]] = {}
    # Named ablations: name -> variant -> the options in which the variant differs from the method.
    ablations: ClassVar[Mapping[str, Mapping[str, Mapping[str, Any]]]] = {}
    # Whether every step's loss depends on every trainable parameter. DistributedDataParallel must be
    # told (find_unused_parameters=True) when it does not, e.g. FG-SSL's per-level steps.
    steps_use_every_parameter: ClassVar[bool] = True

    def __init__(self, backbone: Backbone, config: Any) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = config

    @classmethod
    def resolve_options(cls, options: Mapping[str, Any], dataset_facts: Mapping[str, Any]) -> dict[str, Any]:
        """The method's full options (defaults filled in, dataset defaults from ``dataset_facts``), as plain
        data for the run's params and identity; raises ValueError naming what is wrong."""
        filled = {key: dataset_facts[fact] for key, fact in cls.dataset_defaults.items() if key not in options}
        config = build_config(cls.config_class, {**options, **filled}, cls.name)
        cls.check_against_image(config, dataset_facts.get("image_size"))
        return dataclasses.asdict(config)

    @classmethod
    def check_against_image(cls, config: Any, image_size: int | None) -> None:
        """Checks that need the image size (jigsaw grids); raises ValueError. Default: none."""

    @classmethod
    def ablation_variants(cls, name: str, image_size: int) -> dict[str, dict[str, Any]]:
        """The variants of one of the method's ablations that apply at ``image_size``."""
        return {variant: dict(options) for variant, options in cls.ablations[name].items()}

    @classmethod
    def finetune_defaults(cls, options: Mapping[str, Any]) -> FinetuneDefaults:
        """What ``finetune_mode: auto`` resolves to, given the resolved options."""
        return FinetuneDefaults()

    def pretrained_hierarchy(self) -> Any:
        """The method's ``methods.hierarchy.Hierarchy``, which a progressive fine-tune starts from, or None."""
        return None

    def prepare(self, batch: SSLBatch) -> SSLBatch:
        """``batch`` with everything random that ``training_steps`` needs drawn now from
        ``batch.generator``, in the order the steps would draw it, in ``batch.prepared``.

        The trainer calls this right after making the batch's views, possibly in a background thread
        while the previous batch trains, and then hands ``training_steps`` the prepared batch with a
        generator it must not draw from (it checks): drawing there would put the draws after the next
        batch's views and change a seeded run. No gradients flow through what is prepared here.
        Default: nothing to prepare (the method draws nothing itself).
        """
        return batch

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
    if not isinstance(options, Mapping):
        raise ValueError(f"options of method {method!r} must be a mapping of option names, got {options!r}")
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for method {method!r}; valid: {', '.join(fields)}")
    coerced = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    return config_class(**coerced)
