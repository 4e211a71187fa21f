"""Barlow Twins (Zbontar et al. 2021): drive the cross-correlation of two views' embeddings to I."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from methods.backbones import Backbone
from methods.base import SSLBatch, SSLMethod, StepLoss
from methods.heads import mlp
from methods.losses import BARLOW_VARIANTS, barlow_twins


@dataclass(frozen=True)
class BarlowConfig:
    lambd: float = 5e-3
    proj_dims: tuple[int, ...] = (8192, 8192, 8192)
    bt_variant: str = "standard"

    def __post_init__(self) -> None:
        if self.bt_variant not in BARLOW_VARIANTS:
            raise ValueError(f"unknown bt_variant {self.bt_variant!r}; valid: {', '.join(BARLOW_VARIANTS)}")


class BarlowTwins(SSLMethod):
    name = "barlow"
    view_recipe = "barlow"
    config_class = BarlowConfig

    def __init__(self, backbone: Backbone, config: BarlowConfig) -> None:
        super().__init__(backbone, config)
        self.projector = mlp(backbone.out_dim, config.proj_dims)

    @property
    def step_names(self) -> tuple[str, ...]:
        return ("loss",)

    def training_steps(self, batch: SSLBatch) -> Iterator[StepLoss]:
        z1 = self.projector(self.backbone(batch.view1))
        z2 = self.projector(self.backbone(batch.view2))
        yield StepLoss("loss", barlow_twins(z1, z2, self.config.lambd, self.config.bt_variant))
