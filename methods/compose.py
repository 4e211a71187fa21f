"""Composite methods ``X+fgssl``: one method's objective plus FG-SSL's progressive steps on one backbone.

The paper compares Rotation, SimSiam and Barlow Twins "with and without" FG-SSL but does not publish
how it combined them (PAPER.md, "The paper's own comparison"). This is the harness's reading: per
batch, X's step, then FG-SSL's steps (levels 1-3, then concat), each its own optimizer step on one
shared backbone, all fed the same two views, X's. Every choice below that the paper leaves open is
named where it is made.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Iterator, Mapping
from typing import Any

from torch import nn

from methods.backbones import Backbone
from methods.base import FinetuneDefaults, ParamGroup, SSLBatch, SSLMethod, StepLoss, build_config

_COMPOSITES: dict[tuple[type[SSLMethod], type[SSLMethod]], type[SSLMethod]] = {}


def default_step_names(cls: type[SSLMethod]) -> tuple[str, ...]:
    """The steps ``cls`` takes per batch with its default options, known without building its modules
    (a method's step names depend only on its config)."""
    return cls.step_names.fget(types.SimpleNamespace(config=cls.config_class()))


class CompositeMethod(SSLMethod):
    """Two methods (the ``parts``, in order) trained on one shared backbone, each part's steps under its
    own name (``barlow.loss``, ``fgssl.level1``, ...). Options are ``{part name: that part's options}``.

    The parts are built in order on the very same ``Backbone`` object (so a seeded run draws the same
    first-part weights as the first method alone) and held in ``components``, so state_dict, the
    optimizer and DistributedDataParallel see every module; ``parameters()`` lists the shared backbone
    once, and state_dict repeats its tensors under each path, which loads back consistently.
    """

    steps_use_every_parameter = False  # the first part's step never reaches FG-SSL's hierarchy

    def __init__(self, backbone: Backbone, config: Any) -> None:
        super().__init__(backbone, config)
        self.components = nn.ModuleDict(
            {
                name: part(backbone, build_config(part.config_class, getattr(config, name), name))
                for name, part in self.parts.items()
            }
        )
        first = next(iter(self.components.values()))
        if len(first.step_names) != 1:
            raise ValueError(f"{self.name}: the first part must take one step per batch, got {first.step_names}")
        self._last_part: str | None = None  # whose step the trainer has just taken

    @classmethod
    def resolve_options(cls, options: Mapping[str, Any], dataset_facts: Mapping[str, Any]) -> dict[str, Any]:
        """Each part's options resolved by that part (so FG-SSL's grids default from the dataset)."""
        _check_part_names(cls, options)
        return {name: part.resolve_options(options.get(name) or {}, dataset_facts) for name, part in cls.parts.items()}

    @classmethod
    def check_against_image(cls, config: Any, image_size: int | None) -> None:
        for name, part in cls.parts.items():
            part.check_against_image(build_config(part.config_class, getattr(config, name), name), image_size)

    @classmethod
    def finetune_defaults(cls, options: Mapping[str, Any]) -> FinetuneDefaults:
        """The first part's fine-tune that is not plain (FG-SSL's progressive one), else plain."""
        for name, part in cls.parts.items():
            defaults = part.finetune_defaults(options[name])
            if defaults.mode != "plain":
                return defaults
        return FinetuneDefaults()

    def pretrained_hierarchy(self) -> Any:
        hierarchies = (part.pretrained_hierarchy() for part in self.components.values())
        return next((h for h in hierarchies if h is not None), None)

    @property
    def step_names(self) -> tuple[str, ...]:
        return tuple(f"{name}.{step}" for name, part in self.components.items() for step in part.step_names)

    def prepare(self, batch: SSLBatch) -> SSLBatch:
        """Each part's preparation in order (the order their steps draw in); keys carry the part's name."""
        for part in self.components.values():
            batch = part.prepare(batch)
        return batch

    def training_steps(self, batch: SSLBatch) -> Iterator[StepLoss]:
        for name, part in self.components.items():
            for step in part.training_steps(batch):
                self._last_part = name
                yield StepLoss(f"{name}.{step.name}", step.loss, step.embedding)

    def after_optimizer_step(self, progress: float) -> None:
        """Only the part whose step was just taken: BYOL's target follows BYOL's step, once per batch,
        not FG-SSL's steps too."""
        if self._last_part is not None:
            self.components[self._last_part].after_optimizer_step(progress)

    def param_groups(self) -> list[ParamGroup]:
        """Every part's groups in order, each parameter in the first group that lists it.

        So the shared backbone trains at the first part's rate (X's, 1x) in every step, FG-SSL's too:
        an optimizer holds a parameter once, and keeping X's rate means ``X+fgssl`` differs from ``X``
        by FG-SSL's steps alone. FG-SSL's ``backbone_lr_scale`` therefore has no effect in a composite;
        its hierarchy keeps its own rate.
        """
        seen: set[int] = set()
        groups = []
        for part in self.components.values():
            for group in part.param_groups():
                params = [p for p in group.params if id(p) not in seen]
                seen.update(id(p) for p in params)
                if params:
                    groups.append(ParamGroup(params, group.lr_scale))
        return groups


def compose(first: type[SSLMethod], second: type[SSLMethod]) -> type[SSLMethod]:
    """The method ``first.name + "+" + second.name`` (one class per pair, cached).

    Its views are ``first``'s: they feed both parts' steps (FG-SSL's own views have no crop; the paper
    does not say which views its combinations used). ``first`` must take one step per batch.
    """
    if (first, second) in _COMPOSITES:
        return _COMPOSITES[(first, second)]
    name = f"{first.name}+{second.name}"
    if first.parts or second.parts:
        raise ValueError(f"cannot compose {name}: a part is itself a composite")
    if first.name == second.name:
        raise ValueError(f"cannot compose {name}: a method cannot be added to itself")
    steps = default_step_names(first)
    if len(steps) != 1:
        raise ValueError(
            f"cannot compose {name}: the first method must take one step per batch, "
            f"{first.name} takes {len(steps)} ({', '.join(steps)})"
        )
    parts = {first.name: first, second.name: second}
    attributes = {
        "name": name,
        "display_name": f"{first.display_name} + {second.display_name}",
        "report_order": first.report_order + 5,
        "report_baseline": False,
        "view_recipe": first.view_recipe,
        "config_class": _config_class(parts),
        "search_space": {},  # tune the parts alone; a composite's options are nested per part
        "dataset_defaults": {},  # each part fills its own, in resolve_options
        "parts": types.MappingProxyType(parts),
        "__module__": __name__,
    }
    cls = types.new_class(
        f"{first.__name__}Plus{second.__name__}", (CompositeMethod,), exec_body=lambda ns: ns.update(attributes)
    )
    _COMPOSITES[(first, second)] = cls
    return cls


def _config_class(parts: Mapping[str, type[SSLMethod]]) -> type:
    """A frozen dataclass with one field per part holding that part's options, each checked against
    the part's own config when the composite's config is made."""

    def check_parts(config: Any) -> None:
        for part_name, part in parts.items():
            build_config(part.config_class, getattr(config, part_name), part_name)

    fields = [(part, dict[str, Any], dataclasses.field(default_factory=dict)) for part in parts]
    class_name = "".join(p.capitalize() for p in parts) + "Config"
    return dataclasses.make_dataclass(class_name, fields, frozen=True, namespace={"__post_init__": check_parts})


def _check_part_names(cls: type[SSLMethod], options: Mapping[str, Any]) -> None:
    if not isinstance(options, Mapping):
        raise ValueError(f"options of method {cls.name!r} must map part names to options, got {options!r}")
    unknown = sorted(set(options) - set(cls.parts))
    if unknown:
        raise ValueError(f"unknown part(s) {', '.join(unknown)} of method {cls.name!r}; valid: {', '.join(cls.parts)}")
