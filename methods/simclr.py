"""SimCLR (Chen et al. 2020): contrast each view against the other view and all other images."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from methods.backbones import Backbone
from methods.base import SSLBatch, SSLMethod, StepLoss
from methods.heads import mlp
from methods.losses import nt_xent


@dataclass(frozen=True)
class SimCLRConfig:
    temperature: float = 0.5
    proj_hidden_dim: int = 2048
    proj_dim: int = 128

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"simclr temperature must be > 0, got {self.temperature}")


class SimCLR(SSLMethod):
    name = "simclr"
    view_recipe = "simclr"
    config_class = SimCLRConfig

    def __init__(self, backbone: Backbone, config: SimCLRConfig) -> None:
        super().__init__(backbone, config)
        self.projector = mlp(backbone.out_dim, (config.proj_hidden_dim, config.proj_dim))

    @property
    def step_names(self) -> tuple[str, ...]:
        return ("loss",)

    def training_steps(self, batch: SSLBatch) -> Iterator[StepLoss]:
        z1 = self.projector(self.backbone(batch.view1))
        z2 = self.projector(self.backbone(batch.view2))
        yield StepLoss("loss", nt_xent(z1, z2, self.config.temperature))
