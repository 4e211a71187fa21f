"""SimCLR (Chen et al. 2020): contrast each view against the other view and all other images."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from methods.backbones import Backbone
from methods.base import SymmetricMethod, ViewRecipe
from methods.heads import check_widths, mlp
from methods.losses import nt_xent

_VIEW = (
    ("crop", {"scale_min": 0.2}),
    ("geometry", {}),
    ("hflip", {"p": 0.5}),
    ("color_jitter", {"amplitudes": (0.4, 0.4, 0.4, 0.1), "p": 0.8}),
    ("grayscale", {"p": 0.2}),
    ("blur", {"p": 0.5}),
)
VIEWS: ViewRecipe = (_VIEW, _VIEW)


@dataclass(frozen=True)
class SimCLRConfig:
    temperature: float = 0.5
    proj_hidden_dim: int = 2048
    proj_dim: int = 128

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"simclr temperature must be > 0, got {self.temperature}")
        check_widths("simclr", proj_hidden_dim=self.proj_hidden_dim, proj_dim=self.proj_dim)


class SimCLR(SymmetricMethod):
    name = "simclr"
    display_name = "SimCLR"
    report_order = 10
    view_recipe = VIEWS
    config_class = SimCLRConfig
    search_space = {"temperature": ("float", 0.05, 1.0, True)}

    def __init__(self, backbone: Backbone, config: SimCLRConfig) -> None:
        super().__init__(backbone, config)
        self.projector = mlp(backbone.out_dim, (config.proj_hidden_dim, config.proj_dim))

    def pair_loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return nt_xent(z1, z2, self.config.temperature)
