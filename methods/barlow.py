"""Barlow Twins (Zbontar et al. 2021): drive the cross-correlation of two views' embeddings to I."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from methods.backbones import Backbone
from methods.base import SymmetricMethod
from methods.byol import VIEWS
from methods.heads import check_widths, mlp
from methods.losses import BARLOW_VARIANTS, barlow_twins


@dataclass(frozen=True)
class BarlowConfig:
    lambd: float = 5e-3
    proj_dims: tuple[int, ...] = (8192, 8192, 8192)
    bt_variant: str = "standard"

    def __post_init__(self) -> None:
        if self.lambd < 0:
            raise ValueError(f"barlow lambd must be >= 0, got {self.lambd}")
        if not self.proj_dims:
            raise ValueError("barlow proj_dims must list at least one layer width")
        check_widths("barlow", **{f"proj_dims[{i}]": width for i, width in enumerate(self.proj_dims)})
        if self.bt_variant not in BARLOW_VARIANTS:
            raise ValueError(f"unknown bt_variant {self.bt_variant!r}; valid: {', '.join(BARLOW_VARIANTS)}")


class BarlowTwins(SymmetricMethod):
    name = "barlow"
    display_name = "Barlow Twins"
    report_order = 30
    view_recipe = VIEWS
    config_class = BarlowConfig
    search_space = {"lambd": ("float", 1e-3, 3e-2, True)}

    def __init__(self, backbone: Backbone, config: BarlowConfig) -> None:
        super().__init__(backbone, config)
        self.projector = mlp(backbone.out_dim, config.proj_dims)

    def pair_loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return barlow_twins(z1, z2, self.config.lambd, self.config.bt_variant)
