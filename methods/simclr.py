"""SimCLR (Chen et al. 2020): contrast each view against the other view and all other images."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from methods.backbones import Backbone
from methods.base import SymmetricMethod
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


class SimCLR(SymmetricMethod):
    name = "simclr"
    view_recipe = "simclr"
    config_class = SimCLRConfig

    def __init__(self, backbone: Backbone, config: SimCLRConfig) -> None:
        super().__init__(backbone, config)
        self.projector = mlp(backbone.out_dim, (config.proj_hidden_dim, config.proj_dim))

    def pair_loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return nt_xent(z1, z2, self.config.temperature)
