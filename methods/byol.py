"""BYOL (Grill et al. 2020): an online network predicts a slowly moving target network's projection."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from methods import distributed
from methods.backbones import Backbone
from methods.base import ParamGroup, SSLBatch, SSLMethod, StepLoss, ViewRecipe
from methods.heads import check_widths, mlp
from methods.losses import byol

_COMMON = (
    ("crop", {"scale_min": 0.08}),
    ("geometry", {}),
    ("hflip", {"p": 0.5}),
    ("color_jitter", {"amplitudes": (0.4, 0.4, 0.2, 0.1), "p": 0.8}),
    ("grayscale", {"p": 0.2}),
)
# BYOL's asymmetric pair (Grill et al. 2020, table 6), which Barlow Twins uses too.
VIEWS: ViewRecipe = (
    (*_COMMON, ("blur", {"p": 1.0}), ("solarize", {"p": 0.0})),
    (*_COMMON, ("blur", {"p": 0.1}), ("solarize", {"p": 0.2})),
)


@dataclass(frozen=True)
class BYOLConfig:
    tau_base: float = 0.996
    proj_hidden_dim: int = 4096
    proj_dim: int = 256

    def __post_init__(self) -> None:
        if not 0 <= self.tau_base <= 1:
            raise ValueError(f"byol tau_base must be in [0, 1], got {self.tau_base}")
        check_widths("byol", proj_hidden_dim=self.proj_hidden_dim, proj_dim=self.proj_dim)


def ema_tau(tau_base: float, progress: float) -> float:
    """Cosine schedule from ``tau_base`` at the start of training to 1 at the end."""
    return 1 - (1 - tau_base) * (math.cos(math.pi * progress) + 1) / 2


class BYOL(SSLMethod):
    name = "byol"
    display_name = "BYOL"
    report_order = 20
    view_recipe = VIEWS
    config_class = BYOLConfig
    search_space = {"tau_base": ("float", 0.9, 0.999, False)}

    def __init__(self, backbone: Backbone, config: BYOLConfig) -> None:
        super().__init__(backbone, config)
        self.projector = mlp(backbone.out_dim, (config.proj_hidden_dim, config.proj_dim))
        self.predictor = mlp(config.proj_dim, (config.proj_hidden_dim, config.proj_dim))
        self.target_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.tau = config.tau_base

    @property
    def step_names(self) -> tuple[str, ...]:
        return ("loss",)

    def param_groups(self) -> list[ParamGroup]:
        online = [*self.backbone.parameters(), *self.projector.parameters(), *self.predictor.parameters()]
        return [ParamGroup(online)]

    def training_steps(self, batch: SSLBatch) -> Iterator[StepLoss]:
        z1 = self.projector(self.backbone(batch.view1))
        p1 = self.predictor(z1)
        p2 = self.predictor(self.projector(self.backbone(batch.view2)))
        with torch.no_grad():
            t1 = self.target_projector(self.target_backbone(batch.view1))
            t2 = self.target_projector(self.target_backbone(batch.view2))
        # The loss is a per-sample mean, so gathering changes no gradient; it makes the loss the global
        # batch's, identical on every rank, like every other method's.
        p1, p2, t1, t2 = (distributed.gather(t) for t in (p1, p2, t1, t2))
        yield StepLoss("loss", byol(p1, t2) + byol(p2, t1), z1.detach())

    @torch.no_grad()
    def after_optimizer_step(self, progress: float) -> None:
        self.tau = ema_tau(self.config.tau_base, progress)
        pairs = (
            (self.backbone, self.target_backbone),
            (self.projector, self.target_projector),
        )
        for online, target in pairs:
            for target_param, online_param in zip(target.parameters(), online.parameters(), strict=True):
                target_param.lerp_(online_param, 1 - self.tau)
